"""The output folder is a Hugging Face dataset (docs/huggingface.md).

* the dataset card ``README.md`` (:mod:`transforms.dataset_card`): ``load_dataset(out, split="train")`` and
  ``load_dataset(out)["train"]`` give the shards' rows with nothing but the path; ``rejected/`` and the audit are
  not splits; the card carries the manifest's fingerprint and headline figures; the card is one of the tool's
  files (``--overwrite`` replaces it, a README.md of someone else's is refused, an input glob may not match it);
* ``ShardDataset.to_hf_dataset()``: a ``datasets.Dataset`` over the same memory-mapped shards, no copy, and
  nothing written into the folder by ``map``/``shuffle``;
* a folder a library wrote ``cache-*.arrow`` files into stays readable and ``--overwrite`` replaces it;
* every reader call the docs name: the ones that fail on a shard fail, the ones given instead work.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from chatshards_testing import run_job
from pipeline.launch.main import main as default_command  # no Beam flag: the local engine

datasets = pytest.importorskip("datasets")

from transforms import shard_format as sf  # noqa: E402
from transforms.dataset_card import CARD_NAME, dataset_card, is_chatshards_card  # noqa: E402
from transforms.runtime import ShardDataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def chat(i: int, words: int = 3) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i} " + "word " * words},
                         {"role": "assistant", "content": f"answer {i} " + "reply " * (words + i % 5)}]}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The README's demo job (examples/data: some records rejected), three shards."""
    out = tmp_path_factory.mktemp("hf") / "demo"
    assert default_command(["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(out),
                            "--num-shards", "3"]) == 0
    return out


