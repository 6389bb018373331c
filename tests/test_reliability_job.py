"""Issue 11, job side: never lose a user's data, never crash on one record, never hang, never report
success over a mixed dataset. Every test builds its inputs in a temp folder (``examples/`` files are
copied there when a real record is handy)."""
from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatshards_testing import REPO, run_job
from pipeline.launch.output_folder import LOCK_NAME, MARKER_NAME
from transforms import errors
from transforms import shard_format as sf

SHOP = REPO / "examples" / "data" / "shop_chat.jsonl"


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def manifest(out: Path) -> dict:
    return json.loads((out / sf.MANIFEST_NAME).read_text())


def rejected_lines(out: Path) -> list[dict]:
    """Every rejected line; each must be valid UTF-8 JSON."""
    return [json.loads(line) for path in sorted((out / sf.REJECTED_DIR).glob("*.jsonl"))
            for line in path.read_bytes().decode("utf-8").splitlines()]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_reconciles(out: Path) -> dict:
    m = manifest(out)
    counts = m["counts"]
    assert counts["read"] == counts["written"] + counts["rejected"]
    assert len(rejected_lines(out)) == counts["rejected"] == sum(m["rejected_by_reason"].values())
    return m


# -- 1. --overwrite deletes only what this tool wrote -----------------------------------------------

def test_inputs_inside_the_output_folder_are_refused_and_kept(tmp_path, capsys):
    """The issue's reproduction: --input 'proj/data/*' --output proj --overwrite emptied proj."""
    proj = tmp_path / "proj"
    train = proj / "data" / "train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_bytes(SHOP.read_bytes())
    before = files_under(proj)
    assert run_job(["--input", str(proj / "data" / "*"), "--output", str(proj), "--overwrite"]) == 2
    assert "where the job writes its output" in capsys.readouterr().err
    assert files_under(proj) == before


@pytest.mark.slow
def test_a_folder_chatshards_did_not_write_is_refused_even_with_overwrite(tmp_path, capsys):
    proj = tmp_path / "proj"
    write_jsonl(proj / "data" / "mine.jsonl", [chat(0)])
    (proj / "rejected").mkdir()
    before = files_under(proj)
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(3)])
    for extra in ([], ["--overwrite"]):
        assert run_job(["--input", str(data), "--output", str(proj), *extra]) == 2
        err = capsys.readouterr().err
        assert "not written by chatshards" in err and "nothing was deleted" in err
        assert "pass --overwrite" not in err  # the message never steers towards deleting
    assert files_under(proj) == before


def test_input_glob_that_would_match_the_jobs_own_files_is_a_config_error(tmp_path, capsys):
    """--input 'd/*' --output d: the second run's glob matched manifest.json, which was deleted."""
    d = tmp_path / "d"
    write_jsonl(d / "a.jsonl", [chat(i) for i in range(4)])
    assert run_job(["--input", str(d / "*"), "--output", str(d), "--overwrite"]) == 2
    assert "'manifest.json'" in capsys.readouterr().err
    assert run_job(["--input", str(d / "**"), "--output", str(d), "--overwrite"]) == 2
    assert sorted(files_under(d)) == ["a.jsonl"]
    # a glob that cannot match the job's files is fine, twice (the second run replaces the first)
    for _ in range(2):
        assert run_job(["--input", str(d / "*.jsonl"), "--output", str(d), "--overwrite"]) == 0
        assert assert_reconciles(d)["counts"]["read"] == 4
    assert (d / "a.jsonl").exists()


