"""How a job ends on the terminal (pipeline/launch/main.py, docs/cli.md "Exit statuses and messages").

* a job that writes no row (every record rejected, or an empty input) exits 3, with its manifest, rejected/
  and audit written so the audit explains why;
* above 10% rejected: a warning after the summary; ``--max-rejected N|P%`` fails the job (exit 3) above a
  limit, and changes no byte of the output;
* ``--quiet`` prints no summary and no progress; Beam's own log lines only with ``--verbose``;
* a missing required flag or a bad value: one line, no usage.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from pipeline.launch.main import DATA_FAILED, data_problem
from pipeline.launch.main import main as default_command  # no Beam flag: the local engine
from transforms import shard_format as sf


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def no_answer(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}]}  # rejected: no_assistant_turn


def write(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(".chatshards.lock")}


def test_a_job_that_rejects_every_record_exits_3_with_its_manifest_and_audit(tmp_path, capsys):
    data = write(tmp_path / "in.jsonl", [no_answer(i) for i in range(4)])
    out = tmp_path / "out"
    assert default_command(["--input", data, "--output", str(out)]) == DATA_FAILED == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chatshards: error: no row was written: all 4 records read were rejected" in err
    assert "no_assistant_turn=4" in err and "report.html#rejections" in err
    manifest = json.loads((out / sf.MANIFEST_NAME).read_text())
    assert manifest["counts"] == {"read": 4, "written": 0, "rejected": 4, "rows": 0}
    assert (out / "audit" / "report.html").exists() and (out / "audit" / "stats.json").exists()
    assert sum(1 for _ in (out / "rejected").glob("*.jsonl")) == 1


def test_an_empty_input_file_exits_3(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert default_command(["--input", str(empty), "--output", str(out), "--quiet"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""  # --quiet: no summary
    assert "the inputs hold no records, so no row was written" in captured.err
    assert json.loads((out / sf.MANIFEST_NAME).read_text())["counts"]["read"] == 0


def test_many_rejections_warn_and_max_rejected_fails_without_changing_the_output(tmp_path, capsys):
    data = write(tmp_path / "in.jsonl", [chat(i) if i % 4 else no_answer(i) for i in range(20)])  # 5 of 20 rejected
    plain, limited = tmp_path / "plain", tmp_path / "limited"
    assert default_command(["--input", data, "--output", str(plain)]) == 0
    captured = capsys.readouterr()
    assert "read 20 records, wrote 15 rows" in captured.out
    assert "chatshards: warning: 25.0% of the records read were rejected (5 of 20: no_assistant_turn=5)" in captured.err
    for limit, status in (("5", 0), ("25%", 0), ("4", 3), ("24.9%", 3)):
        assert default_command(["--input", data, "--output", str(limited), "--overwrite", "--max-rejected", limit,
                                "--quiet"]) == status, limit
        err = capsys.readouterr().err
        assert ("more than --max-rejected" in err) == (status == 3), (limit, err)
        assert digest(limited) == digest(plain)  # the limit decides the exit status only
    data_ok = write(tmp_path / "ok.jsonl", [chat(i) for i in range(20)])
    assert default_command(["--input", data_ok, "--output", str(tmp_path / "ok"), "--max-rejected", "0"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "5x", "101%", "%", "1.5"])
def test_bad_max_rejected_values_are_configuration_errors(tmp_path, capsys, value):
    data = write(tmp_path / "in.jsonl", [chat(0)])
    assert default_command(["--input", data, "--output", str(tmp_path / "out"), f"--max-rejected={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chatshards: error: --max-rejected takes a count") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_data_problem_rules():
    counts = {"read": 10, "written": 8, "rejected": 2, "rows": 8}
    assert data_problem(counts, None) is None
    assert data_problem(counts, 2) is None and data_problem(counts, 0.2) is None
    assert "more than --max-rejected 1 allows" in data_problem(counts, 1)
    assert "more than --max-rejected 19.9% allows" in data_problem(counts, 0.199)
    # rows split from fewer records (multi-turn): rows count, not records
    assert data_problem({"read": 3, "written": 2, "rejected": 1, "rows": 5}, None) is None
    assert "no row was written" in data_problem({"read": 3, "written": 0, "rejected": 3, "rows": 0}, None)


@pytest.mark.parametrize("argv, expected", [
    ([], "--input and --output are required, e.g. python -m pipeline --input 'data/*.jsonl' --output out/"),
    (["--output", "x"], "--input is required"),
    (["--input", "a", "--output", "b", "--truncation", "middle"], "error: --truncation: invalid choice: 'middle'"),
    (["--input", "a", "--output", "b", "--max-length", "ten"], "error: --max-length: invalid int value: 'ten'"),
])
def test_argument_errors_are_one_line_without_the_usage(capsys, argv, expected):
    assert default_command(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("chatshards: error: ") and expected in captured.err
    assert "usage:" not in captured.err and "--help lists every flag" in captured.err


def test_quiet_and_verbose_contradict(tmp_path, capsys):
    data = write(tmp_path / "in.jsonl", [chat(0)])
    assert default_command(["--input", data, "--output", str(tmp_path / "o"), "--quiet", "--verbose"]) == 2
    assert "--quiet and --verbose contradict" in capsys.readouterr().err


def test_beam_logs_are_hidden_unless_verbose(tmp_path):
    from pipeline.launch.main import _quiet_beam_logs

    beam = logging.getLogger("apache_beam.runners.portability.local_job_service")  # forwards worker lines
    root = logging.getLogger()
    level = root.level
    try:
        _quiet_beam_logs(False)
        assert not beam.isEnabledFor(logging.WARNING) and beam.isEnabledFor(logging.ERROR)
        _quiet_beam_logs(True)
        assert beam.isEnabledFor(logging.INFO)
    finally:
        logging.getLogger("apache_beam").setLevel(logging.NOTSET)
        root.setLevel(level)
