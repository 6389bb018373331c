"""The job on an object store: every file access goes through Beam's ``FileSystems``.

``fakegcs://bucket/key`` is a Beam filesystem (tests/object_store_testing.py) with Cloud Storage's
semantics (no folders: ``exists()`` is false for a prefix; an object appears when its writer is
closed; rename is copy + delete). Objects live as files under a temporary folder. A job whose input,
output and tokenizer are ``fakegcs://`` paths only works if nothing uses ``open``/``os.path`` on them;
it runs in-process (FnApiRunner in_memory) because the filesystem is registered in this process.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from object_store_testing import PREFIX, FakeObjectStore, fresh_store, objects, upload

from chatshards_testing import run_job, sample
from transforms import shard_format as sf

INPUTS = ["sharegpt/fastchat_dummy_conversation.json", "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
          "edge_cases/qwen3vl_single_images_trailing_comma.json"]


@pytest.fixture()
def store(tmp_path, monkeypatch):
    yield from fresh_store(tmp_path, monkeypatch)


def upload_inputs(root: Path) -> list[str]:
    args = []
    for relative in INPUTS:
        upload(root, f"{PREFIX}bucket/in/{Path(relative).name}", sample(relative).read_bytes())
    args += ["--input", f"{PREFIX}bucket/in/*.json", "--input", f"{PREFIX}bucket/in/*.jsonl"]
    return args


def test_a_job_reads_and_writes_only_through_filesystems(store, tmp_path):
    common = ["--num-shards", "2", "--max-length", "1024", "--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    assert run_job([*upload_inputs(store), *common, "--output", f"{PREFIX}bucket/out"]) == 0
    out = store / "bucket" / "out"
    manifest = sf.load_manifest(str(out))  # a complete, valid dataset on the object store
    for entry in manifest["shards"]:
        sf.verify_shard_file(str(out / entry["path"]), expected_sha256=entry["sha256"], expected_bytes=entry["bytes"])
    assert not [k for k in objects(store, f"{PREFIX}bucket/out") if k.startswith(".tmp")], "temporaries left behind"
    assert {Path(p).name for p in FakeObjectStore.opened} >= {Path(r).name for r in INPUTS}

    # the same records from local files give the same rows (sources differ, so compare counts and totals)
    local_inputs = [arg for relative in INPUTS for arg in ("--input", str(sample(relative)))]
    assert run_job([*local_inputs, *common, "--output", str(tmp_path / "local")]) == 0
    local_manifest = sf.load_manifest(str(tmp_path / "local"))
    for key in ("counts", "totals", "rejected_by_reason"):
        assert manifest[key] == local_manifest[key], key


def test_partial_run_on_an_object_store_is_detected_and_replaced(store, capsys):
    """Object stores have no folders: leftovers under data/ must still be seen, and --overwrite must
    delete them (otherwise shards of two runs would mix)."""
    out = f"{PREFIX}bucket/out"
    stale = ["data/shard-00000-of-00003.arrow", "data/shard-00002-of-00003.arrow",
             "rejected/rejected-00001-of-00003.jsonl", ".tmp/shard-00001-of-00003.arrow.0123"]
    for key in stale:
        upload(store, f"{out}/{key}", b"old run")
    upload(store, f"{out}/notes.txt", b"not ours")
    args = [*upload_inputs(store), "--output", out, "--num-shards", "2", "--runner=FnApiRunner"]
    # without the marker a run writes first, the folder is not the tool's: refused even with --overwrite
    assert run_job([*args, "--overwrite"]) == 2
    assert "not written by chatshards" in capsys.readouterr().err
    upload(store, f"{out}/.chatshards-output", b"{}")  # what the killed run wrote before anything else
    assert run_job(args) == 2
    err = capsys.readouterr().err
    assert "partial run" in err and "data" in err and "--overwrite" in err
    assert run_job([*args, "--overwrite"]) == 0
    keys = objects(store, out)
    assert not set(stale) & set(keys), "objects of the old run survived --overwrite"
    assert "notes.txt" in keys  # files that are not part of a dataset are left alone
    manifest = json.loads((store / "bucket" / "out" / "manifest.json").read_text())
    data_keys = sorted(k for k in keys if k.startswith("data/"))
    assert data_keys == sorted(entry["path"] for entry in manifest["shards"])


def test_tokenizer_folder_on_an_object_store_is_staged_locally(store, llama3_style_dir):
    from pipeline.io.remote import load_job_tokenizer as load_tokenizer
    from pipeline.io.remote import stage_folder as stage_tokenizer_folder
    from transforms.tokenizer_loading import vocab_hash

    url = f"{PREFIX}bucket/tokenizers/llama3-style"
    for path in Path(llama3_style_dir).rglob("*"):
        if path.is_file():
            upload(store, f"{url}/{path.relative_to(llama3_style_dir).as_posix()}", path.read_bytes())
    local = load_tokenizer(llama3_style_dir)
    remote = load_tokenizer(url + "/")
    assert vocab_hash(remote) == vocab_hash(local)
    assert remote.chat_template == local.chat_template
    assert remote.name_or_path == url + "/"  # the manifest names the source, not the temp folder
    staged = stage_tokenizer_folder(url)
    assert staged == stage_tokenizer_folder(url + "/")  # once per process
    assert sorted(p.name for p in Path(staged).iterdir()) == sorted(p.name for p in Path(llama3_style_dir).iterdir())
    assert os.path.isdir(staged) and not staged.startswith(PREFIX)


def test_a_job_with_a_remote_tokenizer_matches_the_local_one(store, tmp_path, llama3_style_dir):
    url = f"{PREFIX}bucket/tokenizers/tok-for-job"
    for path in Path(llama3_style_dir).rglob("*"):
        if path.is_file():
            upload(store, f"{url}/{path.relative_to(llama3_style_dir).as_posix()}", path.read_bytes())
    source = str(sample("sharegpt/fastchat_dummy_conversation.json"))
    common = ["--input", source, "--num-shards", "2", "--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    assert run_job([*common, "--tokenizer", llama3_style_dir, "--output", str(tmp_path / "a")]) == 0
    assert run_job([*common, "--tokenizer", url, "--output", str(tmp_path / "b")]) == 0
    a, b = sf.load_manifest(str(tmp_path / "a")), sf.load_manifest(str(tmp_path / "b"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert b["tokenizer"]["name"] == url and a["tokenizer"]["vocab_hash"] == b["tokenizer"]["vocab_hash"]


def test_missing_remote_tokenizer_folder_is_a_config_error(store, tmp_path, capsys):
    source = str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl"))
    assert run_job(["--input", source, "--output", str(tmp_path / "o"), "--tokenizer", f"{PREFIX}bucket/nothing"]) == 2
    assert "holds no files" in capsys.readouterr().err


def test_shards_are_streamed_to_storage_with_the_contract_bytes(store, tmp_path):
    """WriteShards streams the Arrow IPC stream to the file (never holding the serialised shard);
    the bytes are exactly ``shard_format.ipc_stream_bytes``, locally and on the object store."""
    import numpy as np

    from pipeline.steps.shards import write_table_atomically

    schema = sf.arrow_schema()
    rows = []
    for i in range(500):
        ids = np.arange(i % 37 + 1, dtype=np.int32)
        rows.append({"input_ids": ids, "labels": ids, "length": len(ids), "num_loss_tokens": 1, "truncated": False,
                     "source": "s.jsonl", "index": i, "record_id": f"{i:064x}"})
    import pyarrow as pa

    def default(field):
        return "x" if pa.types.is_string(field.type) else False if pa.types.is_boolean(field.type) else 0

    rows = [{field.name: row.get(field.name, default(field)) for field in schema} for row in rows]
    table = sf.table_from_rows(rows, schema)
    expected = sf.ipc_stream_bytes(table)
    for root in (str(tmp_path / "local-out"), f"{PREFIX}bucket/stream-out"):
        path = root + "/data/shard-00000-of-00001.arrow"
        size, sha256 = write_table_atomically(path, table, tmp_root=root + "/.tmp")
        assert (size, sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert (tmp_path / "local-out" / "data" / "shard-00000-of-00001.arrow").read_bytes() == expected
    assert (store / "bucket" / "stream-out" / "data" / "shard-00000-of-00001.arrow").read_bytes() == expected