def test_overwrite_deletes_only_the_tools_own_files(tmp_path, capsys):
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(6)])
    assert run_job(["--input", str(data), "--output", str(out), "--num-shards", "3"]) == 0
    assert (out / MARKER_NAME).exists() and not (out / LOCK_NAME).exists()
    (out / "notes.txt").write_text("mine")
    (out / "audit" / "mine.txt").write_text("mine too")
    assert run_job(["--input", str(data), "--output", str(out), "--num-shards", "2", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "audit" / "mine.txt").exists()
    assert sorted(p.name for p in (out / sf.DATA_DIR).iterdir()) == [
        "shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]
    # a file of another name in data/ is not ours: refused, nothing deleted
    (out / sf.DATA_DIR / "extra.parquet").write_bytes(b"user data")
    before = files_under(out)
    assert run_job(["--input", str(data), "--output", str(out), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert files_under(out) == before


def test_a_dataset_without_marker_is_recognised_by_its_manifest(tmp_path):
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(3)])
    assert run_job(["--input", str(data), "--output", str(out)]) == 0
    (out / MARKER_NAME).unlink()  # a dataset written before the marker existed
    assert run_job(["--input", str(data), "--output", str(out), "--overwrite"]) == 0
    assert (out / MARKER_NAME).exists() and assert_reconciles(out)["counts"]["written"] == 3


# -- 2. one run owns an output folder at a time; commit only over exactly its files ---------------

def write_lock(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "token": "other",
                                             "started": "2026-01-01T00:00:00"}))


def test_a_folder_locked_by_a_live_run_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(0)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(out, other.pid)
        assert run_job(["--input", str(data), "--output", str(out)]) == 2
        assert "in use by another chatshards run" in capsys.readouterr().err
        assert sorted(files_under(out)) == [LOCK_NAME]
        write_lock(out, 12345, host="another-host")  # cannot be checked from here: held
        assert run_job(["--input", str(data), "--output", str(out)]) == 2
    finally:
        other.kill()
        other.wait()
    write_lock(out, other.pid)  # its process is gone now: a stale lock is taken over
    assert run_job(["--input", str(data), "--output", str(out)]) == 0
    assert not (out / LOCK_NAME).exists() and assert_reconciles(out)["counts"]["written"] == 1


STALLING_DRIVER = """
import sys, time
from pipeline.steps import reading
from pipeline.launch.main import main
def stalled(path, *args, **kwargs):
    time.sleep(3600)
    yield from ()
reading.read_file = stalled  # what read_file_batches calls, in the Beam graph and in the local engine
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("engine", [["--runner=FnApiRunner"], ["--workers", "2"]], ids=["beam", "local-engine"])
def test_two_jobs_into_one_output_the_second_is_refused(tmp_path, capsys, engine):
    """The issue's case: two jobs 0.2 s apart into one --output mixed their shards and both exited 0."""
    out = tmp_path / "out"
    big = write_jsonl(tmp_path / "in" / "big.jsonl", [chat(i) for i in range(200)])
    small = write_jsonl(tmp_path / "in" / "small.jsonl", [chat(i) for i in range(20)])
    driver = tmp_path / "driver.py"
    driver.write_text(STALLING_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, str(driver), "--input", str(big), "--output", str(out),
                              "--num-shards", "8", *engine], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_NAME).exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first job never took the lock"
            time.sleep(0.05)
        assert run_job(["--input", str(small), "--output", str(out), "--num-shards", "5", "--overwrite"]) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
        first.stderr.close()
    assert run_job(["--input", str(small), "--output", str(out), "--num-shards", "5", "--overwrite"]) == 0
    m = assert_reconciles(out)
    assert sorted(f"data/{p.name}" for p in (out / sf.DATA_DIR).iterdir()) == [s["path"] for s in m["shards"]]


def test_commit_refuses_a_folder_holding_another_runs_shards(tmp_path, monkeypatch, capsys):
    """Where no lock holds (gs://), a second writer's files in data/ stop the commit."""
    from pipeline.engines.beam import sink

    original = sink.WriteShardFn.process

    def write_and_intrude(self, element, num_shards):
        yield from original(self, element, num_shards)
        (Path(self.output) / sf.DATA_DIR / "shard-00007-of-00008.arrow").write_bytes(b"another run")

    monkeypatch.setattr(sink.WriteShardFn, "process", write_and_intrude)
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(5)])
    assert run_job(["--input", str(data), "--output", str(out), "--num-shards", "2"]) == 1
    assert re.search("refusing to commit.*did not write", capsys.readouterr().err)
    assert not (out / sf.MANIFEST_NAME).exists() and not (out / LOCK_NAME).exists()


