"""Hostile round II, the local engine's processes (issue 19): real signals to the launcher and its forked workers,
a stalled worker, more workers than the machine has, a full disk and a read-only output on real tmpfs mounts.

Every case runs ``python -m pipeline`` as a user would (a subprocess of its own session). The job is slowed by a
chat template that loops a little per message (a few ms a record), so it is still building rows when the test
acts; the workers are found through ``CHATSHARDS_TRACE`` (each writes ``worker_setup_done`` with its pid).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatshards_testing import REPO

psutil = pytest.importorskip("psutil")

SLOW_CHATML = ("{% for m in messages %}{% for i in range(4000) %}{% endfor %}<|im_start|>{{ m.role }}\n"
               "{{ m.content }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
RECORDS = 6000


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory):
    """``(input file, template file)``: 6,000 chat records and a template that takes a few ms a record (the job
    runs for several seconds on 2 workers)."""
    folder = tmp_path_factory.mktemp("slow")
    data = folder / "in.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for i in range(RECORDS):
            handle.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                  {"role": "assistant", "content": f"answer {i}"}]}) + "\n")
    template = folder / "slow.jinja"
    template.write_text(SLOW_CHATML, encoding="utf-8")
    return data, template


def start_job(slow_job, out: Path, trace: Path, *extra: str) -> subprocess.Popen:
    data, template = slow_job
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHATSHARDS_TRACE": str(trace)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--input", str(data), "--output", str(out),
                             "--chat-template", str(template), "--no-audit", "--batch-size", "16", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def worker_pids(trace: Path, launcher: int, want: int = 2, timeout: float = 120.0) -> list[int]:
    """The pids of the launcher's workers once ``want`` of them are building rows (from the trace file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set()
        if trace.exists():
            for line in trace.read_text(encoding="utf-8").splitlines():
                event, pid, _ = line.split("\t")
                if event == "batch_done" and int(pid) != launcher:
                    pids.add(int(pid))
        if len(pids) >= want:
            return sorted(pids)
        time.sleep(0.1)
    raise AssertionError(f"the workers did not start within {timeout} s: {trace.read_text() if trace.exists() else ''}")


def gone(pid: int, timeout: float = 15.0) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def finish(process: subprocess.Popen, timeout: float = 120.0) -> tuple[int, list[str]]:
    """``(exit status, stderr lines that are not log noise)``."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, [line for line in err.strip().splitlines() if line.strip()]


def assert_nothing_left(out: Path) -> None:
    """A run that did not finish leaves only its marker: no manifest, shards, rejected files, .tmp or lock."""
    assert sorted(p.name for p in out.iterdir()) == [".chatshards-output"], sorted(p.name for p in out.rglob("*"))


@pytest.mark.slow
def test_kill_9_of_the_launcher_leaves_no_worker_behind(slow_job, tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.tsv"
    job = start_job(slow_job, out, trace, "--workers", "2")
    workers = worker_pids(trace, job.pid)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate(timeout=60)
    assert all(gone(pid) for pid in workers), [psutil.Process(p).status() for p in workers if psutil.pid_exists(p)]


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_the_job_in_one_line_and_clean_up(slow_job, tmp_path, signum, status):
    out, trace = tmp_path / "out", tmp_path / "trace.tsv"
    job = start_job(slow_job, out, trace, "--workers", "2")
    workers = worker_pids(trace, job.pid)
    if signum == signal.SIGINT:
        os.killpg(job.pid, signum)  # Ctrl-C reaches the whole process group, workers included
    else:
        os.kill(job.pid, signum)
    code, err = finish(job)
    assert code == status, err
    assert len(err) == 1 and err[0].startswith(f"chatshards: stopped by {signal.Signals(signum).name}; "), err
    assert all(gone(pid) for pid in workers)
    assert_nothing_left(out)


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_in_one_line(slow_job, tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.tsv"
    job = start_job(slow_job, out, trace, "--workers", "2")
    victim, other = worker_pids(trace, job.pid)
    os.kill(victim, signal.SIGKILL)
    code, err = finish(job)
    assert code == 1, err
    assert err == [line for line in err if line.startswith("chatshards: error: the job failed: ")] and len(err) == 1
    assert f"worker process {victim} was killed by SIGKILL" in err[0]
    assert gone(other)
    assert_nothing_left(out)


@pytest.mark.slow
def test_a_stopped_worker_is_reported_then_fails_the_job(slow_job, tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.tsv"
    job = start_job(slow_job, out, trace, "--workers", "2", "--worker-timeout", "4")
    victim, other = worker_pids(trace, job.pid)
    os.kill(victim, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, err = finish(job)
        waited = time.monotonic() - started
    finally:
        if psutil.pid_exists(victim):
            os.kill(victim, signal.SIGKILL)
    assert code == 1, err
    assert any(f"worker process {victim} has shown no sign of life" in line for line in err), err
    assert err[-1].startswith("chatshards: error: the job failed: ") and f"worker process {victim} showed no sign" in \
        err[-1], err
    assert 3 <= waited < 60
    assert gone(victim) and gone(other)
    assert_nothing_left(out)


def test_more_workers_than_the_machine_has_are_capped_with_a_message(slow_job, tmp_path):
    from pipeline.launch.engine_choice import worker_limit

    data, _ = slow_job
    limit, _ = worker_limit()
    small = tmp_path / "small.jsonl"
    small.write_text("".join(data.read_text(encoding="utf-8").splitlines(keepends=True)[:50]), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(small), "--output", str(tmp_path / "o"),
                             "--workers", "300", "--no-audit"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "--workers 300 is more than this machine runs well" in result.stderr
    assert f"using {limit}" in result.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["written"] == 50


# -- a full disk and a read-only output, on real tmpfs mounts -----------------------------------------------------

@pytest.fixture
def small_mount(tmp_path):
    """A 1 MiB tmpfs mounted at a fresh folder (root only; skips where mounting is not allowed)."""
    point = tmp_path / "mnt"
    point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_full_disk_fails_in_one_line_and_frees_what_the_run_wrote(small_mount, tmp_path):
    records = [{"messages": [{"role": "user", "content": f"question {i} " + "word " * 40},
                             {"role": "assistant", "content": f"answer {i} " + "reply " * 40}]} for i in range(4000)]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = small_mount / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(data), "--output", str(out),
                             "--workers", "1", "--no-audit"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    err = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(err) == 1 and err[0].startswith("chatshards: error: the job failed: No space left on device"), err
    assert_nothing_left(out)
    assert os.statvfs(small_mount).f_bfree * os.statvfs(small_mount).f_frsize > 900 * 1024  # the space came back


def test_a_read_only_output_is_a_configuration_error_at_launch(small_mount, tmp_path):
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")
    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(data), "--output",
                             str(small_mount / "out")], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    err = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(err) == 1 and "cannot be written: Read-only file system" in err[0], err
