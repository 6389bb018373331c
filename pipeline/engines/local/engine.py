"""The local engine: the job's steps (:mod:`pipeline.steps`) run without Beam, in this process or in
worker processes forked from it (:mod:`pipeline.engines.local.workers`).

Why: importing Apache Beam costs about 1.2 s per process and starting Beam's worker processes several
seconds more, more than a whole typical job's work. The default command (no Beam flags, local inputs and
output) runs here; every other command (``--runner``, Dataflow, ``gs://`` paths) runs the Beam graph
(:mod:`pipeline.engines.beam.graph`), which calls the same step functions.

Same bytes as the Beam graph (``tests/test_local_engine.py``): a shard holds the rows whose sort key maps
to it, sorted by that key, and a rejected file the same for rejections; the audit's accumulators merge
exactly in any order; the manifest's entries are sorted. Nothing depends on which process built which row.

The job's phases, in the order :func:`run_locally` runs them (``workers`` processes; 1: all in this process):

1. read: this process reads the input files in order (:func:`pipeline.steps.reading.read_file_batches`). In
   one process the batches go straight to step 3 (with ``--dedup`` they are spilled first); with workers
   they are spilled to ``<out>/.tmp/spill`` in small chunk files and only the chunk references are queued
   (a bounded queue: the reader never runs far ahead, memory stays flat);
2. dedup (``--dedup``): every batch is spilled first, the conversation keys are computed (by forked
   workers, which then exit) and grouped here (:mod:`pipeline.steps.dedup`: only keys and positions are
   held, not records);
3. build: each process parses and builds the rows of the batches it takes (:mod:`pipeline.steps.records`),
   writes them to row fragments and its rejections to rejected fragments, and keeps the audit's partial
   statistics (:class:`~pipeline.engines.local.parts.RowBuilderStage`);
4. write: the shard count is known (``--num-shards``, or from the fragments' bytes); the shards and the
   rejected files are written, spread over the same processes (:func:`pipeline.steps.shards.write_shard`,
   :func:`pipeline.steps.rejected.write_rejected_file`);
5. audit: the partial statistics merged, the audit files written (:func:`pipeline.steps.audit.write_audit`);
6. commit: the manifest, last (:func:`pipeline.steps.manifest.commit_manifest`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Iterator

from pipeline.engines.local.parts import (
    BuildPart,
    PartWriter,
    RowBuilderStage,
    collect_written,
    run_write_task,
    shard_count,
    write_tasks,
)
from pipeline.engines.local.progress import ProgressLine
from pipeline.engines.local.workers import DEFAULT_TIMEOUT_S, WorkerPool, key_worker_main
from pipeline.io.chunks import SPILL, store_folder
from pipeline.io.spill import CHUNK_BYTES, read_spilled, spill_batches
from pipeline.io.trace import mark
from pipeline.launch.plan import JobPlan
from pipeline.steps.audit import write_audit
from pipeline.steps.dedup import duplicates_of_entries, find_duplicates
from pipeline.steps.manifest import commit_manifest
from pipeline.steps.mixture import add_pairs, mixture_section, selection_of
from pipeline.steps.reading import read_file_batches
from transforms.audit.duplicates import HashGroups
from transforms.mixture.selection import tag_rejection

# Spill chunk files of the local engine: small, so the workers get their first batches while the reader
# goes on (a chunk reference is queued once its file is closed).
SPILL_CHUNK_BYTES = 256 * 1024


def run_locally(plan: JobPlan, *, workers: int = 1, worker_timeout: float = DEFAULT_TIMEOUT_S,
                progress: ProgressLine | None = None) -> dict:
    """Run the job of ``plan`` without Beam on ``workers`` processes (1: this process only); returns the
    manifest. ``worker_timeout``: seconds a worker may show no sign of life before the job fails.
    ``progress``: the job's progress line (:class:`~pipeline.engines.local.progress.ProgressLine`; default: none).
    ``plan.files`` must be the matched local input files and ``plan.output`` a local folder that
    :func:`pipeline.launch.output_folder.claim_output` prepared. Raises
    :class:`~pipeline.engines.local.workers.WorkerFailed` (and writes no manifest) when a worker fails or dies."""
    if plan.files is None:
        raise ValueError("the local engine needs the input files matched at launch")
    if progress is None:
        progress = ProgressLine(total_bytes=0, enabled=False)
    try:
        return _run(plan, workers, worker_timeout, progress)
    finally:
        progress.close()


def _run(plan: JobPlan, workers: int, worker_timeout: float, progress: ProgressLine) -> dict:
    # 1. read (2. and find the duplicates over the spilled records)
    reader = InputReader(plan, progress)
    batches: Iterable = reader.batches()
    mixture = plan.mixture
    # every record is read (and spilled) before any is built when --dedup or the mixture's decisions need it
    spill_first = plan.dedup or (mixture is not None and mixture.needs_counts)
    if spill_first:
        batches = list(spill_batches(batches, folder=store_folder(plan.output, SPILL),
                                     chunk_bytes=SPILL_CHUNK_BYTES if workers > 1 else CHUNK_BYTES))
    if mixture is not None:  # the per-record decisions, known to every worker forked from here
        plan = dataclasses.replace(plan, selection=selection_of(mixture, reader.counts))
    dropped, duplicate_rejections = frozenset(), []
    if plan.dedup:
        dropped, duplicate_rejections = _find_duplicates(plan, batches, workers, worker_timeout)
        if mixture is not None:
            duplicate_rejections = [tag_rejection(item, mixture) for item in duplicate_rejections]
    # 3. build rows, 4. write the shards and rejected files
    if workers <= 1:
        spilled = map(read_spilled, batches) if spill_first else batches
        parts, written, num_shards = _build_and_write_here(plan, spilled, dropped, duplicate_rejections, progress)
    else:
        refs = batches if spill_first else spill_batches(batches, folder=store_folder(plan.output, SPILL),
                                                         chunk_bytes=SPILL_CHUNK_BYTES)
        parts, written, num_shards = _build_and_write_in_workers(plan, refs, dropped, duplicate_rejections, workers,
                                                                 worker_timeout, progress)
    shards, rejected_files = collect_written(written)
    # 5. audit
    if plan.audit:
        progress.phase("writing the audit")
    sections = [_write_audit(plan, parts, shards)] if plan.audit else []
    mixture_counts = None
    if mixture is not None:
        mixture_counts = add_pairs((part.skipped, part.repeats) for part in parts)
        sections.append(mixture_section(mixture, reader.counts, *mixture_counts))
    # 6. commit
    progress.phase("committing")
    return commit_manifest(output=plan.output, manifest_base=plan.manifest_base, schema=plan.shard_schema(),
                           shards=shards, rejected_files=rejected_files, read_count=reader.read,
                           num_shards=num_shards, extra_sections=sections, mixture_counts=mixture_counts,
                           packing=plan.packing)


class InputReader:
    """The input files' record batches, in order (:func:`pipeline.steps.reading.read_file_batches`), counted;
    records and bytes read go to ``progress``."""

    def __init__(self, plan: JobPlan, progress: ProgressLine | None = None):
        self.plan = plan
        self.read = 0
        self.progress = progress
        self.counts: dict[str, int] = {}  # records per file

    def batches(self) -> Iterator[list]:
        done = 0  # bytes of the files finished
        for path in self.plan.files:
            self.counts.setdefault(path, 0)
            report = None
            if self.progress is not None:
                report = (lambda before: lambda position: self.progress.read_bytes(before + position))(done)
            for batch in read_file_batches(path, self.plan.batch_size, task=self.plan.record_spec(), position=report):
                self.read += len(batch)
                self.counts[path] += len(batch)
                if self.progress is not None:
                    self.progress.records_read(len(batch))
                yield batch
            done += _size(path)
            if self.progress is not None:
                self.progress.read_bytes(done)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def total_input_bytes(plan: JobPlan) -> int:
    """The input files' bytes on disk (what the progress line counts against)."""
    return sum(_size(path) for path in plan.files or ())


