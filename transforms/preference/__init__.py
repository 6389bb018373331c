"""Preference data (``--task preference`` for DPO and its relatives, ``--task kto`` for unpaired feedback),
Beam-free: :mod:`~transforms.preference.records` (record layouts -> pairs and unpaired examples),
:mod:`~transforms.preference.split` (prompt/completion split with the SFT label machinery),
:mod:`~transforms.preference.truncation` (truncation that keeps pairs meaningful),
:mod:`~transforms.preference.figures` (the audit). The tasks are :mod:`transforms.tasks.preference`, the
runtime collators :mod:`transforms.runtime.preference`; ``docs/preference.md`` describes them.
"""
