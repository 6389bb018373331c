"""Writing the audit files (Beam-free: the job's :class:`pipeline.engines.beam.stats.WriteAuditFn` and the local engine
call :func:`write_audit`).

The statistics themselves are the mergeable accumulators of :mod:`transforms.audit` (partial results merge
exactly, in any order, so the files do not depend on how rows were spread over workers).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from pipeline.io.files import join, tmp_root, write_atomically
from pipeline.io.remote import shared_job_tokenizer
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.dump import stats_json_bytes
from transforms.audit.duplicates import DuplicateSummary
from transforms.audit.probe import TemplateProbe
from transforms.audit.report import render_report, render_samples
from transforms.audit.stats import REPORT_PATH, STATS_PATH, build_stats, manifest_section
from transforms.packing.stats import report_of_shards
from transforms.tasks.spec import as_task_spec

LOG = logging.getLogger("chatshards")
# What the audit keeps of the launch-time manifest sections.
MANIFEST_KEYS = ("config", "config_fingerprint", "tokenizer", "template_check")


def merge_into_first(accumulators):
    """Merge accumulators that have a ``merge(other)`` method into the first one."""
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for other in accumulators:
        merged.merge(other)
    return merged


def write_audit(*, output: str, manifest_base: Mapping[str, Any], probe: TemplateProbe, format_options,
                tokenizer: str | None, trust_remote_code: bool, partials: Iterable[AuditAccumulator],
                duplicates: DuplicateSummary, packing=None, shards: Iterable[Mapping] = ()) -> dict:
    """Merge the partial statistics (``partials``: accumulators over rows and rejections; merged into a fresh
    one, so they are not modified), write ``audit/stats.json`` and ``audit/report.html`` under ``output`` and
    return the manifest's ``audit`` section. A tokenizer that cannot decode the samples leaves the report
    without them (said in the report), never fails the job.

    ``packing`` (a :class:`transforms.packing.rows.ShardPacking`, ``--pack-length``): the shard entries
    ``shards`` carry their packing figures; ``stats.json`` and the report get the ``packing`` section. The
    statistics of rows are those of the sequences (the rows as built, before packing)."""
    acc = AuditAccumulator(probe, format_options)
    for part in partials:
        acc = acc.merge(part)
    base = {k: manifest_base[k] for k in MANIFEST_KEYS if k in manifest_base}
    stats = build_stats(acc, duplicates, manifest=base, computed_by="job")
    if packing is not None:
        stats["packing"] = report_of_shards(shards, length=packing.options.length, strategy=packing.options.strategy)
    notes = []
    try:
        # the vocabulary only (to decode the samples); tasks other than chat take tokenizers without a template
        chat = as_task_spec(format_options).is_chat
        vocabulary = shared_job_tokenizer(tokenizer, trust_remote_code=trust_remote_code, require_chat_template=chat)
        samples = render_samples(vocabulary, acc.samples())
    except Exception as exc:  # the statistics stand without decoded samples
        LOG.warning("chatshards: audit report without decoded samples: %s", exc)
        notes.append(f"samples could not be decoded: {type(exc).__name__}: {exc}")
        samples = []
    page = render_report(stats, samples, notes=notes)
    scratch = tmp_root(output)
    write_atomically(join(output, *STATS_PATH.split("/")), stats_json_bytes(stats), tmp_root=scratch)
    write_atomically(join(output, *REPORT_PATH.split("/")), page.encode("utf-8"), tmp_root=scratch)
    return manifest_section(stats)