def tree(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def shard_rows(out: Path) -> list[dict]:
    ds = ShardDataset(out, columns=("input_ids", "labels"))
    return [{"input_ids": ds[i]["input_ids"].tolist(), "labels": ds[i]["labels"].tolist()} for i in range(len(ds))]


def test_load_dataset_reads_the_folder_as_one_train_split(demo, tmp_path):
    manifest = json.loads((demo / sf.MANIFEST_NAME).read_text())
    assert manifest["counts"]["rejected"] > 0 and (demo / "rejected").is_dir()  # files that must not be splits
    cache = tmp_path / "hf-cache"
    split = datasets.load_dataset(str(demo), split="train", cache_dir=str(cache))
    whole = datasets.load_dataset(str(demo), cache_dir=str(cache))
    assert list(whole) == ["train"]  # rejected/*.jsonl, audit/ are not splits
    expected = shard_rows(demo)
    for ds in (split, whole["train"]):
        assert ds.column_names == manifest["columns"]
        assert [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds] == expected
    assert len(expected) == manifest["counts"]["rows"]


def test_the_card_carries_the_fingerprint_and_headline_figures(demo):
    manifest = json.loads((demo / sf.MANIFEST_NAME).read_text())
    card = (demo / CARD_NAME).read_text(encoding="utf-8")
    assert manifest["dataset_card"] == CARD_NAME
    assert card == dataset_card(manifest)  # a pure function of the manifest: both engines write the same bytes
    assert card.startswith("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                           "    path: data/shard-*.arrow\n")
    assert is_chatshards_card(card)
    assert manifest["config_fingerprint"] in card
    counts = manifest["counts"]
    assert f"| records read | {counts['read']:,} |" in card
    assert f"| rows written | {counts['rows']:,} |" in card
    assert f"| records rejected | {counts['rejected']:,} ({100 * counts['rejected'] / counts['read']:.1f}%)" in card
    for reason, count in manifest["rejected_by_reason"].items():
        assert f"{reason} {count}" in card
    assert f"| tokens | {manifest['totals']['tokens']:,} |" in card
    p50 = manifest["audit"]["percentiles"]["total_tokens"]["p50"]
    assert f"p50 {p50:,}" in card
    assert str(demo) not in card  # no output path (two folders of the same job hold the same card)


def test_the_cards_settings_name_only_the_tasks_own_options(demo):
    manifest = json.loads((demo / sf.MANIFEST_NAME).read_text())
    assert "loss assistant" in dataset_card(manifest)  # --loss is a chat option
    other = {**manifest, "task": {"name": "preference"}}
    settings = next(line for line in dataset_card(other).splitlines() if line.startswith("Settings: "))
    assert "loss" not in settings and "max_length" in settings  # preference jobs refuse --loss


def test_overwrite_replaces_the_card_and_a_foreign_readme_is_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", [chat(i) for i in range(5)])
    out = tmp_path / "out"
    assert default_command(["--input", str(data), "--output", str(out)]) == 0
    first = (out / CARD_NAME).read_text()
    write_jsonl(data, [chat(i) for i in range(7)])
    assert default_command(["--input", str(data), "--output", str(out), "--overwrite"]) == 0
    second = (out / CARD_NAME).read_text()
    assert first != second and "| records read | 7 |" in second
    # someone's own README.md in the output folder: never replaced, even with --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / CARD_NAME).write_text("# my notes\n")
    capsys.readouterr()
    assert default_command(["--input", str(data), "--output", str(other), "--overwrite"]) == 2
    assert "README.md that chatshards did not write" in capsys.readouterr().err
    assert (other / CARD_NAME).read_text() == "# my notes\n" and not (other / sf.MANIFEST_NAME).exists()
    # an input glob that would match the card is refused like one matching the manifest
    inside = tmp_path / "inside"
    inside.mkdir()
    write_jsonl(inside / "a.jsonl", [chat(1)])
    assert default_command(["--input", str(inside / "*"), "--output", str(inside)]) == 2
    assert "would also match" in capsys.readouterr().err


def test_to_hf_dataset_maps_the_shards_without_copying_and_never_writes_into_the_folder(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [chat(i, words=400) for i in range(300)])
    out = tmp_path / "out"
    assert default_command(["--input", str(data), "--output", str(out), "--num-shards", "2", "--no-audit",
                            "--workers", "1"]) == 0
    ds = ShardDataset(out)
    shard_bytes = sum(e["bytes"] for e in ds.manifest["shards"])
    assert shard_bytes > 500_000
    before_files = tree(out)
    allocated = pa.total_allocated_bytes()
    hf = ds.to_hf_dataset()
    grown = pa.total_allocated_bytes() - allocated
    assert grown < shard_bytes / 20, (grown, shard_bytes)  # the token buffers are the mapped files' pages
    assert isinstance(hf, datasets.Dataset) and hf.split == "train" and len(hf) == len(ds)
    assert hf.column_names == list(ds.columns) == ["input_ids", "labels"]
    for i in (0, 137, len(ds) - 1):
        assert hf[i]["input_ids"] == ds[i]["input_ids"].tolist() and hf[i]["labels"] == ds[i]["labels"].tolist()
    assert hf.cache_files == []  # so datasets derives nothing into the folder
    mapped = hf.map(lambda row: {"n": len(row["input_ids"])})
    shuffled = hf.shuffle(seed=0)
    assert mapped["n"] == ds.lengths.tolist() and sorted(shuffled["input_ids"]) == sorted(hf["input_ids"])
    assert tree(out) == before_files
    every = ds.to_hf_dataset(columns=ds.manifest["columns"])
    assert every.column_names == ds.manifest["columns"]
    assert every.data.schema.field("labels").type == pa.list_(pa.int32())  # the shards' own types


def test_a_folder_with_a_librarys_cache_files_stays_readable_and_can_be_overwritten(tmp_path, capsys, caplog):
    data = write_jsonl(tmp_path / "in.jsonl", [chat(i) for i in range(20)])
    out = tmp_path / "out"
    assert default_command(["--input", str(data), "--output", str(out)]) == 0
    expected = shard_rows(out)
    # what TRL's preparation (a .map on Dataset.from_file) leaves beside the shards
    shard = next((out / "data").glob("shard-*.arrow"))
    from_file = datasets.Dataset.from_file(str(shard))
    from_file.map(lambda row: {"n": len(row["input_ids"])})
    from_file.shuffle(seed=1).flatten_indices()
    derived = sorted(p.name for p in (out / "data").iterdir() if not p.name.startswith("shard-"))
    assert derived and all(name.startswith("cache-") and name.endswith(".arrow") for name in derived), derived
    assert shard_rows(out) == expected  # the manifest names the shards only
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in loaded] == expected  # the card's glob
    capsys.readouterr()
    assert default_command(["--input", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and f"also deletes the {len(derived)} cache file(s)" in err
    with caplog.at_level("WARNING", logger="chatshards"):
        assert default_command(["--input", str(data), "--output", str(out), "--overwrite"]) == 0
    assert f"deleting {len(derived)} cache file(s)" in caplog.text
    assert sorted(p.name for p in (out / "data").iterdir()) == [shard.name]
    # files of other names still make the folder someone else's
    (out / "data" / "notes.txt").write_text("mine")
    assert default_command(["--input", str(data), "--output", str(out), "--overwrite"]) == 2
    assert (out / "data" / "notes.txt").exists()


def test_load_from_disk_is_refused_as_the_docs_say(demo):
    # docs/huggingface.md: load_from_disk reads only save_to_disk folders; load_dataset / to_hf_dataset instead
    with pytest.raises(FileNotFoundError, match="neither a `Dataset` directory nor a `DatasetDict` directory"):
        datasets.load_from_disk(str(demo))


def test_the_shard_readers_the_docs_name(demo):
    """docs/huggingface.md, "Reading one shard": the file-format readers fail, the stream readers work."""
    shard = str(next((demo / "data").glob("shard-*.arrow")))
    rows = pa.ipc.open_stream(pa.memory_map(shard)).read_all()
    assert rows.num_rows > 0
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(shard)
    pandas = pytest.importorskip("pandas")
    with pytest.raises(pa.ArrowInvalid):
        pandas.read_feather(shard)
    assert pa.ipc.open_stream(shard).read_pandas().shape == (rows.num_rows, rows.num_columns)
    assert datasets.Dataset.from_file(shard).num_rows == rows.num_rows
    polars = pytest.importorskip("polars")
    with pytest.raises(Exception):  # noqa: B017 - polars' own error type (ComputeError: InvalidFooter)
        polars.read_ipc(shard)
    assert polars.read_ipc_stream(shard).shape == (rows.num_rows, rows.num_columns)


@pytest.mark.slow
def test_the_card_is_written_by_the_beam_graph_too(demo, tmp_path):
    out = tmp_path / "beam"
    assert run_job(["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(out), "--num-shards", "3",
                    "--runner=FnApiRunner"]) == 0
    assert (out / CARD_NAME).read_bytes() == (demo / CARD_NAME).read_bytes()
    shutil.rmtree(out)
