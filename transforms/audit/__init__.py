"""Audit of a chatshards run (Beam-free): statistics, the HTML report, and label-mask rendering.

* ``histogram``: fixed-bin, mergeable histograms and their percentiles;
* ``stats``: :class:`AuditAccumulator` / :class:`DuplicateSummary` (fed by the job's CombineFns and by
  ``python -m pipeline.audit``), ``build_stats`` -> ``stats.json``, ``manifest_section``;
* ``masks``: trained / not-trained token runs, decoded for the terminal and for HTML;
* ``report`` / ``svg``: the self-contained ``report.html``;
* ``dataset``: reading a finished dataset back (shards, rejected files, tokenizer).

Nothing here imports ``apache_beam``.
"""
from transforms.audit.stats import (  # noqa: F401
    REPORT_PATH,
    STATS_PATH,
    AuditAccumulator,
    DuplicateSummary,
    HashGroups,
    TemplateProbe,
    build_stats,
    manifest_section,
    stats_json_bytes,
    template_probe,
)
