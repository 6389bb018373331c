"""``--task text`` at training time: causal-LM batches from rows that hold ``input_ids`` only.

The plain :class:`~transforms.runtime.collate.Collator` already does it: a row without ``labels`` is trained
on every real token (``labels = input_ids``, -100 on padding; the model shifts). What ``run_clm.py`` feeds
its model (``default_data_collator`` over blocks whose ``labels`` are a copy of ``input_ids``) is this
batch for blocks of one length; shorter rows (the last block of a batch, one row per document) are padded.
"""
from __future__ import annotations

from typing import Any, Mapping

from .collate import Collator, manifest_options
from .heads import register_collator


@register_collator("text")
def text_collator(manifest: Mapping[str, Any], options: dict) -> Collator:
    """A :class:`Collator` with the dataset's pad id and vocabulary size (explicit options win)."""
    return Collator(**manifest_options(manifest, options))
