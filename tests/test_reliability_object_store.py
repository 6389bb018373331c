"""Issue 11 on an object store (``gs://``, here the ``fakegcs://`` filesystem of object_store_testing.py
with Cloud Storage's semantics): what is checked at launch, what at read time, and what holds for the
output folder where no lock can be taken."""
from __future__ import annotations

import gzip
import json
import logging

import pytest
from apache_beam.io.filesystem import BeamIOError
from object_store_testing import PREFIX, FakeObjectStore, fresh_store, objects, upload

from chatshards_testing import run_job
from pipeline.launch.output_folder import LOCK_NAME, MARKER_NAME
from transforms import errors


class UnreachableStore(FakeObjectStore):
    """A bucket that cannot be listed (missing, no credentials, no network): every listing fails as Beam
    reports it after the storage client's retries."""

    @classmethod
    def scheme(cls):
        return "unreachablegcs"

    def _list(self, dir_or_prefix):
        raise BeamIOError("List operation failed", {dir_or_prefix: PermissionError("403 Forbidden")})

    def exists(self, path):
        raise BeamIOError("Exists operation failed", {path: PermissionError("403 Forbidden")})


@pytest.fixture()
def object_store(tmp_path, monkeypatch):
    """An empty ``fakegcs://`` store, as test_dataflow_remote.py's ``store`` fixture makes it."""
    yield from fresh_store(tmp_path, monkeypatch)


def chat(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})


def lines(n: int, start: int = 0) -> bytes:
    return "".join(chat(i) + "\n" for i in range(start, start + n)).encode()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatshards: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_an_input_or_output_the_store_cannot_list_is_a_config_error(object_store, tmp_path, capsys):
    local = tmp_path / "a.jsonl"
    local.write_bytes(lines(2))
    assert run_job(["--input", "unreachablegcs://bucket/in/*.jsonl", "--output", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "--input cannot be listed" in err and "403 Forbidden" in err
    assert run_job(["--input", str(local), "--output", "unreachablegcs://bucket/out"]) == 2
    err = one_line_error(capsys)
    assert "--output 'unreachablegcs://bucket/out' cannot be used" in err and "403 Forbidden" in err
    assert not (tmp_path / "out").exists()


def test_an_input_pattern_matching_no_object_is_a_config_error(object_store, capsys):
    assert run_job(["--input", f"{PREFIX}bucket/in/*.jsonl", "--output", f"{PREFIX}bucket/out"]) == 2
    assert "matches no file" in one_line_error(capsys)
    assert objects(object_store, f"{PREFIX}bucket") == {}  # nothing written


def test_object_inputs_are_checked_when_read_never_lost(object_store):
    """At launch an object-store input is only listed (it must match, its size bounds --num-shards); its
    bytes are checked when the job reads it: a cut .gz and an object that is not gzip become one
    truncated_input / unreadable_input rejection each, after the records before the fault."""
    first, second = gzip.compress(lines(50)), gzip.compress(lines(50, 50))
    upload(object_store, f"{PREFIX}bucket/in/cut.jsonl.gz", first + second[: len(second) // 2])
    upload(object_store, f"{PREFIX}bucket/in/fake.jsonl.gz", lines(3))  # named .gz, plain text inside
    upload(object_store, f"{PREFIX}bucket/in/ok.jsonl", lines(4))
    out = f"{PREFIX}bucket/out"
    assert run_job(["--input", f"{PREFIX}bucket/in/*", "--output", out, "--runner=FnApiRunner"]) == 0
    manifest = json.loads((object_store / "bucket" / "out" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] + counts["rejected"]
    assert manifest["rejected_by_reason"] == {errors.TRUNCATED_INPUT: 1, errors.UNREADABLE_INPUT: 1}
    assert 54 <= counts["written"] < 104  # ok.jsonl, the first member and part of the second


def test_no_lock_on_an_object_store_the_commit_check_holds(object_store, caplog):
    """Beam's filesystems have no atomic create-if-absent on object stores: no lock is taken (said in a
    warning), the marker is written first, and --overwrite still deletes only the tool's own files."""
    upload(object_store, f"{PREFIX}bucket/in/a.jsonl", lines(6))
    out = f"{PREFIX}bucket/out"
    with caplog.at_level(logging.WARNING, logger="chatshards"):
        assert run_job(["--input", f"{PREFIX}bucket/in/a.jsonl", "--output", out, "--num-shards", "2"]) == 0
    assert "no lock is taken" in caplog.text
    written = objects(object_store, out)
    assert LOCK_NAME not in written and MARKER_NAME in written
    upload(object_store, f"{out}/notes.txt", b"mine")
    assert run_job(["--input", f"{PREFIX}bucket/in/a.jsonl", "--output", out, "--num-shards", "3", "--overwrite"]) == 0
    after = objects(object_store, out)
    assert "notes.txt" in after and sorted(k for k in after if k.startswith("data/")) == [
        f"data/shard-0000{i}-of-00003.arrow" for i in range(3)]
