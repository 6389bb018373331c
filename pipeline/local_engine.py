"""The local engine: the job's steps (:mod:`pipeline.steps`) run without Beam, in this process or in
worker processes forked from it.

Why: importing Apache Beam costs about 1.2 s per process and starting Beam's worker processes several
seconds more, more than a whole typical job's work. The default command (no Beam flags, local inputs and
output) runs here; every other command (``--runner``, Dataflow, ``gs://`` paths) runs the Beam graph
(:mod:`pipeline.graph`), which calls the same step functions.

Same bytes as the Beam graph (``tests/test_local_engine.py``): a shard holds the rows whose sort key maps
to it, sorted by that key, and a rejected file the same for rejections; the audit's accumulators merge
exactly in any order; the manifest's entries are sorted. Nothing depends on which process built which row.

Flow (``workers`` processes; 1: all in this process):

1. read: this process reads the input files in order (:func:`pipeline.steps.reading.read_file_batches`). In
   one process the batches go straight to step 2 (with ``--dedup`` they are spilled first); with workers
   they are spilled to ``<out>/.tmp/spill`` in small chunk files and only the chunk references are queued
   (a bounded queue: the reader never runs far ahead, memory stays flat). With ``--dedup`` every batch is
   spilled first and the conversation keys are computed (by forked workers, which then exit) and grouped
   here (:mod:`pipeline.steps.dedup`: only keys and positions are held, not records);
2. build: each worker parses and builds the rows of the batches it takes (:mod:`pipeline.steps.records`),
   writes them to row fragments (about 32 MiB each) and its rejections to rejected fragments, and keeps
   the audit's partial statistics; when the reader is done, each worker flushes and reports its part;
3. write: the shard count is known (``--num-shards``, or from the fragments' bytes); the shards and the
   rejected files are written, spread over the same workers (:func:`pipeline.steps.shards.write_shard`,
   :func:`pipeline.steps.rejected.write_rejected_file`);
4. commit: the audit files, then the manifest (:func:`pipeline.steps.manifest.commit_manifest`).

A worker that fails stops the job (no manifest is written) with the worker's error; a worker that dies
(killed, out of memory) too. Records never fail a worker: a record's failure is its rejection.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import traceback
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import pyarrow as pa

from pipeline.chunks import FRAGMENTS, REJECTED, SPILL, ChunkFile, chunks_by_shard, store_folder
from pipeline.plan import JobPlan
from pipeline.spill import CHUNK_BYTES, read_spilled, spill_batches
from pipeline.steps.audit import write_audit
from pipeline.steps.dedup import dedup_entries, drop_duplicates, duplicates_of_entries, find_duplicates
from pipeline.steps.fragments import FRAGMENT_BYTES, payload_schema, write_fragment
from pipeline.steps.manifest import commit_manifest
from pipeline.steps.reading import read_file_batches
from pipeline.steps.records import Progress, build_batch, parse_batch
from pipeline.steps.rejected import FRAGMENT_BYTES as REJECTED_FRAGMENT_BYTES
from pipeline.steps.rejected import rejection_line_bytes, write_rejected_file, write_rejected_fragment
from pipeline.steps.shards import auto_num_shards, write_shard
from pipeline.trace import mark
from transforms import shard_format as sf
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.duplicates import HashGroups

LOG = logging.getLogger("chatshards")

# Spill chunk files of the local engine: small, so the workers get their first batches while the reader
# goes on (a chunk reference is queued once its file is closed).
SPILL_CHUNK_BYTES = 256 * 1024
# Chunk references queued per worker before the reader waits (bounds the spill written ahead).
QUEUE_PER_WORKER = 8
_FINISH, _STOP = "finish", "stop"


class WorkerFailed(RuntimeError):
    """A worker process raised or died; the job stops without a manifest."""


@dataclass
class BuildPart:
    """What building rows left behind in one process: fragment files, rejected fragment files and the audit's
    partial statistics (``None`` with ``--no-audit``)."""

    fragments: list[ChunkFile] = field(default_factory=list)
    rejected: list[ChunkFile] = field(default_factory=list)
    audit: AuditAccumulator | None = None
    hash_groups: HashGroups | None = None


class PartWriter:
    """Buffers rows and rejections into fragment files (about ``FRAGMENT_BYTES`` / ``REJECTED_FRAGMENT_BYTES``
    each) and adds them to the audit's partial statistics; :meth:`finish` flushes and returns the
    :class:`BuildPart`."""

    def __init__(self, plan: JobPlan):
        self.schema = payload_schema(plan.shard_schema())
        self.fragments_folder = store_folder(plan.output, FRAGMENTS)
        self.rejected_folder = store_folder(plan.output, REJECTED)
        self.part = BuildPart()
        if plan.audit:
            self.part.audit = AuditAccumulator(plan.audit_probe, plan.spec.format_options)
            self.part.hash_groups = HashGroups()
        self._tables: list[pa.Table] = []
        self._table_bytes = 0
        self._rejections: list[dict] = []
        self._rejection_bytes = 0

    def add_rejections(self, items: Iterable[dict]) -> None:
        audit = self.part.audit
        for item in items:
            self._rejections.append(item)
            self._rejection_bytes += rejection_line_bytes(item)
            if audit is not None:
                audit.add_rejection(item)
        if self._rejection_bytes >= REJECTED_FRAGMENT_BYTES:
            self._flush_rejections()

    def add_rows(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.part.audit is not None:
            for row in rows:
                self.part.audit.add_row(row)
                self.part.hash_groups.add_row(row)
        table = sf.table_from_rows(rows, self.schema)
        self._tables.append(table)
        self._table_bytes += table.nbytes
        if self._table_bytes >= FRAGMENT_BYTES:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self._tables:
            tables, self._tables, self._table_bytes = self._tables, [], 0
            self.part.fragments.append(write_fragment(pa.concat_tables(tables), folder=self.fragments_folder))

    def _flush_rejections(self) -> None:
        if self._rejections:
            items, self._rejections, self._rejection_bytes = self._rejections, [], 0
            self.part.rejected.append(write_rejected_fragment(items, folder=self.rejected_folder))

    def finish(self) -> BuildPart:
        self._flush_rows()
        self._flush_rejections()
        part, self.part = self.part, BuildPart()
        return part


class RowBuilderStage(PartWriter):
    """Parses and builds batches of raw records into a :class:`PartWriter`. One per process."""

    def __init__(self, plan: JobPlan, *, dropped: frozenset = frozenset()):
        super().__init__(plan)
        self.format_options = plan.spec.format_options
        self.dropped = dropped
        self.builder = plan.spec.create_builder()

    def add(self, batch: list) -> None:
        """Parse and build one batch of raw records (duplicates dropped first)."""
        parsed, rejections = parse_batch(drop_duplicates(batch, self.dropped), self.format_options)
        self.add_rejections(rejections)
        rows, rejections = build_batch(self.builder, parsed)
        self.add_rejections(rejections)
        self.add_rows(rows)
        mark("batch_done")


# ---------------------------------------------------------------------------------------------------------
# worker processes


def _write_task(plan: JobPlan, task: tuple) -> tuple:
    kind, index, chunks, count = task
    if kind == "shard":
        return kind, write_shard(chunks, output=plan.output, index=index, num_shards=count, padded=plan.padded,
                                 extra_fields=plan.extra_fields, packing=plan.packing)
    return kind, write_rejected_file(chunks, output=plan.output, index=index, num_files=count)


def _key_worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results) -> None:
    """A forked worker of the ``--dedup`` key pass: the dedup entries of each spilled batch of ``tasks``
    (:func:`pipeline.steps.dedup.dedup_entries`) until ``finish``."""
    try:
        while True:
            task = tasks.get()
            if task == _FINISH:
                break
            results.put(("keys", list(dedup_entries(task, plan.spec.format_options))))
        results.put(("part", None))
    except BaseException:  # reported to the parent, which stops the job
        results.put(("error", f"worker {os.getpid()}: {traceback.format_exc()}"))


def _worker_main(plan: JobPlan, dropped: frozenset, tasks, writes, results) -> None:
    """A forked worker: builds rows from the spilled batches of ``tasks`` until ``finish`` (then reports its
    :class:`BuildPart`), then writes the shards and rejected files of ``writes`` until ``stop``."""
    # The Rust tokenizer's thread pool does not exist in a forked child: its parallel paths would wait
    # forever for it, so they are switched off here (whatever the inherited TOKENIZERS_PARALLELISM says).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        mark("worker_setup_start")
        stage = RowBuilderStage(plan, dropped=dropped)
        mark("worker_setup_done")
        while True:
            task = tasks.get()
            if task == _FINISH:
                break
            batch = read_spilled(task)
            stage.add(batch)
            results.put(("progress", len(batch)))
        results.put(("part", stage.finish()))
        while True:
            task = writes.get()
            if task == _STOP:
                break
            results.put(("written", _write_task(plan, task)))
    except BaseException:  # reported to the parent, which stops the job
        results.put(("error", f"worker {os.getpid()}: {traceback.format_exc()}"))


class _Workers:
    """``n`` forked worker processes around two task queues and one result queue."""

    def __init__(self, plan: JobPlan, n: int, dropped: frozenset, *, target=_worker_main):
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
            self.put(_FINISH, on_result=on_result)
        self.wait_for(len(self.processes), "part", on_result)

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


# ---------------------------------------------------------------------------------------------------------
# the job


def _batches(plan: JobPlan) -> Iterator[list]:
    for path in plan.files:
        yield from read_file_batches(path, plan.batch_size)


class _Counter:
    def __init__(self):
        self.read = 0

    def counted(self, batches: Iterable[list]) -> Iterator[list]:
        for batch in batches:
            self.read += len(batch)
            yield batch


def run_locally(plan: JobPlan, *, workers: int = 1) -> dict:
    """Run the job of ``plan`` without Beam on ``workers`` processes (1: this process only); returns the
    manifest. ``plan.files`` must be the matched local input files and ``plan.output`` a local folder that
    :func:`pipeline.main.claim_output` prepared. Raises :class:`WorkerFailed` (and writes no manifest) when a
    worker fails or dies."""
    if plan.files is None:
        raise ValueError("the local engine needs the input files matched at launch")
    counter = _Counter()
    batches = counter.counted(_batches(plan))
    dropped: frozenset = frozenset()
    duplicate_rejections: list[dict] = []
    refs = None
    if plan.dedup:  # keys first, over the spilled records (pipeline.steps.dedup)
        refs = list(spill_batches(batches, folder=store_folder(plan.output, SPILL),
                                  chunk_bytes=SPILL_CHUNK_BYTES if workers > 1 else CHUNK_BYTES))
        if workers > 1:
            found, duplicate_rejections = duplicates_of_entries(_keys_in_workers(plan, refs, workers))
        else:
            found, duplicate_rejections = find_duplicates(refs, plan.spec.format_options)
        dropped = frozenset(found)
    if workers <= 1:
        parts, entries = _run_in_process(plan, batches if refs is None else map(read_spilled, refs), dropped,
                                         duplicate_rejections)
    else:
        if refs is None:
            refs = spill_batches(batches, folder=store_folder(plan.output, SPILL), chunk_bytes=SPILL_CHUNK_BYTES)
        parts, entries = _run_in_workers(plan, refs, dropped, duplicate_rejections, workers)
    shards, rejected_files, num_shards = entries
    sections = []
    if plan.audit:
        audits = [part.audit for part in parts]
        groups = HashGroups()
        for part in parts:
            groups.merge(part.hash_groups)
        sections.append(write_audit(output=plan.output, manifest_base=plan.manifest_base, probe=plan.audit_probe,
                                    format_options=plan.spec.format_options, tokenizer=plan.spec.tokenizer,
                                    trust_remote_code=plan.spec.trust_remote_code, partials=audits,
                                    duplicates=groups.summary(), packing=plan.packing, shards=shards))
    return commit_manifest(output=plan.output, manifest_base=plan.manifest_base, padded=plan.padded,
                           extra_fields=plan.extra_fields, shards=shards, rejected_files=rejected_files,
                           read_count=counter.read, num_shards=num_shards, extra_sections=sections,
                           packing=plan.packing)


def _shard_count(plan: JobPlan, parts: list[BuildPart]) -> int:
    if plan.num_shards is not None:
        return plan.num_shards
    return auto_num_shards(sum(fragment.nbytes for part in parts for fragment in part.fragments))


def _write_tasks(parts: list[BuildPart], num_shards: int) -> list[tuple]:
    """``(kind, index, chunks, count)`` for every shard and every rejected file that has chunks."""
    tasks = []
    for kind, files in (("shard", [f for part in parts for f in part.fragments]),
                        ("rejected", [f for part in parts for f in part.rejected])):
        by_index: dict[int, list] = {}
        for index, chunk in chunks_by_shard((chunk for f in files for chunk in f.chunks), num_shards):
            by_index.setdefault(index, []).append(chunk)
        tasks.extend((kind, index, chunks, num_shards) for index, chunks in sorted(by_index.items()))
    return tasks


def _collect(written: Iterable[tuple]) -> tuple[list, list]:
    shards, rejected_files = [], []
    for kind, entry in written:
        if entry is not None:
            (shards if kind == "shard" else rejected_files).append(entry)
    return shards, rejected_files


def _run_in_process(plan: JobPlan, batches: Iterable[list], dropped: frozenset, duplicate_rejections: list):
    mark("worker_setup_start")
    stage = RowBuilderStage(plan, dropped=dropped)
    mark("worker_setup_done")
    stage.add_rejections(duplicate_rejections)
    progress = Progress(who="this process")
    for batch in batches:
        stage.add(batch)
        progress.add(len(batch))
    parts = [stage.finish()]
    num_shards = _shard_count(plan, parts)
    shards, rejected_files = _collect(_write_task(plan, task) for task in _write_tasks(parts, num_shards))
    return parts, (shards, rejected_files, num_shards)


def _keys_in_workers(plan: JobPlan, refs: list, n: int) -> list:
    """The dedup entries of every spilled batch, computed by ``n`` forked workers (which then exit)."""
    pool = _Workers(plan, n, frozenset(), target=_key_worker_main)
    entries: list = []

    def on_result(kind, value):
        if kind == "keys":
            entries.extend(value)

    try:
        pool.build_phase(refs, on_result)
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return entries


def _run_in_workers(plan: JobPlan, refs: Iterable, dropped: frozenset, duplicate_rejections: list, n: int):
    # Forked workers inherit the loaded tokenizer; its own threads are off in them (_worker_main: one
    # process per core already uses every core).
    pool = _Workers(plan, n, dropped)
    progress = Progress(who=f"{n} worker processes")
    parts: list[BuildPart] = []
    written: list[tuple] = []

    def on_result(kind, value):
        if kind == "progress":
            progress.add(value)
        elif kind == "part":
            parts.append(value)
        elif kind == "written":
            written.append(value)

    try:
        pool.build_phase(refs, on_result)
        if duplicate_rejections:  # written here, as one more part
            writer = PartWriter(plan)
            writer.add_rejections(duplicate_rejections)
            parts.append(writer.finish())
        num_shards = _shard_count(plan, parts)
        tasks = _write_tasks(parts, num_shards)
        for task in tasks:
            pool.writes.put(task)
        for _ in range(n):
            pool.writes.put(_STOP)
        pool.wait_for(len(tasks), "written", on_result)
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    shards, rejected_files = _collect(written)
    return parts, (shards, rejected_files, num_shards)
