"""Truncation policy: pure functions over a row's token arrays (``--max-length``, ``--truncation``).

A row is described by :class:`TokenArrays`: its ids, its trained-token mask, the token ranges of its
supervised assistant turns and its reasoning, and its *protected spans*: token ranges that are never
split (the images of a vision row; text rows pass none). :func:`truncate` applies a mode:

* ``right`` keeps the start, ``left`` keeps the end; a cut that would fall inside a protected span
  moves to its edge, so the span (and what it stands for) is dropped whole;
* ``turns`` first takes shorter versions of the row, whole oldest exchanges dropped
  (:func:`exchange_cuts`), from a caller-given producer until one fits, then cuts on the right;
* ``drop`` rejects the record as ``too_long``.

A truncation that leaves no trained token rejects the record as ``no_loss_tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected

TRUNCATION_MODES = ("right", "left", "turns", "drop")


@dataclass(frozen=True)
class TokenArrays:
    """One row's tokens before truncation.

    Attributes:
        input_ids: ``np.int32`` token ids.
        mask: trained positions (``bool``, same length).
        turn_ranges: token ranges ``[first, last)`` of the row's supervised assistant turns.
        reasoning: positions of the turns' reasoning (``bool``, same length).
        num_messages: how many messages of the conversation the row holds.
        protected: token ranges never split by a cut (sorted; images), empty for text.
        protected_items: what each protected range stands for (e.g. an image occurrence index).
    """

    input_ids: np.ndarray
    mask: np.ndarray
    turn_ranges: Sequence[tuple[int, int]]
    reasoning: np.ndarray
    num_messages: int
    protected: Sequence[tuple[int, int]] = ()
    protected_items: Sequence[int] = field(default=())


@dataclass(frozen=True)
class Truncated:
    """The result of :func:`truncate`: the arrays kept (maybe a shorter version), the token window
    ``[lo, hi)`` of them that the row keeps, the protected items inside that window, and the length
    of the row before truncation."""

    arrays: TokenArrays
    window: tuple[int, int]
    kept_items: tuple[int, ...]
    full_length: int


def fit_window(n: int, max_length: int, side: str, protected: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
    """The kept window ``[lo, hi)`` of at most ``max_length`` of ``n`` tokens: the first tokens
    (``side="right"``) or the last ones (``"left"``), moved so that no protected span is split."""
    if side == "right":
        lo, hi = 0, max_length
        for start, end in protected:
            if start < hi < end:
                hi = start
    else:
        lo, hi = n - max_length, n
        for start, end in protected:
            if start < lo < end:
                lo = end
    return lo, hi


def exchange_cuts(messages: Sequence[Mapping]) -> Iterator[list[int]]:
    """Indices of the messages kept when whole exchanges are dropped, oldest first.

    An exchange is a user message and what follows it up to the next user message; leading system
    messages are always kept, and so is the last exchange. Yields one index list per cut, shortest
    drop first."""
    head = 0
    while head < len(messages) and messages[head].get("role") == "system":
        head += 1
    starts = [i for i in range(head, len(messages)) if messages[i].get("role") == "user"]
    for cut in starts[1:]:
        yield list(range(head)) + list(range(cut, len(messages)))


def truncate(arrays: TokenArrays, *, max_length: int | None, mode: str,
             shorter: Callable[[], Iterable[TokenArrays]] = lambda: ()) -> Truncated:
    """Apply ``mode`` (one of :data:`TRUNCATION_MODES`) so the row holds at most ``max_length`` tokens.

    Args:
        arrays: the row's tokens.
        max_length: the limit (``None``: no limit).
        mode: ``right``, ``left``, ``turns`` or ``drop``.
        shorter: for ``turns``: produces shorter versions of the row, oldest exchange dropped first
            (it may stop early, e.g. when a shorter version renders differently). A version without
            trained tokens ends the search; the first version that fits is taken.

    Raises:
        RecordRejected: ``too_long`` (mode ``drop``), ``no_loss_tokens`` (no trained token is left).
    """
    full_length = len(arrays.input_ids)
    if max_length is None or full_length <= max_length:
        return Truncated(arrays, (0, full_length), tuple(arrays.protected_items), full_length)
    if mode == "drop":
        raise RecordRejected(errors.TOO_LONG, f"{full_length} tokens > --max-length {max_length}")
    if mode == "turns":
        for candidate in shorter():
            if not candidate.mask.any():
                break  # dropping more would leave nothing to train; fall back to right truncation
            arrays = candidate
            if len(candidate.input_ids) <= max_length:
                break
    n = len(arrays.input_ids)
    window = (0, n)
    if n > max_length:
        window = fit_window(n, max_length, "left" if mode == "left" else "right", arrays.protected)
    lo, hi = window
    if not np.count_nonzero(arrays.mask[lo:hi]):
        raise RecordRejected(errors.NO_LOSS_TOKENS,
                             f"truncation to {max_length} tokens ({mode}) removed every trained token")
    kept = tuple(item for (start, end), item in zip(arrays.protected, arrays.protected_items)
                 if start >= lo and end <= hi)
    return Truncated(arrays, window, kept, full_length)
