"""ShardDataset: manifest checks, zero-copy views, integrity errors, pickling, DataLoader workers."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from torch.utils.data import DataLoader

from transforms import shard_format as sf
from transforms.runtime import Collator, ManifestError, ShardDataset
from transforms.runtime.synthetic import write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_dataset(root, **kwargs) -> str:
    """Fixture helper: a finished synthetic dataset folder (see transforms.runtime.synthetic)."""
    write_synthetic_dataset(root, **kwargs)
    return str(root)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), num_rows=300, num_shards=3, seed=1)


def _read_table(root):
    manifest = sf.load_manifest(root)
    tables = []
    for path in sf.shard_paths(root, manifest):
        with pa.memory_map(path) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables)


def test_rows_match_arrow_table(dataset_dir):
    ds = ShardDataset(dataset_dir, verify=True)
    table = _read_table(dataset_dir)
    assert len(ds) == table.num_rows == 300
    ids = table.column("input_ids").to_pylist()
    labels = table.column("labels").to_pylist()
    for i in (0, 1, 99, 100, 199, 200, 299, -1):
        row = ds[i]
        assert set(row) == {"input_ids", "labels"}
        assert row["input_ids"].dtype == np.int32 and row["labels"].dtype == np.int32
        assert row["input_ids"].tolist() == ids[i]
        assert row["labels"].tolist() == labels[i]
    assert ds.lengths.tolist() == [len(x) for x in ids]
    with pytest.raises(IndexError):
        ds[300]


def test_views_are_zero_copy(dataset_dir):
    before = pa.total_allocated_bytes()
    ds = ShardDataset(dataset_dir)
    rows = [ds[i] for i in range(len(ds))]
    assert pa.total_allocated_bytes() == before  # nothing decoded into Arrow's heap
    view = rows[5]["input_ids"]
    assert not view.flags.owndata and not view.flags.writeable
    # two rows of one shard share the same underlying mapped buffer
    assert np.shares_memory(np.asarray(rows[5]["input_ids"].base), np.asarray(rows[6]["input_ids"].base))


def test_refuses_folder_without_manifest(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=20, num_shards=1)
    os.remove(os.path.join(root, sf.MANIFEST_NAME))
    with pytest.raises(ManifestError, match="manifest"):
        ShardDataset(root)
    with pytest.raises(ManifestError):
        Collator.from_manifest(root)


def test_refuses_other_schema_version(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=20, num_shards=1)
    path = os.path.join(root, sf.MANIFEST_NAME)
    manifest = json.load(open(path))
    manifest["schema_version"] = sf.SCHEMA_VERSION + 1
    open(path, "wb").write(sf.manifest_bytes(manifest))
    with pytest.raises(ManifestError, match="schema_version"):
        ShardDataset(root)


def test_verify_names_corrupted_shard(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=60, num_shards=2)
    shard = sf.shard_paths(root, sf.load_manifest(root))[1]
    data = bytearray(open(shard, "rb").read())
    data[-200] ^= 0xFF  # flip a byte inside the token data: same size, valid structure
    open(shard, "wb").write(bytes(data))
    with pytest.raises(ManifestError, match="shard-00001-of-00002.arrow.*sha256"):
        ShardDataset(root, verify=True)


def test_truncated_shard_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=60, num_shards=2)
    shard = sf.shard_paths(root, sf.load_manifest(root))[0]
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) // 2])
    with pytest.raises(ManifestError, match="shard-00000-of-00002.arrow"):
        ShardDataset(root)


def test_structurally_broken_shard_fails_on_open_naming_the_file(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=60, num_shards=2)
    shard = sf.shard_paths(root, sf.load_manifest(root))[1]
    size = os.path.getsize(shard)
    open(shard, "wb").write(b"\x00" * size)  # same size, not Arrow
    ds = ShardDataset(root)  # sizes match, no sha check requested
    ds[0]
    with pytest.raises(ManifestError, match="shard-00001-of-00002.arrow"):
        ds[59]


def test_missing_shard(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=20, num_shards=2)
    os.remove(sf.shard_paths(root, sf.load_manifest(root))[0])
    with pytest.raises(ManifestError, match="missing"):
        ShardDataset(root)


def test_multi_batch_shards_and_padded_rows(tmp_path):
    root = make_dataset(tmp_path / "d", num_rows=50, num_shards=2, chunk_rows=7, pad_to=64)
    ds = ShardDataset(root, verify=True, columns=("input_ids", "labels", "attention_mask", "length", "source"))
    table = _read_table(root)
    for i in range(len(ds)):
        row = ds[i]
        assert row["input_ids"].tolist() == table.column("input_ids")[i].as_py()
        assert row["attention_mask"].dtype == np.int8 and len(row["attention_mask"]) == 64
        assert int(row["attention_mask"].sum()) == row["length"]
        assert row["source"] == "synthetic.jsonl"
    assert ShardDataset(root).columns == ("input_ids", "labels", "attention_mask")
    assert (ds.lengths == 64).all()


def test_pickle_drops_mappings_and_reopens(dataset_dir):
    ds = ShardDataset(dataset_dir)
    expected = ds[123]["input_ids"].copy()
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # paths and manifest only, never buffers
    clone = pickle.loads(blob)
    assert not clone._open
    np.testing.assert_array_equal(clone[123]["input_ids"], expected)


def test_max_open_shards_bounds_mappings(dataset_dir):
    ds = ShardDataset(dataset_dir, max_open_shards=1)
    full = ShardDataset(dataset_dir)
    for i in range(0, len(ds), 7):
        np.testing.assert_array_equal(ds[i]["labels"], full[i]["labels"])
        assert len(ds._open) == 1


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_map_style_dataloader_with_workers(dataset_dir, context):
    ds = ShardDataset(dataset_dir)
    collator = Collator.from_manifest(dataset_dir)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collator, multiprocessing_context=context)
    seen = []
    for batch in loader:
        for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
            seen.append(row[mask.bool()].tolist())
    assert seen == [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def test_import_pulls_no_beam_no_transformers():
    code = (
        "import sys\n"
        "import numpy, pyarrow, torch, torch.utils.data\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "from transforms.runtime import ShardDataset, Collator\n"
        "new = {m.split('.')[0] for m in sys.modules} - before\n"
        "banned = [m for m in ('apache_beam', 'transformers', 'datasets', 'tokenizers', 'pandas') "
        "if m in sys.modules]\n"
        "assert not banned, banned\n"
        "assert new <= {'transforms'}, new\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