# -- 3 and 4. truncated input and hostile records in a real job ------------------------------------

def test_truncated_gzip_and_hostile_records_are_rejected_and_counted(tmp_path):
    inputs = tmp_path / "in"
    records = [chat(i) for i in range(400)]
    first, second = (gzip.compress("".join(json.dumps(r) + "\n" for r in part).encode())
                     for part in (records[:200], records[200:]))
    inputs.mkdir()
    (inputs / "cut.jsonl.gz").write_bytes(first + second[: len(second) // 2])
    hostile = [
        '{"messages": [{"role": "user", "content": "x\\ud800"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "\\udfff", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        '{"system": "s\\ud800", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": '
        '[{"type": "function", "function": {"name": "f", "arguments": "{\\"x\\": \\"\\\\ud800\\"}"}}]}]}',
        '{"meta": {"k\\ud800": 1}, "messages": [{"role": "user", "content": "q"}, '
        '{"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "n": '
        + "7" * 5000 + "}",
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "m": '
        + "[" * 700 + "]" * 700 + "}",
        json.dumps(chat(1)),
    ]
    (inputs / "hostile.jsonl").write_text("\n".join(hostile) + "\n")
    array = json.dumps([chat(i) for i in range(100)], indent=1)
    (inputs / "cut_array.json").write_text(array[: array.index('"question 60"') - 40].rsplit("},", 1)[0] + "},")
    out = tmp_path / "out"
    assert run_job(["--input", str(inputs / "*"), "--output", str(out)]) == 0
    m = assert_reconciles(out)
    by_reason = m["rejected_by_reason"]
    assert by_reason[errors.TRUNCATED_INPUT] == 2  # the gzip member and the array
    assert by_reason[errors.INVALID_CONTENT] >= 4 and by_reason[errors.INVALID_JSON] >= 2
    hostile_rows = [r for r in rejected_lines(out) if r["source"].endswith("hostile.jsonl")]
    assert len(hostile_rows) == 7  # every hostile record rejected on its own; the good one is a row


def test_nul_byte_in_an_image_path_is_rejected_per_record(tmp_path):
    from test_vision_fixtures import qwen_dir, write_image

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "ok.png", (56, 56), (10, 200, 10))
    rows = [{"messages": [{"role": "user", "content": "<image>Green?"}, {"role": "assistant", "content": "Yes."}],
             "images": [name]} for name in ("ok.png", "ok\u0000.png", "ok.png\u0000../../etc/passwd")]
    write_jsonl(inputs / "v.jsonl", rows)
    out = tmp_path / "out"
    assert run_job(["--processor", qwen_dir(), "--input", str(inputs / "v.jsonl"), "--output", str(out)]) == 0
    m = assert_reconciles(out)
    assert m["counts"]["written"] == 1 and m["rejected_by_reason"] == {errors.BAD_IMAGE: 2}


# -- 5. configuration and environment errors: one line, exit 2, before any work -------------------

def config_error(args: list[str], capsys) -> str:
    assert run_job(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatshards: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_environment_errors_are_one_line_and_exit_2(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(0)])
    out = tmp_path / "out"
    fake_gz = tmp_path / "in" / "b.jsonl.gz"
    fake_gz.write_bytes(data.read_bytes())
    assert "gzip" in config_error(["--input", str(fake_gz), "--output", str(out)], capsys)
    assert "is a directory" in config_error(["--input", str(tmp_path / "in"), "--output", str(out)], capsys)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in config_error(["--input", str(data), "--output", str(a_file)], capsys)
    template = tmp_path / "latin1.jinja"
    template.write_bytes("{% for m in messages %}{{ m.content }} – é{% endfor %}".encode("latin-1", "replace"))
    assert "not UTF-8" in config_error(["--input", str(data), "--output", str(out), "--chat-template", str(template)],
                                       capsys)
    assert not out.exists()  # before any work


def test_an_unreadable_input_is_a_config_error(tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(0)])
    data.chmod(0)
    try:
        readable = os.access(data, os.R_OK)  # root reads it anyway: simulate the refusal below
        if not readable:
            assert "Permission denied" in config_error(["--input", str(data), "--output", str(tmp_path / "o")], capsys)
    finally:
        data.chmod(0o644)

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("pipeline.io.input_files.open_input", denied)
    assert "Permission denied" in config_error(["--input", str(data), "--output", str(tmp_path / "o")], capsys)
    assert not (tmp_path / "o").exists()


def test_unknown_flags_are_refused_with_a_suggestion(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(0)])
    base = ["--input", str(data), "--output", str(tmp_path / "o")]
    assert "did you mean --max-length?" in config_error([*base, "--max-lenght", "512"], capsys)
    assert "did you mean --num-shards?" in config_error([*base, "--num_shrads=2"], capsys)
    assert "unexpected argument 'b.jsonl'" in config_error([*base, "b.jsonl"], capsys)
    assert "unknown flag --frobnicate" in config_error([*base, "--frobnicate"], capsys)
    assert not (tmp_path / "o").exists()
    # Beam's own options still pass through
    assert run_job([*base, "--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers", "1"]) == 0


