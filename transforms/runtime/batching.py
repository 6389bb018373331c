"""Batch samplers that reduce padding: length-grouped and token-budget batches.

Both are ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)`` batch samplers over a
map-style dataset, driven by an array of row lengths (``ShardDataset.lengths``). An epoch is built
as follows (a pure function of ``seed`` and ``epoch``):

1. shuffle all row indices (``epoch_permutation``);
2. cut the permutation into windows of ``window`` rows and sort each window by length, longest
   first (large windows: rows of similar length end up together, yet the epoch stays shuffled);
3. cut every sorted window into batches (fixed ``batch_size``, or as many rows as fit in
   ``max_tokens``);
4. shuffle the order of the batches (optionally the longest batch first, to hit OOM at step 0);
5. with ``world_size > 1``: make the number of batches divisible (``drop_last=False`` repeats the
   first batches, ``drop_last=True`` drops the last ones) and give batch ``b`` to rank
   ``b % world_size``: every rank runs the same number of steps.

:func:`padding_fraction` measures what a padded collator wastes on a list of batches; the samplers
expose it for their current epoch.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from .partition import epoch_permutation, resolve_rank_world_size

__all__ = ["padding_fraction", "LengthGroupedBatchSampler", "TokenBudgetBatchSampler"]


def _round_up(x: np.ndarray | int, multiple: int | None):
    if not multiple:
        return x
    return -(-x // multiple) * multiple


def padding_fraction(
    batches: Iterable[Sequence[int]], lengths: np.ndarray, *, pad_to_multiple_of: int | None = None
) -> float:
    """Fraction of the positions of padded batches that are padding.

    ``sum over batches of (batch_size * padded_width - real tokens) / sum of batch_size * padded_width``
    where ``padded_width`` is the longest row of the batch (rounded up to ``pad_to_multiple_of``).
    0.0 means no padding; a padding-free collator always achieves 0.
    """
    lengths = np.asarray(lengths)
    slots = 0
    real = 0
    for batch in batches:
        lens = lengths[np.asarray(batch, dtype=np.int64)]
        if len(lens) == 0:
            continue
        slots += len(lens) * int(_round_up(int(lens.max()), pad_to_multiple_of))
        real += int(lens.sum())
    return 0.0 if slots == 0 else 1.0 - real / slots


class _EpochBatchSampler:
    """Shared machinery: per-epoch batch lists, rank split, ``set_epoch``/``__len__``/``__iter__``."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        window: int,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        rank: int | None,
        world_size: int | None,
        longest_first: bool,
    ):
        self.lengths = np.asarray(getattr(lengths, "lengths", lengths), dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError("lengths must be one-dimensional")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = int(window)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.longest_first = bool(longest_first)
        self.rank, self.world_size = resolve_rank_world_size(rank, world_size)
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _cut(self, sorted_window: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _all_batches(self) -> list[np.ndarray]:
        """Every batch of the epoch (all ranks), in delivery order."""
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 1])
        order = epoch_permutation(n, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        batches: list[np.ndarray] = []
        for lo in range(0, n, self.window):
            window = order[lo:lo + self.window]
            window = window[np.argsort(-self.lengths[window], kind="stable")]
            batches.extend(self._cut(window))
        batches = self._filter(batches)
        if self.shuffle and batches:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        if self.longest_first and batches:
            cost = [int(self.lengths[b].max()) * len(b) for b in batches]
            first = int(np.argmax(cost))
            batches.insert(0, batches.pop(first))
        return batches

    def _filter(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        return batches

    def batches(self) -> list[np.ndarray]:
        """This rank's batches (int64 index arrays) for the current epoch."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._all_batches()
        w = self.world_size
        if w > 1 and len(batches) % w:
            if self.drop_last:
                batches = batches[: len(batches) // w * w]
            else:
                extra = w - len(batches) % w
                batches = batches + [batches[i % len(batches)] for i in range(extra)]
        mine = batches[self.rank::w]
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.batches())

    def padding_fraction(self, *, pad_to_multiple_of: int | None = None) -> float:
        """Padding a padded collator would add on this rank's batches of the current epoch."""
        return padding_fraction(self.batches(), self.lengths, pad_to_multiple_of=pad_to_multiple_of)


class LengthGroupedBatchSampler(_EpochBatchSampler):
    """Fixed-size batches of rows of similar length (sorted inside large shuffled windows).

    Args:
        lengths: int[N] row lengths (e.g. ``ShardDataset.lengths``; a dataset object with a
            ``lengths`` attribute is accepted too).
        batch_size: rows per batch.
        window_batches: window size in batches (``window = batch_size * window_batches`` rows);
            larger = less padding, less randomness. ``window_batches=1`` is random batching.
        drop_last: drop incomplete batches (only the last one of the epoch can be) and, with
            several ranks, the batches that do not divide ``world_size``; otherwise pad by
            repeating batches.
        longest_first: move the most expensive batch to the front (surface OOM immediately).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        window_batches: int = 64,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        longest_first: bool = False,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = int(batch_size)
        super().__init__(
            lengths, window=batch_size * max(1, int(window_batches)), seed=seed, shuffle=shuffle,
            drop_last=drop_last, rank=rank, world_size=world_size, longest_first=longest_first,
        )

    def _cut(self, sorted_window: np.ndarray) -> list[np.ndarray]:
        b = self.batch_size
        return [sorted_window[i:i + b] for i in range(0, len(sorted_window), b)]

    def _filter(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        if self.drop_last:
            return [b for b in batches if len(b) == self.batch_size]
        return batches


class TokenBudgetBatchSampler(_EpochBatchSampler):
    """Variable-size batches holding at most ``max_tokens`` tokens each.

    Args:
        lengths: int[N] row lengths (see :class:`LengthGroupedBatchSampler`).
        max_tokens: budget per batch. With ``padding_free=False`` the cost of a batch is
            ``len(batch) * longest_row`` (rounded up to ``pad_to_multiple_of``), i.e. the size of
            the padded ``input_ids`` tensor; with ``padding_free=True`` it is the sum of the row
            lengths (the flattened ``[1, total]`` row). A single row longer than the budget forms
            a batch of its own (it is never dropped).
        max_batch_size: optional cap on rows per batch.
        window: rows sorted together (default 4096).
        drop_last: with several ranks, drop the batches that do not divide ``world_size``
            instead of repeating the first ones.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        max_tokens: int,
        max_batch_size: int | None = None,
        padding_free: bool = False,
        pad_to_multiple_of: int | None = None,
        window: int = 4096,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        longest_first: bool = False,
    ):
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.max_tokens = int(max_tokens)
        self.max_batch_size = int(max_batch_size) if max_batch_size else None
        self.padding_free = bool(padding_free)
        self.pad_to_multiple_of = pad_to_multiple_of
        super().__init__(
            lengths, window=window, seed=seed, shuffle=shuffle, drop_last=drop_last,
            rank=rank, world_size=world_size, longest_first=longest_first,
        )

    def _cut(self, sorted_window: np.ndarray) -> list[np.ndarray]:
        lens = self.lengths[sorted_window]  # descending
        cap = self.max_batch_size or len(lens)
        out = []
        i = 0
        n = len(lens)
        if self.padding_free:
            csum = np.concatenate([[0], np.cumsum(lens)])
            while i < n:
                # largest j with csum[j] - csum[i] <= max_tokens, at least one row
                j = int(np.searchsorted(csum, csum[i] + self.max_tokens, side="right")) - 1
                j = min(max(j, i + 1), i + cap, n)
                out.append(sorted_window[i:j])
                i = j
        else:
            while i < n:
                width = int(_round_up(int(lens[i]), self.pad_to_multiple_of))  # longest row of the batch
                k = max(1, min(cap, self.max_tokens // max(width, 1)))
                out.append(sorted_window[i:i + k])
                i += k
        return out

    def budget_utilisation(self) -> float:
        """Mean fraction of ``max_tokens`` used per batch (cost as defined by ``padding_free``)."""
        batches = self.batches()
        if not batches:
            return 0.0
        if self.padding_free:
            used = [int(self.lengths[b].sum()) for b in batches]
        else:
            used = [len(b) * int(_round_up(int(self.lengths[b].max()), self.pad_to_multiple_of)) for b in batches]
        return float(np.mean(np.minimum(used, self.max_tokens)) / self.max_tokens)
