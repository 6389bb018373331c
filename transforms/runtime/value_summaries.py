"""Value summaries of the read-only token columns a :class:`ShardDataset` maps, so the collator can
check a batch of dataset rows without scanning their tokens again.

The rows ``ShardDataset`` returns are slices of one read-only numpy array per shard column (a
``PROT_READ`` memory map: nobody can change the values through it). The dataset registers each such
array (:func:`register_column`). The collator first checks a batch the usual way (one concatenation
and a few reductions, :meth:`Collator._check_values`) and credits the tokens it checked to each
registered column the rows came from (:func:`credit`); once the tokens checked from a column reach a
quarter of its length, the whole column is summarised once (its minimum, its maximum, and its
negative values when they are all equal, e.g. only -100: three passes, about what a quarter of the
column costs through per-batch checks). From then on a batch whose rows all come from summarised
columns is checked against the summaries alone (:func:`summaries`): a few dictionary lookups
instead of a pass over its tokens. The deferral keeps random access over many large shards from
scanning every shard at the first batch.

A summary lives as long as its column array: entries are keyed by the array's ``id`` and removed
when the array is freed (``weakref.finalize``), so an ``id`` reused later never finds a stale entry.
Only arrays the dataset registers are ever trusted; rows of other origin (lists, tensors, arrays the
user built) are always checked per batch.
"""
from __future__ import annotations

import operator
import threading
import weakref
from typing import Iterable

import numpy as np

__all__ = ["ColumnSummary", "register_column", "credit", "summaries"]

# Summarise a column once the tokens checked per batch from it reach this fraction of its length.
SUMMARISE_AFTER_FRACTION = 0.25


class ColumnSummary:
    """What one registered column holds: ``low``/``high`` (its minimum and maximum) and ``negative``:
    ``()`` when no value is negative, ``(v,)`` when every negative value equals ``v``, ``None`` when
    negative values differ (never trusted then)."""

    __slots__ = ("size", "checked", "low", "high", "negative", "ref")

    def __init__(self, array: np.ndarray):
        self.size = int(array.size)
        self.checked = 0
        self.low: int | None = None  # None: not summarised yet
        self.high = 0
        self.negative: tuple[int, ...] | None = ()
        self.ref = weakref.ref(array)

    @property
    def ready(self) -> bool:
        return self.low is not None

    def summarise(self) -> None:
        array = self.ref()
        if array is None:
            return
        flat = array.reshape(-1)
        if flat.size == 0:
            self.low, self.high, self.negative = 0, 0, ()
            return
        low, high = int(flat.min()), int(flat.max())
        negative: tuple[int, ...] | None = ()
        if low < 0:
            # every negative value equals the minimum: count both in one comparison each
            negative = (low,) if np.count_nonzero(flat < 0) == np.count_nonzero(flat == low) else None
        self.negative, self.high, self.low = negative, high, low  # low last: ``ready`` comes last

    def ids_ok(self, limit: int) -> bool:
        return self.low is not None and self.low >= 0 and self.high <= limit

    def labels_ok(self, limit: int, ignore: tuple[int, ...]) -> bool:
        return (self.low is not None and self.high <= limit and self.negative is not None
                and all(v in ignore for v in self.negative))


_COLUMNS: dict[int, ColumnSummary] = {}
_BASE = operator.attrgetter("base")
_LOCK = threading.Lock()


def register_column(values: np.ndarray) -> None:
    """Register the values of one shard column (a read-only numpy array) whose row slices the
    dataset hands out. Rows are recognised by their ``base``; an array whose base covers more than
    the values, or that is writable, is not registered (its rows are checked per batch)."""
    base = values.base
    if (not isinstance(base, np.ndarray) or values.flags.writeable or base.flags.writeable
            or base.dtype != values.dtype or base.size != values.size or values.dtype.kind not in "iu"):
        return
    key = id(base)
    with _LOCK:
        if key in _COLUMNS and _COLUMNS[key].ref() is base:
            return
        _COLUMNS[key] = ColumnSummary(base)
    weakref.finalize(base, _forget, key)


def _forget(key: int) -> None:
    with _LOCK:
        _COLUMNS.pop(key, None)


def summaries(arrays: Iterable[np.ndarray]) -> list[ColumnSummary] | None:
    """The summaries of the registered columns ``arrays`` (row slices) come from, one per column, or
    ``None`` when one of them is not a slice of a registered column. (An entry is removed when its
    column is freed, before its ``id`` can be reused, and a row keeps its column alive.)"""
    if not _COLUMNS:
        return None
    found = [_COLUMNS.get(key) for key in set(map(id, map(_BASE, arrays)))]
    return None if None in found else found


def credit(arrays: Iterable[np.ndarray]) -> None:
    """Count the tokens of ``arrays`` (rows just checked per batch) against their registered columns;
    summarise a column once a quarter of it has been checked that way."""
    if not _COLUMNS:
        return
    for array in arrays:
        entry = _COLUMNS.get(id(array.base))
        if entry is None or entry.ready or entry.ref() is not array.base:
            continue
        entry.checked += array.size
        if entry.checked >= SUMMARISE_AFTER_FRACTION * entry.size:
            entry.summarise()
