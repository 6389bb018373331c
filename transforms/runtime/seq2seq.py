"""``--task seq2seq`` at training time: :class:`Seq2SeqCollator`, the batches of encoder-decoder models.

What ``DataCollatorForSeq2Seq(tokenizer, model=model)`` returns (default padding, right side), from rows that
hold ``input_ids`` (encoder tokens) and ``labels`` (target tokens, unpadded), every tensor ``torch.int64``:

- ``input_ids`` ``[B, S]``: padded with ``pad_token_id``; ``attention_mask`` ``[B, S]``: 1 real, 0 padding;
- ``labels`` ``[B, T]``: padded with ``label_pad_token_id`` (-100: no loss), ``T`` the longest target
  (rounded up to ``pad_to_multiple_of``);
- ``decoder_input_ids`` ``[B, T]``: the labels shifted one position right, ``decoder_start_token_id`` first,
  -100 replaced by ``pad_token_id`` (what ``model.prepare_decoder_input_ids_from_labels`` computes for T5,
  BART, mT5). Returned when ``decoder_start_token_id`` is known (an option, else the manifest's
  ``task.decoder_start_token_id``); otherwise left out, and the model derives it from the labels itself.

``padding_side="left"`` pads both on the left, as the data collator does for a left-padding tokenizer.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX
from .collate import Batch, feature_ids, manifest_options
from .heads import register_collator


def _pad(rows: Sequence[np.ndarray], value: int, width: int, left: bool) -> np.ndarray:
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            if left:
                out[i, width - len(row):] = row
            else:
                out[i, :len(row)] = row
    return out


def shift_right(labels: np.ndarray, decoder_start_token_id: int, pad_token_id: int) -> np.ndarray:
    """``decoder_input_ids`` from padded ``labels`` ``[B, T]``: start token, then the labels but the last; -100
    becomes ``pad_token_id`` (T5's ``_shift_right`` / BART's ``shift_tokens_right``)."""
    shifted = np.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    shifted[shifted == IGNORE_INDEX] = pad_token_id
    return shifted


class Seq2SeqCollator:
    """Collate seq2seq rows (see the module docstring); picklable, usable as ``DataLoader(collate_fn=...)`` and
    ``Trainer(data_collator=...)``.

    Args:
        pad_token_id: the encoder padding id (and what -100 becomes in ``decoder_input_ids``).
        decoder_start_token_id: the model's ``config.decoder_start_token_id`` (``None``: no
            ``decoder_input_ids`` in the batch).
        label_pad_token_id: label on padding positions (-100).
        pad_to_multiple_of: round both widths up to a multiple of this.
        padding_side: ``"right"`` (default) or ``"left"``.
    """

    def __init__(self, *, pad_token_id: int, decoder_start_token_id: int | None = None,
                 label_pad_token_id: int = IGNORE_INDEX, pad_to_multiple_of: int | None = None,
                 padding_side: str = "right", vocab_size: int | None = None):
        if not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool) or pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a token id, not {pad_token_id!r}")
        if decoder_start_token_id is not None and (not isinstance(decoder_start_token_id, int)
                                                   or decoder_start_token_id < 0):
            raise ValueError(f"decoder_start_token_id must be a token id or None, not {decoder_start_token_id!r}")
        if padding_side not in ("right", "left"):
            raise ValueError("padding_side must be 'right' or 'left'")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError("pad_to_multiple_of must be >= 1")
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.label_pad_token_id = label_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side
        self.vocab_size = vocab_size

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "Seq2SeqCollator":
        from ..shard_format import load_manifest

        return seq2seq_collator(load_manifest(str(path)), options)

    def _width(self, rows: Sequence[np.ndarray]) -> int:
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return width

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        ids = [feature_ids(f, i, "input_ids") for i, f in enumerate(features)]
        labels = [feature_ids(f, i, "labels") for i, f in enumerate(features)]
        if self.vocab_size is not None:
            for name, rows in (("input_ids", ids), ("labels", labels)):
                for i, row in enumerate(rows):
                    if row.size and int(row.max()) >= self.vocab_size:
                        raise ValueError(f"row {i}: {name} has an id beyond the vocabulary ({self.vocab_size})")
        left = self.padding_side == "left"
        width = self._width(ids)
        input_ids = _pad(ids, self.pad_token_id, width, left)
        mask = _pad([np.ones(len(r), dtype=np.int64) for r in ids], 0, width, left)
        padded_labels = _pad(labels, self.label_pad_token_id, self._width(labels), left)
        batch = Batch(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask),
                      labels=torch.from_numpy(padded_labels))
        if self.decoder_start_token_id is not None:
            batch["decoder_input_ids"] = torch.from_numpy(
                shift_right(padded_labels, self.decoder_start_token_id, self.pad_token_id))
        return batch

    def __repr__(self) -> str:
        return (f"Seq2SeqCollator(pad_token_id={self.pad_token_id}, decoder_start_token_id="
                f"{self.decoder_start_token_id}, padding_side={self.padding_side!r})")


@register_collator("seq2seq")
def seq2seq_collator(manifest: Mapping[str, Any], options: dict) -> Seq2SeqCollator:
    """The dataset's pad id, vocabulary size and ``decoder_start_token_id`` (explicit options win)."""
    options = dict(options)
    section = manifest.get("task") or {}
    if "decoder_start_token_id" not in options:
        options["decoder_start_token_id"] = section.get("decoder_start_token_id")
    resolved = manifest_options(manifest, {k: options[k] for k in ("pad_token_id", "vocab_size") if k in options})
    options.setdefault("pad_token_id", resolved["pad_token_id"])
    options.setdefault("vocab_size", resolved.get("vocab_size"))
    return Seq2SeqCollator(**options)