def _find_duplicates(plan: JobPlan, refs: list, workers: int, timeout: float) -> tuple[frozenset, list[dict]]:
    """``(sort keys of the records to drop, their rejections)`` from the spilled batches ``refs``: keys by
    forked workers (which then exit) or in this process."""
    if workers > 1:
        entries: list = []
        pool = WorkerPool(plan, workers, frozenset(), target=key_worker_main, timeout=timeout)
        try:
            pool.build_phase(refs, lambda kind, value: entries.extend(value) if kind == "keys" else None)
            pool.join()
        except BaseException:
            pool.terminate()
            raise
        found, rejections = duplicates_of_entries(entries)
    else:
        found, rejections = find_duplicates(refs, plan.record_spec())
    return frozenset(found), rejections


def _build_and_write_here(plan: JobPlan, batches: Iterable[list], dropped: frozenset, duplicate_rejections: list,
                          progress: ProgressLine):
    """Steps 3 and 4 in this process: ``(parts, written, num_shards)``."""
    mark("worker_setup_start")
    stage = RowBuilderStage(plan, dropped=dropped)
    mark("worker_setup_done")
    stage.add_rejections(duplicate_rejections)
    for batch in batches:
        stage.add(batch)
        progress.records_built(len(batch))
    parts = [stage.finish()]
    num_shards = shard_count(plan, parts)
    progress.phase(f"writing {num_shards} shard(s)")
    return parts, [run_write_task(plan, task) for task in write_tasks(parts, num_shards)], num_shards


def _build_and_write_in_workers(plan: JobPlan, refs: Iterable, dropped: frozenset, duplicate_rejections: list,
                                n: int, timeout: float, progress: ProgressLine):
    """Steps 3 and 4 on ``n`` forked workers (which inherit the loaded tokenizer): ``(parts, written, num_shards)``."""
    pool = WorkerPool(plan, n, dropped, timeout=timeout)
    parts: list[BuildPart] = []
    written: list[tuple] = []

    def on_result(kind, value):
        if kind == "progress":
            progress.records_built(value)
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
        num_shards = shard_count(plan, parts)
        progress.phase(f"writing {num_shards} shard(s)")
        pool.write_phase(write_tasks(parts, num_shards), on_result)
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return parts, written, num_shards


def _write_audit(plan: JobPlan, parts: list[BuildPart], shards: list) -> dict:
    """Step 5: the audit's partial statistics and hash groups of every part merged, the audit files written
    (with ``--pack-length``, the shard entries' packing figures too); returns the manifest's audit section."""
    groups = HashGroups()
    for part in parts:
        groups.merge(part.hash_groups)
    return write_audit(output=plan.output, manifest_base=plan.manifest_base, probe=plan.audit_probe,
                       format_options=plan.task_spec, tokenizer=plan.spec.tokenizer,
                       trust_remote_code=plan.spec.trust_remote_code, partials=[part.audit for part in parts],
                       duplicates=groups.summary(), packing=plan.packing, shards=shards)
