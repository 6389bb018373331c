"""Launching a job (``python -m pipeline``): :mod:`.main` (the sequence: flags, checks, engine, claim, run,
summary), :mod:`.cli` (flags -> ``JobArgs``; ``ConfigError``), :mod:`.checks` (launch-time checks -> the
plan), :mod:`.plan` (the frozen ``JobPlan`` every engine runs), :mod:`.engine_choice` (which engine, how many
processes), :mod:`.output_folder` (claiming ``--output``: marker, overlap, lock, ``--overwrite``),
:mod:`.time_limit` (the template's launch check under a time limit)."""
