"""The local engine's worker processes: forked from the launcher with the tokenizer loaded, around two task
queues (spilled batches to build, then shards and rejected files to write) and one result queue.

Fault handling lives here, apart from the job's phases (:mod:`pipeline.engines.local.engine`): a worker that
raises reports its traceback and the pool stops the job (:class:`WorkerFailed`); a worker that dies (killed,
out of memory) is noticed while the launcher waits, and stops the job too. Records never fail a worker: a
record's failure is its rejection.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import traceback
from typing import Iterable

from pipeline.engines.local.parts import RowBuilderStage, run_write_task
from pipeline.io.spill import read_spilled
from pipeline.io.trace import mark
from pipeline.launch.plan import JobPlan
from pipeline.steps.dedup import dedup_entries

# Chunk references queued per worker before the reader waits (bounds the spill written ahead).
QUEUE_PER_WORKER = 8
FINISH, STOP = "finish", "stop"


class WorkerFailed(RuntimeError):
    """A worker process raised or died; the job stops without a manifest."""


def key_worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results) -> None:
    """A forked worker of the ``--dedup`` key pass: the dedup entries of each spilled batch of ``tasks``
    (:func:`pipeline.steps.dedup.dedup_entries`) until ``finish``."""
    try:
        while True:
            task = tasks.get()
            if task == FINISH:
                break
            results.put(("keys", list(dedup_entries(task, plan.spec.format_options))))
        results.put(("part", None))
    except BaseException:  # reported to the parent, which stops the job
        results.put(("error", f"worker {os.getpid()}: {traceback.format_exc()}"))


def build_worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results) -> None:
    """A forked worker: builds rows from the spilled batches of ``tasks`` until ``finish`` (then reports its
    :class:`~pipeline.engines.local.parts.BuildPart`), then writes the shards and rejected files of ``writes``
    until ``stop``."""
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


class WorkerPool:
    """``n`` forked worker processes around two task queues and one result queue."""

    def __init__(self, plan: JobPlan, n: int, dropped: frozenset, *, target=build_worker_main):
        context = multiprocessing.get_context("fork")
        self.tasks = context.Queue(maxsize=QUEUE_PER_WORKER * n)
        self.writes = context.Queue()
        self.results = context.Queue()
        self.processes = [context.Process(target=target, args=(plan, dropped, self.tasks, self.writes, self.results),
                                          daemon=True)
                          for _ in range(n)]
        for process in self.processes:
            process.start()

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
            if kind == "error":
                self.terminate()
                raise WorkerFailed(value)
            on_result(kind, value)
            try:
                message = self.results.get_nowait()
            except queue.Empty:
                return True

    def check_alive(self) -> None:
        for process in self.processes:
            if process.exitcode not in (None, 0):
                self.terminate()
                raise WorkerFailed(f"worker process {process.pid} died (exit code {process.exitcode}); "
                                   "out of memory?")

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
            if not self.drain(counting, timeout=0.5):
                self.check_alive()

    def join(self) -> None:
        for process in self.processes:
            process.join()

    def terminate(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
