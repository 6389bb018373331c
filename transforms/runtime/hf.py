"""A finished dataset folder as a Hugging Face ``datasets.Dataset`` (for trainers that require one, such as
``trl.SFTTrainer``); ``datasets`` is imported when called.

:func:`hf_dataset` memory-maps the shards the manifest lists (``datasets.Dataset.from_file`` opens the
job's Arrow IPC stream files as they are: nothing is re-tokenized, re-packed or copied), keeps the
columns a :class:`~transforms.runtime.ShardDataset` would return (``input_ids``, ``labels`` and, for packed
folders, ``seq_lengths``) and concatenates them in manifest order, in numpy format. Pair it with
``Collator.from_manifest(path)`` as the trainer's data collator (``docs/packing.md``, "trl.SFTTrainer").
"""
from __future__ import annotations

import os
from typing import Sequence

from .dataset import ShardDataset

__all__ = ["hf_dataset"]


def hf_dataset(path: str | os.PathLike, *, columns: Sequence[str] | None = None, verify: bool = False):
    """The dataset at ``path`` as a ``datasets.Dataset`` (numpy format) of ``columns`` (default: the
    :class:`ShardDataset` defaults). The manifest and shards are checked as :class:`ShardDataset` checks
    them (``verify``: their sha256 too)."""
    from datasets import Dataset, concatenate_datasets

    shards = ShardDataset(path, verify=verify, columns=columns)
    parts = [Dataset.from_file(p).select_columns(list(shards.columns)) for p in shards.paths]
    return concatenate_datasets(parts).with_format("numpy")
