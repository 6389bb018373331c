"""The local engine's worker processes: forked from the launcher with the tokenizer loaded, around two task
queues (spilled batches to build, then shards and rejected files to write) and one result queue.

Fault handling lives here, apart from the job's phases (:mod:`pipeline.engines.local.engine`):

* a worker that raises reports its traceback and the pool stops the job (:class:`WorkerFailed`);
* a worker that dies (killed, out of memory) is noticed while the launcher waits, and stops the job too;
* a worker that shows no sign of life (its heartbeat thread is silent: the process is stopped, swapped out or
  stuck holding the interpreter) is reported on stderr after a quarter of ``--worker-timeout``, and stops
  the job once the whole timeout has passed;
* workers never outlive the launcher: each asks the kernel to kill it when its parent dies
  (``PR_SET_PDEATHSIG`` on Linux) and its heartbeat thread also exits the process once the parent is gone
  (other systems), so ``kill -9`` of the launcher leaves no orphan; they ignore ``SIGINT`` (Ctrl-C reaches
  the whole process group: the launcher stops them and cleans up).

Records never fail a worker: a record's failure is its rejection.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Iterable

from pipeline.engines.local.parts import RowBuilderStage, run_write_task
from pipeline.io.spill import read_spilled
from pipeline.io.trace import mark
from pipeline.launch.plan import JobPlan
from pipeline.steps.dedup import dedup_entries

LOG = logging.getLogger("chatshards")

# Chunk references queued per worker before the reader waits (bounds the spill written ahead).
QUEUE_PER_WORKER = 8
FINISH, STOP = "finish", "stop"
# A worker's heartbeat thread says it is alive this often (and checks that its parent still is).
HEARTBEAT_S = 1.0
DEFAULT_TIMEOUT_S = 300.0
_PR_SET_PDEATHSIG = 1


class WorkerFailed(RuntimeError):
    """A worker process raised or died; the job stops without a manifest."""


def _tie_to_parent(parent: int, results) -> None:
    """In a forked worker: die with the launcher (``parent``), ignore ``SIGINT``, and start the heartbeat thread
    that tells the launcher this process is alive."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the heartbeat thread below still watches the parent
            pass
    if os.getppid() != parent:  # the parent died before the tie was made
        os._exit(1)
    pid = os.getpid()

    def beat():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            results.put(("alive", pid))
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, name="chatshards-heartbeat", daemon=True).start()


def key_worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results, parent: int) -> None:
    """A forked worker of the ``--dedup`` key pass: the dedup entries of each spilled batch of ``tasks``
    (:func:`pipeline.steps.dedup.dedup_entries`) until ``finish``."""
    _tie_to_parent(parent, results)
    try:
        while True:
            task = tasks.get()
            if task == FINISH:
                break
            results.put(("keys", list(dedup_entries(task, plan.record_spec()))))
        results.put(("part", None))
    except BaseException:  # reported to the parent, which stops the job
        results.put(("error", f"worker {os.getpid()}: {traceback.format_exc()}"))


def build_worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results, parent: int) -> None:
    """A forked worker: builds rows from the spilled batches of ``tasks`` until ``finish`` (then reports its
    :class:`~pipeline.engines.local.parts.BuildPart`), then writes the shards and rejected files of ``writes``
    until ``stop``."""
    _tie_to_parent(parent, results)
    # The Rust tokenizer's thread pool does not exist in a forked child: its parallel paths would wait
    # forever for it, so they are switched off here (whatever the inherited TOKENIZERS_PARALLELISM says).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        mark("worker_setup_start")
        stage = RowBuilderStage(plan, dropped=dropped)
        mark("worker_setup_done")
        while True:
            task = tasks.get()
            if task == FINISH:
                break
            batch = read_spilled(task)
            stage.add(batch)
            results.put(("progress", len(batch)))
        results.put(("part", stage.finish()))
        while True:
            task = writes.get()
            if task == STOP:
                break
            results.put(("written", run_write_task(plan, task)))
    except BaseException:  # reported to the parent, which stops the job
        results.put(("error", f"worker {os.getpid()}: {traceback.format_exc()}"))


