"""Labels, truncation and padding on token arrays: pure numpy, shared by the job and the tests.

Conventions (the whole project uses them):

* ``input_ids``: 1-D ``np.int32`` token ids.
* ``labels``: 1-D ``np.int32``, same length; equal to ``input_ids`` where the token is trained and
  ``IGNORE_INDEX`` (-100) everywhere else. Labels are **not shifted**: the model shifts them.
* Padding is identified by *position* (``length``/``attention_mask``), never by token id, so an EOS
  whose id equals the pad id is still trained.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from transforms.shard_format import IGNORE_INDEX

TRUNCATION_MODES = ("right", "left", "turns", "drop")


def offsets_array(offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Token character offsets as an ``(n, 2)`` int64 array."""
    if len(offsets) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.asarray(offsets, dtype=np.int64).reshape(-1, 2)


def trained_token_mask(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Boolean mask of tokens that overlap any trained character span.

    A token ``[a, b)`` is trained when some span ``[s, e)`` has ``a < e`` and ``b > s`` (the rule
    ``apply_chat_template(return_assistant_tokens_mask=True)`` uses). Token offsets must be
    non-decreasing, as a tokenizer's are; each span then selects a contiguous run of tokens, found
    by binary search.

    Args:
        offsets: ``(n, 2)`` character offsets of the tokens.
        spans: ``(start, end)`` character spans.
    Returns:
        ``(n,)`` bool array.
    """
    mask = np.zeros(len(offsets), dtype=bool)
    if len(offsets) == 0:
        return mask
    starts = offsets[:, 0]
    ends = offsets[:, 1]
    # Running max makes the search valid even if a tokenizer reports a zero-width token out of order.
    ends_sorted = np.maximum.accumulate(ends)
    for span_start, span_end in spans:
        if span_end <= span_start:
            continue
        first = int(np.searchsorted(ends_sorted, span_start, side="right"))
        last = int(np.searchsorted(starts, span_end, side="left"))
        if last > first:
            window = slice(first, last)
            mask[window] |= (starts[window] < span_end) & (ends[window] > span_start)
    return mask


def labels_from_mask(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``input_ids`` where ``mask`` is true, ``IGNORE_INDEX`` elsewhere (int32)."""
    return np.where(mask, input_ids, IGNORE_INDEX).astype(np.int32, copy=False)


def truncate(input_ids: np.ndarray, labels: np.ndarray, *, max_length: int, side: str):
    """Cut a row to ``max_length`` tokens.

    Args:
        side: ``"right"`` keeps the first ``max_length`` tokens, ``"left"`` keeps the last ones.
    Returns:
        ``(input_ids, labels, removed)`` where ``removed`` is the number of tokens cut.
    """
    n = len(input_ids)
    if n <= max_length:
        return input_ids, labels, 0
    if side == "right":
        return input_ids[:max_length], labels[:max_length], n - max_length
    if side == "left":
        return input_ids[n - max_length:], labels[n - max_length:], n - max_length
    raise ValueError(f"truncate side must be 'right' or 'left', got {side!r}")


def pad_row(input_ids: np.ndarray, labels: np.ndarray, *, length: int, pad_token_id: int):
    """Right-pad a row to ``length``.

    Returns:
        ``(input_ids, labels, attention_mask)``: padding positions hold ``pad_token_id`` /
        ``IGNORE_INDEX`` / 0; real positions keep their values / 1 (``attention_mask`` is int8).
    """
    n = len(input_ids)
    if n > length:
        raise ValueError(f"row of {n} tokens does not fit pad length {length}")
    ids = np.full(length, pad_token_id, dtype=np.int32)
    ids[:n] = input_ids
    lab = np.full(length, IGNORE_INDEX, dtype=np.int32)
    lab[:n] = labels
    attention = np.zeros(length, dtype=np.int8)
    attention[:n] = 1
    return ids, lab, attention


def count_trained_turns(offsets: np.ndarray, turn_spans: Sequence[tuple[int, int]], mask: np.ndarray) -> int:
    """How many assistant turn spans still have at least one trained token in ``mask``.

    ``offsets`` and ``mask`` describe the tokens that remain after truncation.
    """
    count = 0
    for span in turn_spans:
        if np.any(trained_token_mask(offsets, [span]) & mask):
            count += 1
    return count
