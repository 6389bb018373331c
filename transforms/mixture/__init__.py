"""Several datasets in one job: their entries, their shares, and the per-record decisions that realise them.

- :mod:`.entries`      :class:`DatasetEntry` (one dataset: files, record options, share) and :class:`Mixture`
- :mod:`.quota`        :func:`share_targets`: sizes and shares -> (kept, target) per dataset (pure arithmetic,
  shared with the runtime's :class:`~transforms.runtime.mixture.MixedShardDataset`)
- :mod:`.selection`    :func:`quotas` and :class:`Selection` (per-record copies: subsampling and repeats, seeded,
  independent of arrival order), repeat sort keys
- :mod:`.permutation`  :class:`KeyedPermutation`: a keyed bijection of ``range(n)``, one position at a time

Beam-free and tokenizer-free; the job (``pipeline/``) reads the config file and calls these. Reference:
``docs/config.md``. The names below load on first use, so ``transforms.mixture.quota`` imports nothing else.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetEntry": "entries", "Mixture": "entries", "template_kwargs_text": "entries",
    "STOPPING_STRATEGIES": "quota", "share_targets": "quota",
    "KeyedPermutation": "permutation",
    "COPY_FIELD": "selection", "DATASET_COLUMN": "selection", "Quota": "selection", "Selection": "selection",
    "copy_sort_key": "selection", "quotas": "selection", "rejection_sort_key": "selection",
    "tag_rejection": "selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'transforms.mixture' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
