"""The keyed-chunk store (``pipeline.io.chunks``) and its users: spilled record batches, row fragments and
rejected fragments (``pipeline.io.spill``, ``pipeline.steps.fragments``, ``pipeline.steps.rejected``), called
directly, without a runner."""
from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest

from pipeline.engines.beam.fragments import WriteFragmentsFn
from pipeline.io.chunks import CHUNK_SUFFIX, SPILL, ChunkWriter, chunks_by_shard, read_chunk, read_chunks
from pipeline.io.spill import read_spilled, spill_batches
from pipeline.steps.fragments import SORT_KEY, payload_schema, read_shard_rows, write_fragment
from pipeline.steps.shards import merge_fragments
from transforms import shard_format as sf
from transforms.reading import RawRecord


def raw_batches(n_records: int, batch_size: int) -> list[list[RawRecord]]:
    records = [RawRecord(source="f.jsonl", index=i, value={"messages": [{"role": "user", "content": "x" * (i % 97)}]})
               for i in range(n_records)]
    records.append(RawRecord(source="f.jsonl", index=n_records, value=None, raw="{oops", error="bad json"))
    return [records[i:i + batch_size] for i in range(0, len(records), batch_size)]


def test_spilled_batches_read_back_identical_and_chunks_are_closed_before_their_refs(tmp_path):
    batches = raw_batches(500, 32)
    seen = []
    for ref in spill_batches(iter(batches), folder=str(tmp_path), chunk_bytes=4096):
        # each ref is usable the moment it is emitted: its chunk file is complete
        seen.append(read_spilled(ref))
        assert ref.count == len(seen[-1])
    assert seen == batches
    chunks = sorted(os.listdir(tmp_path))
    assert len(chunks) > 3, "chunk_bytes should have split the spill into several files"
    assert all(name.startswith(f"{SPILL}-") and name.endswith(CHUNK_SUFFIX) for name in chunks)


def test_one_chunk_when_the_batches_are_small(tmp_path):
    refs = list(spill_batches(iter(raw_batches(50, 10)), folder=str(tmp_path)))
    assert len({ref.path for ref in refs}) == 1 and [ref.offset for ref in refs] == sorted(ref.offset for ref in refs)


