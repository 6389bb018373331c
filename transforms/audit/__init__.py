"""Audit of a chatshards run (Beam-free): statistics, the HTML report, and label-mask rendering.

Import from the modules:

* ``histogram``: fixed-bin, mergeable histograms and their percentiles;
* ``probe``: :class:`TemplateProbe`, what the per-row template checks look for;
* ``accumulator`` / ``duplicates``: :class:`AuditAccumulator` / :class:`DuplicateSummary` (fed by the
  job's CombineFns and by ``python -m pipeline.audit``);
* ``stats``: ``build_stats`` -> ``stats.json``, ``manifest_section``; ``dump``: its exact bytes;
  ``summary``: the command's summary lines;
* ``masks``: trained / not-trained token runs, decoded for the terminal and for HTML;
* ``report`` / ``svg``: the self-contained ``report.html``;
* ``dataset``: reading a finished dataset back (shards, rejected files, tokenizer).

Nothing here imports ``apache_beam``.
"""
