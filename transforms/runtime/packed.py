"""Packed rows at run time: sequence boundaries, positions and block-diagonal attention masks.

A packed row (``--pack-length``, see :mod:`transforms.packing.rows`) holds several sequences; its
``seq_lengths`` say where each ends. Attention must stay inside each sequence, or every sequence
after the first sees (and is trained on) the tokens of the ones before it. What keeps it inside
depends on the attention implementation (measured with transformers 5.25; table in ``docs/packing.md``):

* a 4D *additive* float mask ``[B, 1, L, L]`` (0 where a token may attend, the dtype's minimum
  elsewhere) is honoured by eager and SDPA attention: transformers passes a 4D mask through unchanged;
* a 4D *boolean* mask is honoured by SDPA but not by eager attention, which adds it to the scores;
* reset ``position_ids`` alone do not separate sequences under a 2D (all-ones) mask, for any
  implementation; with *no* mask, transformers derives the block-diagonal mask from the reset
  positions for eager/SDPA only when no cache is in use (``use_cache=False``), and flash-attention
  kernels read ``cu_seq_lens_q/k``.

This module holds the checks and tensors :class:`transforms.runtime.collate.Collator` uses for packed rows
(numpy and torch only).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

SEQ_LENGTHS = "seq_lengths"


def refuse_packed_features(features: Sequence[Mapping[str, Any]]) -> None:
    """Raise ``ValueError`` when a row holds several sequences (a ``seq_lengths`` of more than one entry)
    but the collator was not configured for packed rows: its 2D mask would let them attend to each other."""
    for i, feature in enumerate(features):
        get = getattr(feature, "get", None)
        seq = get(SEQ_LENGTHS) if get is not None else None
        if seq is not None and len(seq) > 1:
            raise ValueError(
                f"row {i} is a packed row ({len(seq)} sequences): collating it with a plain 2D attention mask "
                "would let every sequence attend to the ones before it. Use Collator.from_manifest(path) "
                "(a block-diagonal 4D mask) or Collator(packed=True, ...); see docs/packing.md")


def sequence_lengths(features: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """Every row's ``seq_lengths`` as an int64 array, checked: present, non-negative integers summing to the
    row's ``input_ids`` length. Raises ``ValueError`` naming the row."""
    out = []
    for i, feature in enumerate(features):
        try:
            seq = feature.get(SEQ_LENGTHS)
            size = len(feature["input_ids"])
        except (AttributeError, KeyError, TypeError):
            seq, size = None, None
        if seq is None:
            raise ValueError(
                f"row {i} has no 'seq_lengths': a packed collator needs every row's sequence boundaries (ShardDataset "
                "returns them for packed folders; with transformers' Trainer keep remove_unused_columns=False)")
        array = np.asarray(seq)
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise ValueError(f"row {i}: seq_lengths must be a flat sequence of integers")
        array = array.astype(np.int64, copy=False)
        if array.size and int(array.min()) < 0:
            raise ValueError(f"row {i}: seq_lengths has a negative length")
        if size is not None and int(array.sum()) != size:
            raise ValueError(f"row {i}: seq_lengths sum to {int(array.sum())} but input_ids has {size} tokens")
        out.append(array)
    return out


def positions(lengths: np.ndarray) -> np.ndarray:
    """int64 ``0, 1, ..., n-1`` for every length ``n``, concatenated (positions restarting per sequence)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        np.cumsum(lengths[:-1], out=starts[1:])
    return np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)


def sequence_ids(rows: Sequence[np.ndarray], width: int, starts: Sequence[int] | None = None) -> np.ndarray:
    """int64 ``[B, width]``: the sequence number of every position of each row (row ``b``'s tokens start at
    ``starts[b]``, default 0); positions outside the row's sequences (padding) get their own number."""
    out = np.empty((len(rows), width), dtype=np.int64)
    for b, lengths in enumerate(rows):
        s = 0 if starts is None else int(starts[b])
        total = int(np.sum(lengths))
        out[b, :s] = len(lengths)  # left padding: a block of its own
        out[b, s:s + total] = np.repeat(np.arange(len(lengths)), lengths)
        out[b, s + total:] = len(lengths) + 1
    return out


def block_mask(ids: np.ndarray, *, causal: bool, kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 4D mask ``[B, 1, W, W]`` letting position ``q`` attend to ``k`` only inside its own sequence
    (``ids[b, q] == ids[b, k]``), and only to ``k <= q`` when ``causal``. ``kind="additive"``: ``dtype``, 0
    where allowed and ``finfo(dtype).min`` elsewhere; ``kind="bool"``: ``True`` where allowed."""
    seq = torch.from_numpy(np.ascontiguousarray(ids))
    allowed = seq[:, :, None] == seq[:, None, :]
    if causal:
        width = seq.shape[1]
        allowed &= torch.ones(width, width, dtype=torch.bool).tril_()
    if kind == "bool":
        return allowed[:, None]
    out = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]