def death_cause(exitcode: int) -> str:
    """How a worker process ended, in words (``exitcode`` as :attr:`multiprocessing.Process.exitcode` gives it)."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    return f"exited with status {exitcode}"


class WorkerPool:
    """``n`` forked worker processes around two task queues and one result queue.

    ``timeout``: seconds a worker may go without a heartbeat before the job fails (``--worker-timeout``)."""

    def __init__(self, plan: JobPlan, n: int, dropped: frozenset, *, target=build_worker_main,
                 timeout: float = DEFAULT_TIMEOUT_S):
        context = multiprocessing.get_context("fork")
        self.tasks = context.Queue(maxsize=QUEUE_PER_WORKER * n)
        self.writes = context.Queue()
        self.results = context.Queue()
        self.timeout = timeout
        parent = os.getpid()
        self.processes = [context.Process(target=target, daemon=True,
                                          args=(plan, dropped, self.tasks, self.writes, self.results, parent))
                          for _ in range(n)]
        for process in self.processes:
            process.start()
        started = time.monotonic()
        self.last_seen = {process.pid: started for process in self.processes}
        self.warned: set[int] = set()

    def put(self, task, *, on_result) -> None:
        """Queue ``task``; while the queue is full, handle results (so a failed worker is noticed)."""
        while True:
            try:
                self.tasks.put(task, timeout=0.2)
                return
            except queue.Full:
                self.drain(on_result, timeout=0.0)
                self.check_alive()

    def drain(self, on_result, *, timeout: float) -> bool:
        """Handle the results available within ``timeout`` seconds; False when none came."""
        try:
            message = self.results.get(timeout=timeout) if timeout > 0 else self.results.get_nowait()
        except queue.Empty:
            return False
        while True:
            kind, value = message
            if kind == "alive":
                self.last_seen[value] = time.monotonic()
            elif kind == "error":
                self.terminate()
                raise WorkerFailed(value)
            else:
                on_result(kind, value)
            try:
                message = self.results.get_nowait()
            except queue.Empty:
                return True

    def check_alive(self) -> None:
        """Stop the job (:class:`WorkerFailed`) when a worker died or has been silent for ``timeout`` seconds;
        say on stderr when one has been silent for a quarter of it."""
        now = time.monotonic()
        for process in self.processes:
            if process.exitcode not in (None, 0):
                self.terminate()
                raise WorkerFailed(f"worker process {process.pid} {death_cause(process.exitcode)}")
            if process.exitcode is not None:
                continue
            silent = now - self.last_seen[process.pid]
            if silent >= self.timeout:
                self.terminate()
                raise WorkerFailed(f"worker process {process.pid} showed no sign of life for {silent:.0f} s "
                                   "(stopped, swapped out or stuck; --worker-timeout)")
            if silent >= self.timeout / 4 and process.pid not in self.warned:
                self.warned.add(process.pid)
                LOG.warning("chatshards: worker process %d has shown no sign of life for %.0f s; the job fails "
                            "after %.0f s (--worker-timeout)", process.pid, silent, self.timeout)

    def build_phase(self, refs: Iterable, on_result) -> None:
        """Queue every spilled batch of ``refs``, then one ``finish`` per worker, and handle results until
        each worker has reported its part (``"part"``)."""
        for ref in refs:
            self.put(ref, on_result=on_result)
        for _ in self.processes:
            self.put(FINISH, on_result=on_result)
        self.wait_for(len(self.processes), "part", on_result)

    def write_phase(self, tasks: list, on_result) -> None:
        """Queue every write task, then one ``stop`` per worker, and handle results until each task is written."""
        for task in tasks:
            self.writes.put(task)
        for _ in self.processes:
            self.writes.put(STOP)
        self.wait_for(len(tasks), "written", on_result)

    def wait_for(self, count: int, kind: str, on_result) -> None:
        """Handle results until ``count`` messages of ``kind`` came."""
        seen = [0]

        def counting(k, value):
            if k == kind:
                seen[0] += 1
            on_result(k, value)

        while seen[0] < count:
            self.drain(counting, timeout=0.5)
            self.check_alive()

    def join(self) -> None:
        for process in self.processes:
            process.join()

    def terminate(self) -> None:
        """Stop every worker still running (``SIGKILL``: a stopped process does not act on ``SIGTERM``) and
        wait for it."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join(timeout=5)
