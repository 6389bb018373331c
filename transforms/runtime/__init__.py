"""Trainer-side runtime: load chatshards datasets into training batches.

Imports pyarrow, numpy and torch only (no apache_beam, no transformers)::

    from transforms.runtime import ShardDataset, Collator
    ds = ShardDataset("out/")                       # refuses a folder without a valid manifest
    collator = Collator.from_manifest("out/")       # pad id from the manifest
    trainer = Trainer(model=model, train_dataset=ds, data_collator=collator, ...)

Modules (one concept each):

- :mod:`.dataset`    ``ShardDataset``: zero-copy map-style access to the memory-mapped shards
- :mod:`.partition`  ``ShardIterableDataset``/``ResumableDataLoader``: deterministic shuffle,
  rank/worker partitioning, mid-epoch resume
- :mod:`.batching`   ``LengthGroupedBatchSampler``/``TokenBudgetBatchSampler``/``padding_fraction``
- :mod:`.collate`    ``Collator``/``CollatorConfig``/``Batch``: padded and padding-free batches
- :mod:`.vision`     ``VisionCollator``: ``pixel_values``/``image_grid_thw`` for image rows
- :mod:`.packed`     packed rows (``--pack-length``): sequence boundaries, block-diagonal 4D masks
- :mod:`.hf`         ``hf_dataset``: the folder as a ``datasets.Dataset`` (e.g. for ``trl.SFTTrainer``)
- :mod:`.synthetic`  ``write_synthetic_dataset``: a small valid dataset folder for tests and examples
"""
from ..shard_format import IGNORE_INDEX, ManifestError
from .batching import LengthGroupedBatchSampler, TokenBudgetBatchSampler, padding_fraction
from .collate import Batch, Collator, CollatorConfig, RowLayout
from .dataset import ShardDataset
from .partition import (
    ResumableDataLoader,
    ShardIterableDataset,
    epoch_permutation,
    rank_indices,
    resolve_rank_world_size,
)
from .synthetic import write_synthetic_dataset
from .vision import VisionCollator, vision_columns  # images decoded lazily (PIL imported on first use)

__all__ = [
    "VisionCollator",
    "vision_columns",
    "IGNORE_INDEX",
    "ManifestError",
    "ShardDataset",
    "ShardIterableDataset",
    "ResumableDataLoader",
    "LengthGroupedBatchSampler",
    "TokenBudgetBatchSampler",
    "padding_fraction",
    "Collator",
    "CollatorConfig",
    "Batch",
    "RowLayout",
    "epoch_permutation",
    "rank_indices",
    "resolve_rank_world_size",
    "write_synthetic_dataset",
]
