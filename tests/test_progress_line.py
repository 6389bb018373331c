"""The local engine's progress line (pipeline/engines/local/progress.py): records, bytes of the total, rate,
ETA; rewritten in place on a terminal, a plain line now and then elsewhere, nothing with ``--quiet``."""
from __future__ import annotations

import io
import json
import re

from pipeline.engines.local import progress as progress_module
from pipeline.engines.local.progress import ProgressLine
from pipeline.launch.main import main as default_command  # the local engine


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_terminal_line_is_rewritten_in_place_with_rate_and_eta():
    clock, stream = Clock(), io.StringIO()
    line = ProgressLine(total_bytes=2_000_000, stream=stream, tty=True, clock=clock, width=200)
    line.records_read(100)
    line.records_built(50)
    clock.now += 10
    line.read_bytes(1_000_000)  # half the bytes read, half of what was read built: a quarter done
    text = stream.getvalue()
    assert text == "\r\x1b[2Kchatshards: 50 records · 1.0 MB of 2.0 MB read (50%) · 5 records/s · ETA 0:30"
    clock.now += 0.1
    line.records_built(1)  # within a quarter second: not rewritten
    assert stream.getvalue() == text
    line.phase("writing 4 shard(s)")  # shown at once on a terminal
    assert stream.getvalue().endswith("writing 4 shard(s) (0:10 so far)")
    line.close()
    assert stream.getvalue().endswith("\r\x1b[2K")  # cleared before the summary


def test_a_terminal_line_is_cut_to_the_terminal_width():
    clock, stream = Clock(), io.StringIO()
    line = ProgressLine(total_bytes=2_000_000, stream=stream, tty=True, clock=clock, width=40)
    line.records_read(10)
    line.records_built(10)
    clock.now += 10
    line.read_bytes(1_000_000)
    assert stream.getvalue() == "\r\x1b[2K" + "chatshards: 10 records · 1.0 MB of 2.0 MB read (50%) · 1 records/s"[:40]


def test_plain_lines_come_at_most_every_interval_and_quiet_prints_nothing():
    clock, stream = Clock(), io.StringIO()
    line = ProgressLine(total_bytes=1000, stream=stream, tty=False, clock=clock, plain_every_s=30)
    for _ in range(10):
        clock.now += 5
        line.records_read(10)
        line.read_bytes(line.bytes_done + 100)
        line.records_built(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in stream.getvalue()  # 50 s: one line (at 30 s)
    assert lines[0].startswith("chatshards: 50 records · 600 B of 1.0 kB read (60%)")
    quiet = io.StringIO()
    off = ProgressLine(total_bytes=1000, stream=quiet, enabled=False, tty=True, clock=clock)
    off.records_built(5)
    off.phase("audit")
    off.close()
    assert quiet.getvalue() == ""


def test_a_local_job_reports_its_progress_on_stderr(tmp_path, capsys, monkeypatch):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(50)))
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)  # every update (stderr is no terminal here)
    args = ["--input", str(data), "--output", str(tmp_path / "out"), "--workers", "1", "--batch-size", "16"]
    assert default_command(args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if re.match(r"chatshards: \d+ records", line)]
    size = progress_module._size(data.stat().st_size)
    assert lines and lines[-1].startswith(f"chatshards: 50 records · {size} of {size} read (100%)")
    assert any("writing 1 shard(s)" in line for line in lines)
    built = [int(re.match(r"chatshards: (\d+) records", line).group(1)) for line in lines]
    assert built == sorted(built) and 16 in built  # batch by batch
    assert default_command([*args, "--overwrite", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
