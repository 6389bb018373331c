"""Trainer-side runtime: load chatshards datasets into training batches.

Imports pyarrow, numpy and torch only (no apache_beam, no transformers)::

    from transforms.runtime import ShardDataset, Collator
    ds = ShardDataset("out/")                       # refuses a folder without a valid manifest
    collator = Collator.from_manifest("out/")       # pad id from the manifest
    trainer = Trainer(model=model, train_dataset=ds, data_collator=collator, ...)

Modules (one concept each):

- :mod:`.dataset`    ``ShardDataset``: zero-copy map-style access to the memory-mapped shards
- :mod:`.mixture`    ``MixedShardDataset``: several finished datasets mixed by weight (stopping strategy, seed)
- :mod:`.partition`  ``ShardIterableDataset``/``ResumableDataLoader``: deterministic shuffle,
  rank/worker partitioning, mid-epoch resume
- :mod:`.batching`   ``LengthGroupedBatchSampler``/``TokenBudgetBatchSampler``/``padding_fraction``
- :mod:`.collate`    ``Collator``/``CollatorConfig``/``Batch``: padded and padding-free batches
- :mod:`.encoder_collate` ``SequenceClassificationCollator``/``TokenClassificationCollator``/
  ``QuestionAnsweringCollator``: encoder heads (classification, NER, extractive QA)
- :mod:`.vision`     ``VisionCollator``: ``pixel_values``/``image_grid_thw`` for image rows
- :mod:`.packed`     packed rows (``--pack-length``): sequence boundaries, block-diagonal 4D masks
- :mod:`.hf`         ``hf_dataset``: the folder as a ``datasets.Dataset`` (e.g. for ``trl.SFTTrainer``)
- :mod:`.synthetic`  ``write_synthetic_dataset``: a small valid dataset folder for tests and examples
- :mod:`.preference` ``PreferenceCollator``/``KtoCollator``: DPO and KTO batches (``--task preference|kto``)
- :mod:`.heads`      the collator of each task (``Collator.from_manifest`` picks it from ``manifest["task"]``);
  :mod:`.text_lm` (``text``: the plain ``Collator``), :mod:`.seq2seq` (``Seq2SeqCollator``: labels -100,
  ``decoder_input_ids``), :mod:`.mlm` (``MaskingCollator``: masks at run time per (seed, epoch, row);
  ``epoch_callback`` for transformers' Trainer, the one helper that imports transformers, when called)
"""
from ..shard_format import IGNORE_INDEX, ManifestError
from .batching import LengthGroupedBatchSampler, TokenBudgetBatchSampler, padding_fraction
from .collate import Batch, Collator, CollatorConfig, RowLayout
from .dataset import DatasetChanged, ShardDataset
from .encoder_collate import (
    EncoderCollatorConfig,
    QuestionAnsweringCollator,
    SequenceClassificationCollator,
    TokenClassificationCollator,
)
from .heads import COLLATORS as TASK_COLLATORS
from .mixture import MixedShardDataset
from .mlm import MaskingCollator, epoch_callback
from .partition import (
    ResumableDataLoader,
    ShardIterableDataset,
    epoch_permutation,
    rank_indices,
    resolve_rank_world_size,
)
from .preference import KtoCollator, PreferenceCollator
from .seq2seq import Seq2SeqCollator
from .synthetic import write_synthetic_dataset
from .text_lm import text_collator  # noqa: F401 (registers the text task's collator)
from .vision import VisionCollator, vision_columns  # images decoded lazily (PIL imported on first use)

__all__ = [
    "VisionCollator",
    "vision_columns",
    "IGNORE_INDEX",
    "ManifestError",
    "DatasetChanged",
    "ShardDataset",
    "MixedShardDataset",
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
    "TASK_COLLATORS",
    "Seq2SeqCollator",
    "MaskingCollator",
    "epoch_callback",
    "EncoderCollatorConfig",
    "SequenceClassificationCollator",
    "TokenClassificationCollator",
    "QuestionAnsweringCollator",
    "PreferenceCollator",
    "KtoCollator",
]
