"""Labels and padding on token arrays: pure numpy, shared by the job and the tests (truncation:
:mod:`transforms.truncation`).

Conventions (the whole project uses them):

* ``input_ids``: 1-D ``np.int32`` token ids.
* ``labels``: 1-D ``np.int32``, same length; equal to ``input_ids`` where the token is trained and
  ``IGNORE_INDEX`` (-100) everywhere else. Labels are **not shifted**: the model shifts them.
* Padding is identified by *position* (``length``/``attention_mask``), never by token id, so an EOS
  whose id equals the pad id is still trained.
"""
from __future__ import annotations

import bisect
from itertools import accumulate
from typing import Sequence

import numpy as np

from transforms.shard_format import IGNORE_INDEX


def span_token_ranges(encoding, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token index ranges ``[first, last)`` covering each character span, from a ``tokenizers.Encoding``.

    A token is in the range when it overlaps the span (the rule
    ``apply_chat_template(return_assistant_tokens_mask=True)`` uses), found with the encoding's
    ``char_to_token`` at the two span ends instead of converting every token's offsets. Characters that belong
    to no token (e.g. whitespace for WordPiece) are skipped inward. An empty or token-less span gives ``(0, 0)``.
    """
    ranges = []
    char_to_token = encoding.char_to_token
    if len(spans) > 8 and hasattr(encoding, "offsets"):  # many spans: O(log n) per lookup, not O(n)
        char_to_token = _first_token_covering(encoding) or char_to_token
    for start, end in spans:
        first = last = None
        for position in range(start, end):
            first = char_to_token(position)
            if first is not None:
                break
        if first is not None:
            for position in range(end - 1, start - 1, -1):
                last = char_to_token(position)
                if last is not None:
                    break
        ranges.append((first, last + 1) if first is not None and last is not None else (0, 0))
    return ranges


def _first_token_covering(encoding):
    """``encoding.char_to_token`` (the first token whose offsets cover a character), as a lookup built once
    from the offsets: ``tokenizers`` scans all offsets per call, so a row of many turns would cost time
    quadratic in its length. ``None`` when the offsets are not in order (then the scan is used)."""
    offsets = encoding.offsets
    starts = [start for start, _ in offsets]
    if any(a > b for a, b in zip(starts, starts[1:])):
        return None
    reach = list(accumulate((end for _, end in offsets), max))  # the furthest end among tokens [0, i]

    def lookup(position: int) -> int | None:
        last = bisect.bisect_right(starts, position) - 1  # tokens 0..last start at or before position
        first = bisect.bisect_right(reach, position)      # the first token that ends after position
        return first if first <= last else None

    return lookup


def mask_from_ranges(length: int, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Boolean mask of ``length`` tokens, true inside any ``[first, last)`` range."""
    mask = np.zeros(length, dtype=bool)
    for first, last in ranges:
        mask[first:last] = True
    return mask


def labels_from_mask(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``input_ids`` where ``mask`` is true, ``IGNORE_INDEX`` elsewhere (int32)."""
    return np.where(mask, input_ids, IGNORE_INDEX).astype(np.int32, copy=False)


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


def count_trained_turns(turn_ranges: Sequence[tuple[int, int]], mask: np.ndarray, window: tuple[int, int]) -> int:
    """How many assistant turns keep at least one trained token.

    Args:
        turn_ranges: token ranges of the assistant turns, in the untruncated row.
        mask: trained-token mask of the untruncated row.
        window: ``[lo, hi)`` token indices kept by truncation.
    """
    lo, hi = window
    count_nonzero = np.count_nonzero
    return sum(1 for first, last in turn_ranges if count_nonzero(mask[max(first, lo):min(last, hi)]))
