"""Empty shards (more shards than rows, every row of a shard rejected) are valid Arrow IPC streams
that ``datasets.Dataset.from_file`` opens, like every other shard (issue 11, item 9)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from chatshards_testing import run_job
from transforms import shard_format as sf
from transforms.runtime import Collator, ShardDataset
from transforms.runtime.synthetic import write_synthetic_dataset

datasets = pytest.importorskip("datasets")

GOOD = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
    {"conversations": [{"from": "human", "value": "Name a colour"}, {"from": "gpt", "value": "Blue"}]},
]
BAD = [
    {"messages": [{"role": "user", "content": "no answer"}]},  # no_assistant_turn
    {"unknown": 1},                                              # unknown_format
]


def stream_batches(path: str) -> list[pa.RecordBatch]:
    with pa.memory_map(path) as source:
        return list(pa.ipc.open_stream(source))


def test_empty_table_is_written_with_schema_and_one_empty_batch():
    schema = sf.arrow_schema(padded=True)
    data = sf.ipc_stream_bytes(schema.empty_table())
    reader = pa.ipc.open_stream(pa.BufferReader(data))
    assert reader.schema.equals(schema, check_metadata=True)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [0]


def test_sink_streams_an_empty_shard_with_the_same_bytes(tmp_path):
    from pipeline.steps.shards import write_table_atomically

    schema = sf.arrow_schema()
    path = str(tmp_path / "data" / "shard-00000-of-00001.arrow")
    size, digest = write_table_atomically(path, schema.empty_table(), tmp_root=str(tmp_path / ".tmp"))
    expected = sf.ipc_stream_bytes(schema.empty_table())
    assert Path(path).read_bytes() == expected
    assert (size, digest) == (len(expected), sf.sha256_hex(expected))
    assert datasets.Dataset.from_file(path).num_rows == 0


def test_job_with_more_shards_than_rows_writes_openable_empty_shards(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in GOOD + BAD))
    out = tmp_path / "out"
    assert run_job(["--input", str(src), "--output", str(out), "--num-shards", "8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"read": 5, "written": 3, "rejected": 2, "rows": 3}
    entries = manifest["shards"]
    assert len(entries) == 8
    empty = [e for e in entries if e["rows"] == 0]
    assert len(empty) >= 5  # 3 rows in 8 shards
    rows_seen = 0
    for entry in entries:
        path = str(out / entry["path"])
        assert len(stream_batches(path)) >= 1, entry["path"]  # never a schema-only stream
        ds = datasets.Dataset.from_file(path)
        assert ds.num_rows == entry["rows"], entry["path"]
        assert {"input_ids", "labels", "length"} <= set(ds.column_names)
        rows_seen += ds.num_rows
    assert rows_seen == 3
    # the runtime reads the same folder: empty shards are skipped by row numbering
    ds = ShardDataset(str(out), verify=True)
    assert len(ds) == 3 and ds.lengths.tolist() == [len(ds[i]["input_ids"]) for i in range(3)]
    batch = Collator.from_manifest(str(out))([ds[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3
    assert sum(len(v) for v in ds.flat_values()) == int(ds.lengths.sum())


def test_synthetic_writer_empty_shards_open_with_datasets(tmp_path):
    write_synthetic_dataset(tmp_path, num_rows=2, num_shards=5, chunk_rows=1)
    manifest = sf.load_manifest(str(tmp_path))
    for path, entry in zip(sf.shard_paths(str(tmp_path), manifest), manifest["shards"]):
        assert datasets.Dataset.from_file(path).num_rows == entry["rows"]
    ds = ShardDataset(str(tmp_path))
    assert len(ds) == 2 and len(ds.lengths) == 2
