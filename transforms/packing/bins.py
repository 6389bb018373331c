"""Bin packing of sequence lengths: which rows go into which packed row (pure, deterministic, numpy only).

:func:`plan_bins` groups item indices ``0..n-1`` with lengths ``lengths[i]`` into bins whose summed length
is at most ``capacity``. Every index is in exactly one bin. The result depends only on ``lengths``,
``capacity`` and ``strategy``: ties are broken by the item's index and by the bin's opening order, never
by hashing or timing.

Strategies:

* ``bfd`` (best-fit decreasing, the default; TRL's ``pack_dataset(strategy="bfd")`` packs this way):
  items in decreasing length (equal lengths: lower index first); each goes into the open bin with the
  *least* room that still fits it (several: the one opened first), else into a new bin;
* ``ffd`` (first-fit decreasing): same order; each goes into the *first opened* bin that fits it;
* ``sequential``: items in index order; a new bin is opened when the next item does not fit the
  current one (the order of rows is kept; the least efficient).

Within a bin, items are listed in increasing index order, and bins are returned ordered by their first
(smallest) index: packed rows follow the order of the rows they hold (for the job, the shard's
``sort_key`` order), whichever strategy placed them.
"""
from __future__ import annotations

import bisect
import heapq
from typing import Sequence

import numpy as np

STRATEGIES = ("bfd", "ffd", "sequential")


def plan_bins(lengths: Sequence[int] | np.ndarray, capacity: int, strategy: str = "bfd") -> list[list[int]]:
    """The bins of :mod:`this module <transforms.packing.bins>`: a list of bins, each a list of item indices.

    Raises:
        ValueError: an unknown strategy, a capacity below 1, a negative length, or an item longer than
            ``capacity`` (the job truncates or rejects those before packing).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown packing strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"pack capacity must be an integer >= 1, got {capacity!r}")
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if len(sizes) == 0:
        return []
    if int(sizes.min()) < 0:
        raise ValueError("sequence lengths must be >= 0")
    longest = int(sizes.max())
    if longest > capacity:
        item = int(np.argmax(sizes))
        raise ValueError(f"item {item} has length {longest}, more than the pack capacity {capacity}")
    if strategy == "sequential":
        bins = _sequential(sizes.tolist(), int(capacity))
    else:
        # decreasing length, equal lengths in index order (a stable sort of the negated lengths)
        order = np.argsort(-sizes, kind="stable").tolist()
        fit = _best_fit if strategy == "bfd" else _first_fit
        bins = fit(order, sizes.tolist(), int(capacity))
    for members in bins:
        members.sort()
    bins.sort(key=lambda members: members[0])
    return bins


def _sequential(sizes: list[int], capacity: int) -> list[list[int]]:
    bins: list[list[int]] = []
    room = -1
    for i, size in enumerate(sizes):
        if size > room:
            bins.append([])
            room = capacity
        bins[-1].append(i)
        room -= size
    return bins


def _best_fit(order: list[int], sizes: list[int], capacity: int) -> list[list[int]]:
    """Best fit over the distinct room values of the open bins: a sorted list of the values present
    and, per value, a heap of the bins with that room (lowest bin number first)."""
    bins: list[list[int]] = []
    rooms: list[int] = []                       # sorted distinct rooms of open bins
    holders: dict[int, list[int]] = {}           # room -> heap of bin numbers
    for i in order:
        size = sizes[i]
        at = bisect.bisect_left(rooms, size)
        if at < len(rooms):
            room = rooms[at]
            heap = holders[room]
            b = heapq.heappop(heap)
            if not heap:
                del holders[room]
                del rooms[at]
        else:
            b, room = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        left = room - size
        heap = holders.get(left)
        if heap is None:
            holders[left] = [b]
            bisect.insort(rooms, left)
        else:
            heapq.heappush(heap, b)
    return bins


def _first_fit(order: list[int], sizes: list[int], capacity: int) -> list[list[int]]:
    """First fit with a max segment tree over bin numbers (leaf ``b``: the room of bin ``b``, -1 while the
    bin is not open): the leftmost bin with enough room is found in O(log n)."""
    n = len(order)
    width = 1
    while width < n:
        width *= 2
    tree = [-1] * (2 * width)
    bins: list[list[int]] = []
    for i in order:
        size = sizes[i]
        if tree[1] >= size:
            node = 1
            while node < width:
                node = 2 * node if tree[2 * node] >= size else 2 * node + 1
            b = node - width
        else:
            b = len(bins)
            bins.append([])
            node = width + b
            tree[node] = capacity
        bins[b].append(i)
        tree[node] -= size
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return bins