@pytest.mark.parametrize("args,message", [
    (["--max-len", "512"], "unknown flag --max-len; did you mean --max-length?"),
    (["--max_len=512"], "unknown flag --max_len; did you mean --max-length?"),
    (["--over"], "unknown flag --over"),
    (["--num-sh", "4"], "unknown flag --num-sh; did you mean --num-shards?"),
    (["--direct_num", "2"], "unknown flag --direct_num; did you mean --direct_num_workers?"),  # Beam's, abbreviated
])
def test_abbreviated_flags_are_refused_not_guessed(tmp_path, args, message):
    """argparse would read ``--max-len`` as ``--max-length`` (and ``--over`` as ``--overwrite``); Beam refuses
    abbreviations of its options, so chatshards does too: one rule for every flag of the command."""
    from pipeline.launch.cli import ConfigError, parse_args

    with pytest.raises(ConfigError) as caught:
        parse_args(["--input", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"), *args])
    assert str(caught.value).startswith(message), str(caught.value)
    full = parse_args(["--input", "a.jsonl", "--output", "o", "--max-length", "512", "--max_length=256"])
    assert full.tokenize_options.max_length == 256  # the full spellings, both forms, still work


@pytest.mark.parametrize("tool,args", [("audit", ["--no-rep"]), ("inspect", ["--ind", "0"])])
def test_dataset_tools_refuse_abbreviated_flags(tmp_path, capsys, tool, args):
    """``python -m pipeline.audit`` / ``pipeline.inspect`` follow the job's rule: an abbreviation is an error."""
    import importlib

    parser = importlib.import_module(f"pipeline.{tool}").build_parser()
    with pytest.raises(SystemExit) as caught:
        parser.parse_args([str(tmp_path), *args])
    assert caught.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


# -- 6. bounded cost ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--max-length", "3000000000"], "limit of 1,048,576"),
    (["--pad-to", "max_length", "--max-length", "1000000"], "--batch-size 67 or less"),
    (["--num-shards", "100000"], "limit of 10,000"),
    (["--num-shards", "9000"], "far more than"),
])
def test_cost_limits_fail_fast(tmp_path, capsys, args, message):
    data = write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(4)])
    assert message in config_error(["--input", str(data), "--output", str(tmp_path / "o"), *args], capsys)
    assert not (tmp_path / "o").exists()


def test_a_fifo_matched_by_input_is_rejected_never_read(tmp_path):
    inputs = tmp_path / "in"
    write_jsonl(inputs / "a.jsonl", [chat(i) for i in range(3)])
    os.mkfifo(inputs / "pipe.jsonl")  # nobody ever writes to it: reading it would block forever
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(inputs / "*.jsonl"), "--output", str(out),
                             "--runner=FnApiRunner"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FIFO" in result.stderr  # announced at launch
    m = assert_reconciles(out)
    assert m["counts"] == {"read": 4, "written": 3, "rejected": 1, "rows": 3}
    assert m["rejected_by_reason"] == {errors.UNREADABLE_INPUT: 1}
