"""The audit branch of the job: statistics in the same pass, written to ``<out>/audit/``.

:class:`AuditStats` is the branch, an explicit PTransform that ``build_graph`` applies when the plan has
the audit on (``--no-audit`` switches it off): it reads the ``rows`` and ``rejected`` PCollections (no
second read of the input), combines them with the pure accumulators of ``transforms.audit`` (so
``python -m pipeline.audit`` computes the same numbers), writes ``audit/stats.json`` and
``audit/report.html`` and returns the manifest's ``audit`` section, so the manifest (the commit point)
is written after the audit files.

Graph::

    rows        -> CombineGlobally(AuditCombineFn rows)               --+
    rejected[i] -> CombineGlobally(AuditCombineFn rejections), each --+--> WriteAudit -> {"audit": ...}
    rows     -> (hash, first) -> CombinePerKey -> >1 -> CombineGlobally(duplicates) --+
"""
from __future__ import annotations

from typing import Any, Mapping

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton

from pipeline.steps.audit import MANIFEST_KEYS, merge_into_first, write_audit
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.duplicates import DuplicateSummary, first_of, group_merge, hash_of
from transforms.audit.probe import TemplateProbe

ROWS, REJECTIONS = "rows", "rejections"


class AuditCombineFn(beam.CombineFn):
    """Rows (``kind="rows"``) or rejection dicts (``kind="rejections"``) -> :class:`AuditAccumulator`."""

    def __init__(self, *, kind: str, probe: TemplateProbe, format_options):
        if kind not in (ROWS, REJECTIONS):
            raise ValueError(kind)
        self.kind = kind
        self.probe = probe
        self.format_options = format_options

    def create_accumulator(self):
        return AuditAccumulator(self.probe, self.format_options)

    def add_input(self, accumulator, element):
        if self.kind == ROWS:
            accumulator.add_row(element)
        else:
            accumulator.add_rejection(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        return merge_into_first(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class DuplicateGroupFn(beam.CombineFn):
    """Per conversation hash: ``first`` tuples -> ``[rows, first]`` (smallest sort key)."""

    def create_accumulator(self):
        return [0, None]

    def add_input(self, accumulator, first):
        accumulator[0] += 1
        if accumulator[1] is None or tuple(first) < accumulator[1]:
            accumulator[1] = tuple(first)
        return accumulator

    def merge_accumulators(self, accumulators):
        return group_merge(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class DuplicateSummaryFn(beam.CombineFn):
    """``(hash, [rows, first])`` groups with more than one row -> :class:`DuplicateSummary`."""

    def create_accumulator(self):
        return DuplicateSummary()

    def add_input(self, accumulator, element):
        conversation_hash, (rows, first) = element
        accumulator.add_group(conversation_hash, rows, first)
        return accumulator

    def merge_accumulators(self, accumulators):
        return merge_into_first(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class WriteAuditFn(beam.DoFn):
    """Runs once: :func:`pipeline.steps.audit.write_audit` (merges the partial statistics, writes
    ``audit/stats.json`` and ``audit/report.html``), yields the manifest's ``audit`` section."""

    def __init__(self, *, output: str, manifest_base: Mapping[str, Any], probe: TemplateProbe, format_options,
                 tokenizer: str | None, trust_remote_code: bool, packing=None):
        self.output = output
        self.manifest_base = {k: manifest_base[k] for k in MANIFEST_KEYS if k in manifest_base}
        self.probe = probe
        self.format_options = format_options
        self.tokenizer = tokenizer
        self.trust_remote_code = trust_remote_code
        self.packing = packing

    def process(self, _, row_stats, rejection_stats, duplicates, shards=()):
        # Side-input values may be shared with retries: write_audit merges into a fresh accumulator.
        yield write_audit(output=self.output, manifest_base=self.manifest_base, probe=self.probe,
                          format_options=self.format_options, tokenizer=self.tokenizer,
                          trust_remote_code=self.trust_remote_code, partials=[row_stats, *rejection_stats],
                          duplicates=duplicates, packing=self.packing, shards=shards)


class AuditStats(beam.PTransform):
    """``(rows, *rejected) -> PCollection[dict]``: the audit branch. ``rows`` holds single rows, each
    ``rejected`` PCollection the rejection dicts of one producing stage (consumed where they are, never
    flattened: local runners would hold them all in memory). Writes ``audit/stats.json`` and
    ``audit/report.html`` under ``output`` and yields one dict, the manifest's ``audit`` section.

    With ``packing`` (``--pack-length``), ``shards`` is the PCollection of shard entries: their packing figures
    go into the audit's ``packing`` section (so the audit is written after the shards)."""

    def __init__(self, *, output: str, manifest_base: Mapping[str, Any], probe: TemplateProbe, format_options,
                 tokenizer: str | None, trust_remote_code: bool = False, packing=None, shards=None):
        super().__init__()
        self.packing = packing
        self.shards = shards
        self.output = output
        self.manifest_base = manifest_base
        self.probe = probe
        self.format_options = format_options
        self.tokenizer = tokenizer
        self.trust_remote_code = trust_remote_code

    def expand(self, pcolls):
        rows, *rejected = pcolls
        probe, format_options = self.probe, self.format_options
        row_stats = rows | "AuditRows" >> beam.CombineGlobally(
            AuditCombineFn(kind=ROWS, probe=probe, format_options=format_options))
        rejection_stats = tuple(  # one partial per producing stage, merged by WriteAudit
            part | f"AuditRejections{i}" >> beam.CombineGlobally(
                AuditCombineFn(kind=REJECTIONS, probe=probe, format_options=format_options))
            for i, part in enumerate(rejected)
        ) | "AuditRejectionParts" >> beam.Flatten()
        duplicates = (
            rows
            | "AuditHashKeys" >> beam.Map(lambda row: (hash_of(row), first_of(row)))
            | "AuditHashGroups" >> beam.CombinePerKey(DuplicateGroupFn())
            | "AuditDuplicateGroups" >> beam.Filter(lambda item: item[1][0] > 1)
            | "AuditDuplicates" >> beam.CombineGlobally(DuplicateSummaryFn())
        )
        return (
            rows.pipeline
            | "AuditTrigger" >> beam.Create([None])
            | "WriteAudit" >> beam.ParDo(
                WriteAuditFn(output=self.output, manifest_base=self.manifest_base, probe=probe,
                             format_options=format_options, tokenizer=self.tokenizer,
                             trust_remote_code=self.trust_remote_code, packing=self.packing),
                row_stats=AsSingleton(row_stats),
                rejection_stats=AsList(rejection_stats),
                duplicates=AsSingleton(duplicates),
                **({"shards": AsList(self.shards)} if self.packing is not None else {}),
            )
        )
