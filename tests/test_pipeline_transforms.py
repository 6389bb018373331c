"""Each PTransform and DoFn stage of ``pipeline/`` run through Beam's ``TestPipeline`` + ``assert_that``.

The runner is the in-process ``FnApiRunner`` (plain ``DirectRunner`` would try to download Prism). Every
test builds its inputs in a temporary folder; what the stage produces is checked against values computed
independently (by file content, by ``shard_of``, by the job's own manifest).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.pvalue import AsList, AsSingleton
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to

from chatshards_testing import run_job
from pipeline.engines.beam.commit import CommitManifestFn
from pipeline.engines.beam.dedup import FindDuplicates
from pipeline.engines.beam.fragments import WriteFragmentsFn
from pipeline.engines.beam.rejected import WriteRejectedFn, WriteRejectedFragmentsFn
from pipeline.engines.beam.sink import WriteShardFn
from pipeline.engines.beam.sources import ReadRawRecords
from pipeline.engines.beam.stats import AuditStats, TemplateProbe
from pipeline.io.chunks import FRAGMENTS, REJECTED, SPILL, chunks_by_shard, store_folder
from pipeline.io.spill import read_spilled, spill_batches
from transforms import shard_format as sf
from transforms.formats import FormatOptions
from transforms.reading import RawRecord

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = sf.arrow_schema(padded=False)


def make_pipeline():
    return BeamTestPipeline(runner=FnApiRunner())


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_jsonl(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


# -- ReadRawRecords -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("matched_at_launch", [True, False])
def test_read_raw_records_spills_every_record_once_in_batches(tmp_path, matched_at_launch):
    a = write_jsonl(tmp_path / "a.jsonl", [json.dumps(chat(f"q{i}", f"a{i}")) for i in range(7)])
    b = write_jsonl(tmp_path / "b.jsonl", [json.dumps(chat("x", "y")), "{not json", json.dumps(chat("z", "w"))])
    files = [a, b] if matched_at_launch else None
    with make_pipeline() as p:
        chunks = p | ReadRawRecords(patterns=[str(tmp_path / "*.jsonl")], files=files, batch_size=3,
                                    spill_folder=str(tmp_path / "spill"))
        records = chunks | beam.FlatMap(read_spilled) | beam.Map(
            lambda raw: (os.path.basename(raw.source), raw.index, raw.value is None))
        assert_that(records, equal_to([("a.jsonl", i, False) for i in range(7)]
                                      + [("b.jsonl", 0, False), ("b.jsonl", 1, True), ("b.jsonl", 2, False)]))
        sizes = chunks | beam.Map(lambda chunk: chunk.count)
        assert_that(sizes, equal_to([3, 3, 1, 3]), label="BatchSizes")


# -- FindDuplicates -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_find_duplicates_keeps_the_first_by_sort_key_and_rejects_the_others_with_their_record(tmp_path):
    same, other = chat("same question", "same answer"), chat("other", "answer")
    batches = [[RawRecord("f1.jsonl", 0, same), RawRecord("f1.jsonl", 1, other)],
               [RawRecord("f2.jsonl", 0, same), RawRecord("f2.jsonl", 1, same), RawRecord("f2.jsonl", 2, None,
                                                                                          raw="{", error="bad")]]
    chunks = list(spill_batches(iter(batches), folder=str(tmp_path)))
    group = sorted(((sf.row_sort_key(s, i), s, i) for s, i in [("f1.jsonl", 0), ("f2.jsonl", 0), ("f2.jsonl", 1)]))
    kept, duplicates = group[0], group[1:]
    with make_pipeline() as p:
        found = p | beam.Create(chunks) | FindDuplicates(format_options=FormatOptions())
        assert_that(found["dropped"], equal_to([{key for key, _, _ in duplicates}]), label="Dropped")
        rejected = found["rejected"] | beam.Map(lambda r: (r["reason"], r["source"], r["index"], r["record"] == same,
                                                           r["detail"]))
        assert_that(rejected, equal_to([("duplicate", s, i, True, f"same conversation as {kept[1]} record {kept[2]}")
                                        for _, s, i in duplicates]), label="Rejected")


# -- rows -> fragments -> shards ------------------------------------------------------------------------

def make_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        source = f"s{i % 3}.jsonl"
        ids = [(i * 7 + k) % 500 for k in range(1 + i % 9)]
        row = {"input_ids": ids, "labels": [t if k % 2 else -100 for k, t in enumerate(ids)], "length": len(ids),
               "num_loss_tokens": len(ids) // 2, "truncated": False, "source": source, "index": i,
               "record_id": f"r{i}", "sort_key": sf.row_sort_key(source, i)}
        for field in SCHEMA:  # any further columns: a neutral value of their type
            row.setdefault(field.name, "" if pa.types.is_string(field.type) else
                           False if pa.types.is_boolean(field.type) else 0)
        rows.append(row)
    return rows


def test_rows_reach_their_shard_through_fragments_sorted_by_sort_key(tmp_path):
    rows, num_shards, out = make_rows(300), 3, str(tmp_path / "out")
    with make_pipeline() as p:
        fragments = (p | beam.Create([rows[i:i + 40] for i in range(0, 300, 40)])
                     | beam.ParDo(WriteFragmentsFn(folder=store_folder(out, FRAGMENTS), schema=SCHEMA,
                                                   fragment_bytes=4000)))
        entries = (fragments
                   | beam.FlatMap(lambda ref: chunks_by_shard(ref.chunks, num_shards))
                   | beam.GroupByKey()
                   | beam.ParDo(WriteShardFn(output=out), num_shards=num_shards)
                   | beam.Map(lambda e: (e["path"], e["rows"], e["tokens"])))
        expected: dict[int, list] = {}
        for row in rows:
            expected.setdefault(sf.shard_of(row["sort_key"], num_shards), []).append(row)
        assert_that(entries, equal_to([(sf.shard_relative_path(k, num_shards), len(v), sum(r["length"] for r in v))
                                       for k, v in expected.items()]))
    for shard, members in expected.items():
        table = pa.ipc.open_stream((Path(out) / sf.shard_relative_path(shard, num_shards)).read_bytes()).read_all()
        assert table.schema == SCHEMA
        assert table["index"].to_pylist() == [r["index"] for r in sorted(members, key=lambda r: r["sort_key"])]


# -- rejections -> rejected files ------------------------------------------------------------------------

def test_rejections_are_written_to_their_file_sorted_and_counted_by_reason(tmp_path):
    out, num_files = str(tmp_path / "out"), 2
    items = [{"reason": ("invalid_json", "empty_turn")[i % 2], "detail": f"d{i}", "source": f"f{i % 3}",
              "index": i, "record": {"n": i}} for i in range(50)]
    with make_pipeline() as p:
        parts = [p | f"Stage{k}" >> beam.Create(items[k::2]) for k in range(2)]  # two producing stages
        entries = (tuple(part | f"Fragments{k}" >> beam.ParDo(WriteRejectedFragmentsFn(
                       folder=store_folder(out, REJECTED), fragment_bytes=2000)) for k, part in enumerate(parts))
                   | beam.Flatten()
                   | beam.FlatMap(lambda ref: chunks_by_shard(ref.chunks, num_files))
                   | beam.GroupByKey()
                   | beam.ParDo(WriteRejectedFn(output=out), num_files=num_files)
                   | beam.Map(lambda e: (e["path"], e["rows"], tuple(sorted(e["by_reason"].items())))))
        expected: dict[int, list] = {}
        for item in items:
            expected.setdefault(sf.shard_of(sf.row_sort_key(item["source"], item["index"]), num_files), []).append(item)
        want = []
        for index, members in expected.items():
            reasons: dict[str, int] = {}
            for item in members:
                reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
            want.append((f"rejected/rejected-{index:05d}-of-{num_files:05d}.jsonl", len(members),
                         tuple(sorted(reasons.items()))))
        assert_that(entries, equal_to(want))
    for path, _, _ in want:
        lines = [json.loads(line) for line in (Path(out) / path).read_text(encoding="utf-8").splitlines()]
        keys = [sf.row_sort_key(item["source"], item["index"]) for item in lines]
        assert keys == sorted(keys) and all(item["record"] == {"n": item["index"]} for item in lines)


# -- commit ------------------------------------------------------------------------------------------------

def commit(p, out: str, *, read: int, shards: list, rejected: list, sections: list):
    return (p | "Trigger" >> beam.Create([None])
            | beam.ParDo(CommitManifestFn(output=out, manifest_base={"config": {"x": 1}}, padded=False),
                         shards=AsList(p | "Shards" >> beam.Create(shards)),
                         rejected_files=AsList(p | "RejectedFiles" >> beam.Create(rejected)),
                         read_count=AsSingleton(p | "Read" >> beam.Create([read])),
                         num_shards=AsSingleton(p | "NumShards" >> beam.Create([2])),
                         extra_sections=AsList(p | "Sections" >> beam.Create(sections))))


def test_commit_fills_empty_shards_reconciles_counts_and_writes_the_manifest_last(tmp_path):
    out = str(tmp_path / "out")
    rejected = [{"path": "rejected/rejected-00001-of-00002.jsonl", "rows": 2, "bytes": 10, "sha256": "x",
                 "by_reason": {"invalid_json": 2}}]
    (tmp_path / "out" / "rejected").mkdir(parents=True)
    (tmp_path / "out" / rejected[0]["path"]).write_text("a\nb\n")
    with make_pipeline() as p:
        manifest = commit(p, out, read=2, shards=[], rejected=rejected, sections=[{"audit": {"n": 1}}])
        assert_that(manifest | beam.Map(lambda m: (m["counts"], m["num_shards"], m["rejected_by_reason"],
                                                   [s["rows"] for s in m["shards"]], m["config"], m["audit"])),
                    equal_to([({"read": 2, "written": 0, "rejected": 2, "rows": 0}, 2, {"invalid_json": 2},
                               [0, 0], {"x": 1}, {"n": 1})]))
    written = json.loads((Path(out) / sf.MANIFEST_NAME).read_text(encoding="utf-8"))
    assert [s["path"] for s in written["shards"]] == [sf.shard_relative_path(k, 2) for k in range(2)]
    assert all((Path(out) / s["path"]).is_file() for s in written["shards"])  # empty shards written
    assert not (Path(out) / ".tmp").exists()


def test_commit_refuses_counts_that_do_not_reconcile(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(Exception, match="count mismatch"):
        with make_pipeline() as p:
            commit(p, out, read=3, shards=[], rejected=[], sections=[])
    assert not (Path(out) / sf.MANIFEST_NAME).exists()


# -- the audit branch ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert run_job(["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(out)]) == 0
    return out


@pytest.mark.slow
def test_audit_stats_recomputes_the_jobs_audit_section_from_its_rows_and_rejections(demo, tmp_path):
    manifest = json.loads((demo / "manifest.json").read_text(encoding="utf-8"))
    rows = [row for shard in sorted((demo / "data").glob("*.arrow"))
            for row in pa.ipc.open_stream(shard.read_bytes()).read_all().to_pylist()]
    rejections = [json.loads(line) for path in sorted((demo / "rejected").glob("*.jsonl"))
                  for line in path.read_text(encoding="utf-8").splitlines()]
    probe = TemplateProbe.from_json(manifest["audit"]["template_probe"])
    out = str(tmp_path / "out")
    with make_pipeline() as p:
        row_pc = p | "Rows" >> beam.Create(rows)
        parts = [p | f"Rejected{k}" >> beam.Create(rejections[k::2]) for k in range(2)]
        section = (row_pc, *parts) | AuditStats(output=out, manifest_base=manifest, probe=probe,
                                               format_options=FormatOptions(), tokenizer=None)
        assert_that(section | beam.Map(lambda s: json.loads(json.dumps(s))), equal_to([{"audit": manifest["audit"]}]))
    assert (Path(out) / "audit" / "stats.json").is_file() and (Path(out) / "audit" / "report.html").is_file()


def test_the_chunk_stores_have_one_folder_each_under_tmp():
    assert {store_folder("o", store) for store in (SPILL, FRAGMENTS, REJECTED)} == {
        "o/.tmp/spill", "o/.tmp/fragments", "o/.tmp/rejected"}
    with pytest.raises(ValueError):
        store_folder("o", "elsewhere")


# -- the job plan ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_job_plan_is_decided_at_launch_and_frozen(tmp_path):
    import dataclasses

    from pipeline.launch.checks import plan_job
    from pipeline.launch.cli import parse_args

    base = ["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(tmp_path / "out"), "--num-shards", "2"]
    audited, plain = plan_job(parse_args(base)), plan_job(parse_args([*base, "--no-audit", "--dedup"]))
    assert audited.audit and isinstance(audited.audit_probe, TemplateProbe) and not audited.dedup
    assert not plain.audit and plain.audit_probe is None and plain.dedup
    assert [os.path.basename(f) for f in audited.files] == sorted(os.listdir(ROOT / "examples" / "data"))
    assert audited.num_shards == 2 and audited.output == str(tmp_path / "out")
    assert audited.manifest_base["config_fingerprint"] == audited.config.fingerprint() != plain.config.fingerprint()
    assert {"config", "tokenizer", "template_check", "versions", "chat_template_hash"} <= set(audited.manifest_base)
    with pytest.raises(dataclasses.FrozenInstanceError):
        audited.num_shards = 3


# -- ParseRecords / BuildRows -------------------------------------------------------------------------

def _spec():
    from pipeline.steps.records import BuilderSpec
    from transforms.config import TokenizeOptions
    from transforms.tokenizer_loading import bundled_tokenizer

    return BuilderSpec(tokenizer=None, chat_template=bundled_tokenizer().chat_template, trust_remote_code=False,
                       format_options=FormatOptions(), tokenize_options=TokenizeOptions())


def _raws():
    values = [chat("2+2?", "4"), {"messages": [{"role": "user", "content": "no answer"}]}, chat("hi", "hello")]
    raws = [RawRecord(source="a.jsonl", index=i, value=v) for i, v in enumerate(values)]
    return raws + [RawRecord(source="a.jsonl", index=3, value=None, raw="{not json", error="Expecting value")]


@pytest.mark.slow
def test_parse_records_fn_splits_parsed_batches_from_rejections():
    from pipeline.engines.beam.build import REJECTED_TAG, ParseRecordsFn
    from transforms.rows.parse import parse_records

    raws = _raws()
    expected = parse_records(raws, FormatOptions())  # the pure function the stage wraps
    want_parsed = [item[0].index for kind, item in expected if kind == "parsed"]
    want_rejected = [(item["index"], item["reason"]) for kind, item in expected if kind != "parsed"]
    assert want_parsed and want_rejected
    with make_pipeline() as p:
        out = (p | beam.Create([raws]) | "ParseRecords" >> beam.ParDo(ParseRecordsFn(_spec()))
               .with_outputs(REJECTED_TAG, main="parsed"))
        indices = out.parsed | beam.FlatMap(lambda batch: [raw.index for raw, _ in batch])
        reasons = out[REJECTED_TAG] | beam.Map(lambda r: (r["index"], r["reason"]))
        assert_that(indices, equal_to(want_parsed), label="parsed")
        assert_that(reasons, equal_to(want_rejected), label="rejected")


@pytest.mark.slow
def test_build_rows_fn_gives_the_pure_functions_rows_and_rejections():
    from pipeline.engines.beam.build import REJECTED_TAG, BuildRowsFn
    from transforms.rows.parse import parse_records

    spec = _spec()
    parsed = [item for kind, item in parse_records(_raws(), FormatOptions()) if kind == "parsed"]
    expected = spec.create_builder().build_rows(parsed)  # the pure function the stage wraps
    want_rows = [(row["index"], row["input_ids"].tolist(), row["labels"].tolist())
                 for kind, row in expected if kind == "row"]
    assert len(want_rows) == 2 and all(-100 in labels and set(labels) != {-100} for _, _, labels in want_rows)
    with make_pipeline() as p:
        out = (p | beam.Create([parsed]) | "BuildRows" >> beam.ParDo(BuildRowsFn(spec))
               .with_outputs(REJECTED_TAG, main="rows"))
        rows = out.rows | beam.FlatMap(lambda batch: [(r["index"], r["input_ids"].tolist(), r["labels"].tolist())
                                                      for r in batch])
        assert_that(rows, equal_to(want_rows), label="rows")
        assert_that(out[REJECTED_TAG], equal_to([]), label="rejected")