def test_a_truncated_chunk_is_an_error_not_a_short_batch(tmp_path):
    ref = list(spill_batches(iter(raw_batches(40, 40)), folder=str(tmp_path)))[0]
    with open(ref.path, "r+b") as handle:
        handle.truncate(ref.length // 2)
    with pytest.raises(IOError, match="truncated"):
        read_spilled(ref)


def test_shard_of_splits_the_key_range_into_contiguous_ranges():
    keys = sorted(sf.row_sort_key("s", i) for i in range(3000))
    for n in (1, 2, 3, 7, 64):
        shards = [sf.shard_of(key, n) for key in keys]
        assert shards == sorted(shards) and set(shards) == set(range(n))  # monotone, every shard used
        mean = 3000 / n
        assert all(abs(shards.count(s) - mean) < 5 * mean ** 0.5 for s in range(n))  # a uniform hash: balanced


SCHEMA = sf.arrow_schema(padded=False)


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        length = rng.randint(1, 40)
        ids = [rng.randrange(1000) for _ in range(length)]
        row = {"input_ids": ids, "labels": [t if rng.random() < 0.5 else -100 for t in ids], "length": length,
                "num_loss_tokens": 0, "truncated": False, "source": f"s{i % 3}", "index": i,
                "record_id": f"r{i}", "sort_key": sf.row_sort_key(f"s{i % 3}", i)}
        for field in SCHEMA:  # any further columns: a neutral value of their type
            row.setdefault(field.name, "" if pa.types.is_string(field.type) else
                           False if pa.types.is_boolean(field.type) else 0)
        rows.append(row)
    return rows


def shard_tables(refs, num_shards: int) -> dict[int, pa.Table]:
    grouped: dict[int, list] = {}
    for ref in refs:
        for shard, chunk in chunks_by_shard(ref.chunks, num_shards):
            grouped.setdefault(shard, []).append(chunk)
    return {shard: merge_fragments(items, SCHEMA, shard=shard, num_shards=num_shards)
            for shard, items in grouped.items()}


@pytest.mark.parametrize("num_shards", [1, 3, 8])
def test_shards_do_not_depend_on_how_rows_were_fragmented(tmp_path, num_shards):
    rows = make_rows(2500)
    table = sf.table_from_rows(rows, payload_schema(SCHEMA))
    one = [write_fragment(table, folder=str(tmp_path / "one"), batch_rows=100)]
    cuts = [0, 7, 900, 901, 2500]
    many = [write_fragment(table.slice(a, b - a), folder=str(tmp_path / "many"), batch_rows=64)
            for a, b in zip(cuts, cuts[1:])]
    by_one, by_many = shard_tables(one, num_shards), shard_tables(many, num_shards)
    assert by_one.keys() == by_many.keys()
    for shard in by_one:
        assert by_one[shard].equals(by_many[shard])
        assert by_one[shard].schema == SCHEMA  # sort_key dropped
    # every row in exactly one shard: the one shard_of names, sorted by sort key within it
    expected: dict[int, list] = {}
    for row in sorted(rows, key=lambda row: row["sort_key"]):
        expected.setdefault(sf.shard_of(row["sort_key"], num_shards), []).append(row["index"])
    got = {shard: t["index"].to_pylist() for shard, t in by_one.items() if t.num_rows}
    assert got == expected


def test_a_shard_reads_only_its_rows_from_a_batch_that_straddles_two_shards(tmp_path):
    rows = make_rows(300, seed=1)
    ref = write_fragment(sf.table_from_rows(rows, payload_schema(SCHEMA)), folder=str(tmp_path), batch_rows=300)
    assert [shard for shard, _ in chunks_by_shard(ref.chunks, 2)] == [0, 1]  # one chunk, both shards
    [left] = read_shard_rows(ref.chunks, shard=0, num_shards=2)
    [right] = read_shard_rows(ref.chunks, shard=1, num_shards=2)
    assert left.num_rows + right.num_rows == 300
    assert all(sf.shard_of(key, 2) == 0 for key in left[SORT_KEY].to_pylist())
    assert all(sf.shard_of(key, 2) == 1 for key in right[SORT_KEY].to_pylist())


def test_fragment_writer_buffers_until_its_threshold_then_at_bundle_end(tmp_path):
    fn = WriteFragmentsFn(folder=str(tmp_path), schema=SCHEMA, fragment_bytes=20_000)
    fn.start_bundle()
    rows = make_rows(601, seed=2)
    emitted = [ref for start in range(0, 600, 50) for ref in fn.process(rows[start:start + 50])]
    assert len(emitted) >= 2
    assert list(fn.process(rows[600:])) == []  # one small row: below the threshold, kept for the bundle end
    tail = [wv.value for wv in fn.finish_bundle()]
    refs = emitted + tail
    assert len(tail) == 1 and tail[0].count >= 1
    assert sum(ref.count for ref in refs) == 601 and len(os.listdir(tmp_path)) == len(refs)
    assert sorted(i for t in shard_tables(refs, 4).values() for i in t["index"].to_pylist()) == list(range(601))


# -- --dedup decided on keys, the records staying spilled (pipeline.engines.beam.dedup) ------------------------

@pytest.mark.slow
def test_dedup_keeps_the_first_record_of_each_conversation_and_rejects_the_others_with_the_record(tmp_path):
    """Real data with duplicates (within and across files); the job's choice is checked against an
    independent computation: for each conversation, the record first by sort key is kept."""
    import json

    from chatshards_testing import run_job, sample
    from pipeline.steps.dedup import dedup_key
    from transforms.formats import FormatOptions
    from transforms.reading import iter_raw_records_from_path

    relatives = ["alpaca/llamafactory_alpaca_en_demo.json", "openai/llamafactory_v1_sft_demo.jsonl",
                 "alpaca/llamafactory_identity.json"]
    paths = [sample(relative) for relative in relatives]
    inputs = [arg for path in paths for arg in ("--input", str(path))]
    groups: dict[str, list] = {}
    for path in paths:
        for raw in iter_raw_records_from_path(str(path)):
            groups.setdefault(dedup_key(raw, FormatOptions()), []).append(
                (sf.row_sort_key(raw.source, raw.index), raw.source, raw.index, raw.value))
    expected_dups = {(s, i): (min(g)[1], min(g)[2], v) for g in groups.values() if len(g) > 1
                     for _, s, i, v in sorted(g)[1:]}
    assert len(expected_dups) >= 15

    outputs = {}
    for mode in ("in_memory", "multi_processing"):
        out = tmp_path / mode
        assert run_job([*inputs, "--output", str(out), "--dedup", "--num-shards", "2", "--runner=FnApiRunner",
                        f"--direct_running_mode={mode}", "--direct_num_workers=2"]) == 0
        outputs[mode] = out
    manifest = json.loads((outputs["in_memory"] / "manifest.json").read_text())
    rejected = [json.loads(line) for path in sorted((outputs["in_memory"] / "rejected").glob("*.jsonl"))
                for line in path.read_text().splitlines()]
    dups = {(r["source"], r["index"]): r for r in rejected if r["reason"] == "duplicate"}
    assert set(dups) == set(expected_dups)
    for key, (kept_source, kept_index, value) in expected_dups.items():
        assert dups[key]["record"] == value  # the original record, read back from its spill chunk
        assert dups[key]["detail"] == f"same conversation as {kept_source} record {kept_index}"
    counts = manifest["counts"]
    assert counts["read"] == sum(len(g) for g in groups.values())
    assert counts["read"] == counts["written"] + counts["rejected"]
    assert manifest["rejected_by_reason"]["duplicate"] == len(expected_dups)
    written = pa.concat_tables([pa.ipc.open_stream(p.read_bytes()).read_all()
                                for p in sorted((outputs["in_memory"] / "data").glob("*.arrow"))])
    assert not set(zip(written["source"].to_pylist(), written["index"].to_pylist())) & set(expected_dups)
    # same bytes whatever the runner mode
    for name in ["manifest.json", *[f"data/{p.name}" for p in (outputs["in_memory"] / "data").glob("*.arrow")]]:
        assert (outputs["in_memory"] / name).read_bytes() == (outputs["multi_processing"] / name).read_bytes(), name


# -- rejected output through fragments (pipeline.engines.beam.rejected) ----------------------------------------

def write_rejected_files(refs, num_files: int, output) -> dict[str, tuple[bytes, dict]]:
    from pipeline.engines.beam.rejected import WriteRejectedFn

    grouped: dict[int, list] = {}
    for ref in refs:
        for index, chunk in chunks_by_shard(ref.chunks, num_files):
            grouped.setdefault(index, []).append(chunk)
    fn = WriteRejectedFn(output=str(output))
    entries = [entry for item in sorted(grouped.items()) for entry in fn.process(item, num_files)]
    return {entry["path"]: ((output / entry["path"]).read_bytes(), entry) for entry in entries}


def test_rejected_files_do_not_depend_on_fragmenting_and_hold_sorted_original_lines(tmp_path):
    import json

    from pipeline.steps.rejected import rejected_line, sort_key_of, write_rejected_fragment

    items = [{"reason": ("invalid_json", "empty_turn", "too_long")[i % 3], "detail": f"d{i}", "source": f"f{i % 2}",
              "index": i, "record": {"text": "é" * (i % 5), "n": i}} for i in range(700)]
    one = [write_rejected_fragment(items, folder=str(tmp_path / "frag1"), chunk_lines=50)]
    many = [write_rejected_fragment(items[a:b], folder=str(tmp_path / "frag2"), chunk_lines=7)
            for a, b in [(0, 1), (1, 333), (333, 700)]]
    for num_files in (1, 4):
        a = write_rejected_files(one, num_files, tmp_path / f"a{num_files}")
        b = write_rejected_files(many, num_files, tmp_path / f"b{num_files}")
        assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
        lines = [json.loads(line) for data, _ in a.values() for line in data.decode().splitlines()]
        assert sorted(map(rejected_line, lines)) == sorted(map(rejected_line, items))  # every rejection, once
        for path, (data, entry) in a.items():
            keys = [sort_key_of(json.loads(line)) for line in data.decode().splitlines()]
            assert keys == sorted(keys) and entry["rows"] == len(keys) and entry["bytes"] == len(data)
            assert all(sf.shard_of(key, num_files) == int(path[-20:-15]) for key in keys)
            assert sum(entry["by_reason"].values()) == len(keys)


def test_no_rejected_file_for_an_index_without_lines(tmp_path):
    from pipeline.engines.beam.rejected import WriteRejectedFn
    from pipeline.steps.rejected import write_rejected_fragment

    item = {"reason": "invalid_json", "detail": "", "source": "s", "index": 0, "record": "{"}
    ref = write_rejected_fragment([item], folder=str(tmp_path / "frag"))
    own = sf.shard_of(sf.row_sort_key("s", 0), 2)
    other = 1 - own
    [chunk] = [chunk for _, chunk in chunks_by_shard(ref.chunks, 2)]
    assert list(WriteRejectedFn(output=str(tmp_path)).process((other, [chunk]), 2)) == []
    assert not (tmp_path / "rejected").exists() or not list((tmp_path / "rejected").iterdir())


def test_record_batches_are_spilled_compactly_and_other_batches_as_they_are(tmp_path):
    import pickle

    from pipeline.io.spill import PACKED

    mixed = [RawRecord(source="a.jsonl", index=0, value={"x": 1}), RawRecord(source="b.jsonl", index=0, value=[1])]
    batches = [raw_batches(20, 20)[0], mixed, [("not", "records")], []]
    refs = list(spill_batches(iter(batches), folder=str(tmp_path)))
    assert [read_spilled(ref) for ref in refs] == batches
    stored = pickle.loads(read_chunk(refs[0]))
    assert stored[0] == PACKED and stored[1] == "f.jsonl" and len(stored[2]) == 20  # one source, tuples
    assert pickle.loads(read_chunk(refs[1])) == mixed  # two sources: pickled as they are


# -- the store itself (pipeline.io.chunks) ------------------------------------------------------------

def test_chunk_writer_appends_ranges_that_read_back_and_a_truncated_file_is_an_error(tmp_path):
    with ChunkWriter(str(tmp_path), store=SPILL) as writer:
        a = writer.add(b"alpha", count=1)
        b = writer.add(b"", count=0)
        c = writer.add(b"gamma!", count=2, first="k1", last="k2")
    assert (a.offset, a.length, b.offset, c.offset, c.length) == (0, 5, 5, 5, 6)
    assert writer.close() == (a, b, c) and os.path.getsize(writer.path) == 11
    assert [data for _, data in read_chunks([c, a, c, b])] == [b"alpha", b"", b"gamma!"]  # distinct, in file order
    with open(writer.path, "r+b") as handle:
        handle.truncate(8)
    with pytest.raises(IOError, match="truncated"):
        read_chunk(c)


def test_chunks_by_shard_names_exactly_the_shards_of_a_chunks_key_range(tmp_path):
    keys = sorted(sf.row_sort_key("s", i) for i in range(200))
    with ChunkWriter(str(tmp_path), store="fragments") as writer:
        chunks = [writer.add(b"x", count=len(part), first=part[0], last=part[-1])
                  for part in (keys[i:i + 30] for i in range(0, 200, 30))]
    for n in (1, 2, 5):
        pairs = list(chunks_by_shard(chunks, n))
        for chunk, part in zip(chunks, (keys[i:i + 30] for i in range(0, 200, 30))):
            assert {shard for shard, c in pairs if c == chunk} == {sf.shard_of(key, n) for key in part}
