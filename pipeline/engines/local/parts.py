"""What one process of the local engine builds and writes: rows and rejections buffered into fragment files
with the audit's partial statistics (:class:`PartWriter`, :class:`RowBuilderStage`), and the write tasks
that turn fragments into shards and rejected files (:func:`write_tasks`, :func:`run_write_task`).

Beam-free; the Beam graph does the same with its DoFns (:mod:`pipeline.engines.beam`), around the same
step functions (:mod:`pipeline.steps`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa

from pipeline.io.chunks import FRAGMENTS, REJECTED, ChunkFile, chunks_by_shard, store_folder
from pipeline.io.trace import mark
from pipeline.launch.plan import JobPlan
from pipeline.steps.dedup import drop_duplicates
from pipeline.steps.fragments import FRAGMENT_BYTES, payload_schema, write_fragment
from pipeline.steps.mixture import skipped_and_repeats
from pipeline.steps.records import build_batch, parse_batch
from pipeline.steps.rejected import FRAGMENT_BYTES as REJECTED_FRAGMENT_BYTES
from pipeline.steps.rejected import rejection_line_bytes, write_rejected_file, write_rejected_fragment
from pipeline.steps.shards import auto_num_shards, write_shard
from transforms import shard_format as sf
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.duplicates import HashGroups


@dataclass
class BuildPart:
    """What building rows left behind in one process: fragment files, rejected fragment files and the audit's
    partial statistics (``None`` with ``--no-audit``)."""

    fragments: list[ChunkFile] = field(default_factory=list)
    rejected: list[ChunkFile] = field(default_factory=list)
    audit: AuditAccumulator | None = None
    hash_groups: HashGroups | None = None
    # a job with a datasets list: records its mixture did not take, extra copies it made
    skipped: int = 0
    repeats: int = 0


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
            self.part.audit = AuditAccumulator(plan.audit_probe, plan.task_spec)
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
        self.format_options = plan.task_spec  # the task's parsing (chat: its record-format options)
        self.dropped = dropped
        self.builder = plan.spec.create_builder()
        self.selection = plan.selection  # a datasets list: the mixture's per-record decisions

    def add(self, batch: list) -> None:
        """Parse and build one batch of raw records (duplicates dropped first; then, with a datasets list, the
        records the mixture does not take)."""
        batch = drop_duplicates(batch, self.dropped)
        if self.selection is not None:
            skipped, repeats = skipped_and_repeats(batch, self.selection)
            self.part.skipped += skipped
            self.part.repeats += repeats
        parsed, rejections = parse_batch(batch, self.format_options, self.selection)
        self.add_rejections(rejections)
        rows, rejections = build_batch(self.builder, parsed, self.selection)
        self.add_rejections(rejections)
        self.add_rows(rows)
        mark("batch_done")


def shard_count(plan: JobPlan, parts: list[BuildPart]) -> int:
    """``--num-shards``, or a count from the fragments' bytes (:func:`pipeline.steps.shards.auto_num_shards`)."""
    if plan.num_shards is not None:
        return plan.num_shards
    return auto_num_shards(sum(fragment.nbytes for part in parts for fragment in part.fragments))


def write_tasks(parts: list[BuildPart], num_shards: int) -> list[tuple]:
    """``(kind, index, chunks, count)`` for every shard (``kind`` ``"shard"``) and every rejected file
    (``"rejected"``) that has chunks."""
    tasks = []
    for kind, files in (("shard", [f for part in parts for f in part.fragments]),
                        ("rejected", [f for part in parts for f in part.rejected])):
        by_index: dict[int, list] = {}
        for index, chunk in chunks_by_shard((chunk for f in files for chunk in f.chunks), num_shards):
            by_index.setdefault(index, []).append(chunk)
        tasks.extend((kind, index, chunks, num_shards) for index, chunks in sorted(by_index.items()))
    return tasks


def run_write_task(plan: JobPlan, task: tuple) -> tuple:
    """Write the shard or rejected file of one :func:`write_tasks` task; ``(kind, manifest entry or None)``."""
    kind, index, chunks, count = task
    if kind == "shard":
        return kind, write_shard(chunks, output=plan.output, index=index, num_shards=count,
                                 schema=plan.shard_schema(), packing=plan.packing)
    return kind, write_rejected_file(chunks, output=plan.output, index=index, num_files=count)


def collect_written(written: Iterable[tuple]) -> tuple[list, list]:
    """``(shard entries, rejected-file entries)`` of the :func:`run_write_task` results."""
    shards, rejected_files = [], []
    for kind, entry in written:
        if entry is not None:
            (shards if kind == "shard" else rejected_files).append(entry)
    return shards, rejected_files
