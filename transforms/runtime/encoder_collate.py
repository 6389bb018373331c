"""Batches for encoder heads: sequence classification, token classification, extractive QA.

Features are mappings (a :class:`ShardDataset` row, or tokenizer output) with ``input_ids`` and, when
the tokenizer defines them, ``token_type_ids``; lists, numpy arrays or tensors. Every collator pads
``B`` rows to width ``T`` (the longest row, or ``max_length``, rounded up to ``pad_to_multiple_of``)
and returns a :class:`~transforms.runtime.collate.Batch` of:

- ``input_ids``: int64 ``[B, T]``, ``pad_token_id`` on padding;
- ``attention_mask``: int64 ``[B, T]``, 1 on real tokens, 0 on padding;
- ``token_type_ids``: int64 ``[B, T]`` (when the rows have them), ``pad_token_type_id`` on padding;

and the head's targets:

- :class:`SequenceClassificationCollator`: ``labels`` int64 ``[B]`` (class ids), float32 ``[B]``
  (regression) or float32 ``[B, C]`` (multi-label), what ``DataCollatorWithPadding`` gives;
- :class:`TokenClassificationCollator`: ``labels`` int64 ``[B, T]``, -100 on padding (-100: no loss),
  what ``DataCollatorForTokenClassification`` gives;
- :class:`QuestionAnsweringCollator`: ``start_positions``/``end_positions`` int64 ``[B]`` (token
  indexes; shifted by the padding when padding on the left, so they keep pointing at the same tokens),
  what ``default_data_collator`` gives for ``run_qa.py``'s features. ``offset_mapping`` and
  ``example_id`` are for evaluation and are not batched.

Malformed features raise ``ValueError`` naming the row: no ``input_ids``, columns of another length
than ``input_ids``, ids outside ``[0, vocab_size)`` (when known), a missing target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX
from .collate import Batch, manifest_options
from .heads import register_collator

__all__ = ["EncoderCollatorConfig", "QuestionAnsweringCollator", "SequenceClassificationCollator",
           "TokenClassificationCollator"]


@dataclass(frozen=True, kw_only=True)
class EncoderCollatorConfig:
    """Options of the encoder-head collators.

    Attributes:
        pad_token_id: id written to ``input_ids`` padding.
        pad_token_type_id: id written to ``token_type_ids`` padding (the tokenizer's, 0 for BERT).
        padding_side: ``"right"`` or ``"left"``.
        pad_to_multiple_of: round the width up to a multiple of this.
        max_length: pad every row to exactly this width (a longer row is an error).
        label_pad_token_id: token-classification label on padding (-100).
        vocab_size: when set, ids must be below it.
    """

    pad_token_id: int
    pad_token_type_id: int = 0
    padding_side: Literal["right", "left"] = "right"
    pad_to_multiple_of: int | None = None
    max_length: int | None = None
    label_pad_token_id: int = IGNORE_INDEX
    vocab_size: int | None = None

    def __post_init__(self):
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a token id, not {self.pad_token_id!r}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {self.padding_side!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError("pad_to_multiple_of must be >= 1")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be >= 1")


def _as_array(value: Any, what: str, row: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"row {row}: {what} must be one-dimensional, not of shape {array.shape}")
    return array


class _EncoderCollator:
    """Shared padding of ``input_ids``/``attention_mask``/``token_type_ids`` (see the module)."""

    def __init__(self, config: EncoderCollatorConfig | None = None, /, **options: Any):
        if config is None:
            config = EncoderCollatorConfig(**options)
        elif options:
            config = EncoderCollatorConfig(**{**config.__dict__, **options})
        self.config = config

    def _width(self, lengths: Sequence[int]) -> int:
        config = self.config
        width = max(lengths)
        if config.max_length is not None:
            if width > config.max_length:
                row = int(np.argmax(lengths))
                raise ValueError(f"row {row} has {width} tokens, more than max_length {config.max_length}")
            width = config.max_length
        if config.pad_to_multiple_of:
            width = -(-width // config.pad_to_multiple_of) * config.pad_to_multiple_of
        return width

    def _pad(self, features: Sequence[Mapping[str, Any]]) -> tuple[Batch, np.ndarray, int]:
        """The padded token tensors, each row's start column and the width."""
        if not features:
            raise ValueError("cannot collate an empty batch")
        config = self.config
        ids, types = [], []
        for row, feature in enumerate(features):
            if not isinstance(feature, Mapping) or "input_ids" not in feature:
                raise ValueError(f"row {row}: a feature must be a mapping with input_ids")
            array = _as_array(feature["input_ids"], "input_ids", row)
            if array.size and array.dtype.kind not in "iu":
                raise ValueError(f"row {row}: input_ids must be integers, not {array.dtype}")
            if array.size and (array.min() < 0 or (config.vocab_size is not None and array.max() >= config.vocab_size)):
                raise ValueError(f"row {row}: input_ids outside [0, {config.vocab_size or 'int32'})")
            ids.append(array)
            if "token_type_ids" in feature and feature["token_type_ids"] is not None:
                type_ids = _as_array(feature["token_type_ids"], "token_type_ids", row)
                if len(type_ids) != len(array):
                    raise ValueError(f"row {row}: token_type_ids has {len(type_ids)} values, input_ids {len(array)}")
                types.append(type_ids)
        if types and len(types) != len(ids):
            raise ValueError("some rows have token_type_ids and others do not")
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        width = self._width(lengths)
        starts = width - lengths if config.padding_side == "left" else np.zeros_like(lengths)
        input_ids = np.full((len(ids), width), config.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        type_ids = np.full((len(ids), width), config.pad_token_type_id, dtype=np.int64) if types else None
        for row, array in enumerate(ids):
            start, end = starts[row], starts[row] + lengths[row]
            input_ids[row, start:end] = array
            mask[row, start:end] = 1
            if type_ids is not None:
                type_ids[row, start:end] = types[row]
        batch = Batch(input_ids=torch.from_numpy(input_ids))
        if type_ids is not None:
            batch["token_type_ids"] = torch.from_numpy(type_ids)
        batch["attention_mask"] = torch.from_numpy(mask)
        return batch, starts, width

    @classmethod
    def from_manifest_dict(cls, manifest: Mapping[str, Any], options: Mapping[str, Any]):
        """A collator for a dataset: the pad id and pad token type id of its ``task`` section, the vocabulary
        size of its tokenizer (explicit ``options`` win)."""
        options = dict(options)
        section = manifest.get("task") or {}
        for key in ("pad_token_id", "pad_token_type_id"):
            if key not in options and section.get(key) is not None:
                options[key] = int(section[key])
        resolved = manifest_options(manifest, {k: options[k] for k in ("pad_token_id", "vocab_size") if k in options})
        options.setdefault("pad_token_id", resolved["pad_token_id"])
        if resolved.get("vocab_size") is not None:
            options.setdefault("vocab_size", resolved["vocab_size"])
        return cls(EncoderCollatorConfig(**options))


def _target(feature: Mapping[str, Any], row: int, *names: str) -> Any:
    for name in names:
        if name in feature and feature[name] is not None:
            return feature[name]
    raise ValueError(f"row {row}: no {' / '.join(names)}")


class SequenceClassificationCollator(_EncoderCollator):
    """Padded rows plus ``labels`` (``label`` is read too, as ``DataCollatorWithPadding`` renames it)."""

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        batch, _, _ = self._pad(features)
        labels = [_target(feature, row, "labels", "label") for row, feature in enumerate(features)]
        first = labels[0]
        if isinstance(first, torch.Tensor):
            first = first.numpy()
        if isinstance(first, (list, tuple, np.ndarray)) and np.ndim(first) == 1:
            stacked = np.stack([np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float32)
                                for v in labels])
            batch["labels"] = torch.from_numpy(stacked)
        else:
            values = np.asarray([v.item() if isinstance(v, (torch.Tensor, np.generic)) else v for v in labels])
            if values.dtype.kind in "iub":
                batch["labels"] = torch.from_numpy(values.astype(np.int64))
            elif values.dtype.kind == "f":
                batch["labels"] = torch.from_numpy(values.astype(np.float32))
            else:
                raise ValueError(f"labels must be numbers or lists of numbers, not {values.dtype}")
        return batch


class TokenClassificationCollator(_EncoderCollator):
    """Padded rows plus per-token ``labels`` padded with ``label_pad_token_id``."""

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        batch, starts, width = self._pad(features)
        labels = np.full((len(features), width), self.config.label_pad_token_id, dtype=np.int64)
        for row, feature in enumerate(features):
            values = _as_array(_target(feature, row, "labels", "label"), "labels", row)
            length = len(_as_array(feature["input_ids"], "input_ids", row))
            if len(values) != length:
                raise ValueError(f"row {row}: labels has {len(values)} values, input_ids {length}")
            labels[row, starts[row]:starts[row] + length] = values
        batch["labels"] = torch.from_numpy(labels)
        return batch


class QuestionAnsweringCollator(_EncoderCollator):
    """Padded rows plus ``start_positions``/``end_positions`` (shifted with left padding)."""

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        batch, starts, _ = self._pad(features)
        lengths = batch["attention_mask"].sum(dim=1).numpy()
        for name in ("start_positions", "end_positions"):
            values = np.asarray([int(_target(feature, row, name)) for row, feature in enumerate(features)],
                                dtype=np.int64)
            bad = np.flatnonzero((values < 0) | (values >= lengths))
            if bad.size:
                raise ValueError(f"row {int(bad[0])}: {name} {int(values[bad[0]])} is outside its "
                                 f"{int(lengths[bad[0]])} tokens")
            batch[name] = torch.from_numpy(values + starts)
        return batch


@register_collator("classification")
def classification_collator(manifest: Mapping[str, Any], options: dict) -> SequenceClassificationCollator:
    return SequenceClassificationCollator.from_manifest_dict(manifest, options)


@register_collator("token-classification")
def token_classification_collator(manifest: Mapping[str, Any], options: dict) -> TokenClassificationCollator:
    return TokenClassificationCollator.from_manifest_dict(manifest, options)


@register_collator("qa")
def qa_collator(manifest: Mapping[str, Any], options: dict) -> QuestionAnsweringCollator:
    return QuestionAnsweringCollator.from_manifest_dict(manifest, options)
