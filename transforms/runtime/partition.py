"""Deterministic shuffling and partitioning across ranks and DataLoader workers, resumable mid-epoch.

The order of an epoch is a pure function of ``(seed, epoch, len(dataset))``:

1. ``epoch_permutation``: a permutation of all row indices (or ``arange`` without shuffling).
2. ``rank_indices``: the permutation made divisible by ``world_size`` and strided over ranks
   (rank ``r`` takes positions ``r, r + world_size, ...``). When ``len(dataset)`` does not divide:

   - ``drop_last=False`` (default): the permutation is padded by repeating its first elements, so
     every rank gets ``ceil(N / world_size)`` rows and up to ``world_size - 1`` rows are seen twice
     in that epoch (the :class:`torch.utils.data.DistributedSampler` convention);
   - ``drop_last=True``: the last ``N % world_size`` rows of the permutation are skipped for that
     epoch (they are different rows every epoch); every rank gets ``N // world_size`` rows.

   Either way every rank yields the same number of rows (collectives stay in step) and, within
   the padded/truncated permutation, no row is lost or given to two ranks.
3. DataLoader workers: a rank's sequence is cut into consecutive chunks of ``batch_size`` rows and
   chunk ``c`` goes to worker ``c % num_workers``. ``DataLoader`` collects one batch per worker in
   round-robin order, so with the same ``batch_size`` it delivers the rank's sequence *in order*
   whatever ``num_workers`` is. That makes the position in the sequence (``consumed``) the whole
   resume state.

Imports: this module works on any map-style dataset of rows with a ``manifest`` (a
:class:`~transforms.runtime.dataset.ShardDataset`) and never imports :mod:`.dataset`;
``dataset`` imports it for :meth:`ShardDataset.iterable` (one direction, no import circle) and
registers itself as :data:`open_dataset`, the override point that opens a dataset folder given as
a path (``ShardIterableDataset("out/")``).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np
import torch.utils.data

#: ``path -> dataset``: opens a dataset folder passed as a path; :mod:`.dataset` sets it to ``ShardDataset``.
open_dataset: Callable[[str | os.PathLike], Any] | None = None

__all__ = [
    "epoch_permutation",
    "rank_indices",
    "resolve_rank_world_size",
    "ShardIterableDataset",
    "ResumableDataLoader",
]


def epoch_permutation(num_rows: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """int64[num_rows]: the row order of ``epoch`` (identical in every process for the same arguments)."""
    if not shuffle:
        return np.arange(num_rows, dtype=np.int64)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(num_rows).astype(np.int64)


def rank_indices(order: np.ndarray, *, rank: int, world_size: int, drop_last: bool = False) -> np.ndarray:
    """The part of ``order`` that belongs to ``rank`` (see the module docstring for the padding rule)."""
    n = len(order)
    if drop_last:
        total = (n // world_size) * world_size
        order = order[:total]
    else:
        total = -(-n // world_size) * world_size
        if total > n:
            order = np.resize(order, total)  # repeats from the start (wraps again if n < world_size - 1)
    return order[rank:total:world_size]


def resolve_rank_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values win, then an initialised ``torch.distributed``, then ``RANK``/``WORLD_SIZE``, then (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = int(os.environ.get("RANK", 0)) if rank is None else rank
            world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


class ShardIterableDataset(torch.utils.data.IterableDataset):
    """Iterable mode: this rank's rows of the epoch, in a deterministic shuffled order, resumable.

    Yields the same dicts as ``ShardDataset`` (numpy views). Use it with
    ``DataLoader(it, batch_size=it.batch_size, num_workers=..., collate_fn=Collator(...))`` or,
    to keep :meth:`state_dict` exact with worker processes, :class:`ResumableDataLoader`.

    Args:
        dataset: a :class:`~transforms.runtime.dataset.ShardDataset` or a dataset folder path
            (``ShardDataset(path).iterable(...)`` is the same in one call).
        batch_size: rows per worker chunk; must equal the DataLoader's ``batch_size`` (it is what
            makes the delivered order independent of ``num_workers``).
        seed, epoch: the shuffle is ``epoch_permutation(len(dataset), seed=seed, epoch=epoch)``.
        shuffle: ``False`` walks rows in manifest order.
        rank, world_size: default from ``torch.distributed`` or ``RANK``/``WORLD_SIZE``, else 0/1.
        drop_last: how a row count that does not divide ``world_size`` is handled (module docstring).

    Resume: :meth:`state_dict` is ``{"epoch", "consumed", ...}`` where ``consumed`` counts rows of
    this rank's epoch sequence already delivered. It is exact when iterating in this process
    (``num_workers=0``) or through :class:`ResumableDataLoader`; with a plain ``DataLoader`` and
    worker processes the main-process copy cannot see what workers yielded, so call
    :meth:`set_consumed` yourself (``batches_done * batch_size``). Starting a new iteration after a
    completed epoch replays the same epoch unless :meth:`set_epoch` moved on (like
    ``DistributedSampler``).
    """

    def __init__(
        self,
        dataset,
        *,
        batch_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ):
        if isinstance(dataset, (str, os.PathLike)):
            if open_dataset is None:  # pragma: no cover - set as soon as transforms.runtime is imported
                raise TypeError("ShardIterableDataset needs a ShardDataset: use ShardDataset(path).iterable(...)")
            dataset = open_dataset(dataset)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = resolve_rank_world_size(rank, world_size)
        n = len(dataset)
        self.num_samples = n // self.world_size if self.drop_last else -(-n // self.world_size)
        self.epoch = int(epoch)
        self._consumed = 0

    def __len__(self) -> int:
        """Rows this rank yields in a full epoch."""
        return self.num_samples

    @property
    def consumed(self) -> int:
        return self._consumed

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; moving to a different epoch restarts at its first row. The dataset's
        rows report it too (their ``epoch`` column, for run-time masking) when it has ``set_epoch``."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._consumed = 0
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def set_consumed(self, consumed: int) -> None:
        """Record that the first ``consumed`` rows of this rank's epoch sequence were used."""
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f"consumed={consumed} outside [0, {self.num_samples}]")
        self._consumed = int(consumed)

    def indices(self) -> np.ndarray:
        """int64[num_samples]: the dataset rows of this rank's current epoch, in delivery order."""
        order = epoch_permutation(len(self.dataset), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        return rank_indices(order, rank=self.rank, world_size=self.world_size, drop_last=self.drop_last)

    def _begin_pass(self) -> int:
        if self._consumed >= self.num_samples:
            self._consumed = 0
        return self._consumed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if hasattr(self.dataset, "set_epoch"):  # rows that report their epoch (run-time masking) report this one
            self.dataset.set_epoch(self.epoch)
        order = self.indices()
        start = self._begin_pass()
        info = torch.utils.data.get_worker_info()
        if info is None:
            for pos in range(start, len(order)):
                row = self.dataset[int(order[pos])]
                self._consumed = pos + 1  # counted before the consumer sees it
                yield row
            return
        remaining = order[start:]
        step = self.batch_size
        num_chunks = -(-len(remaining) // step)
        for c in range(info.id, num_chunks, info.num_workers):
            for index in remaining[c * step:(c + 1) * step].tolist():
                yield self.dataset[index]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this rank's epoch exactly where it stopped (JSON-able)."""
        return {
            "epoch": self.epoch,
            "consumed": self._consumed,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rank": self.rank,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
            "num_rows": len(self.dataset),
            "config_fingerprint": self.dataset.manifest.get("config_fingerprint"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; refuses a state from another dataset or partitioning.

        ``batch_size`` and ``num_workers`` may differ from the run that saved the state.
        """
        mine = self.state_dict()
        for key in ("seed", "shuffle", "rank", "world_size", "drop_last", "num_rows", "config_fingerprint"):
            if state.get(key) != mine[key]:
                raise ValueError(f"cannot resume: saved {key}={state.get(key)!r}, this dataset has {mine[key]!r}")
        self.epoch = int(state["epoch"])
        self.set_consumed(int(state["consumed"]))


class ResumableDataLoader(torch.utils.data.DataLoader):
    """A ``DataLoader`` over a :class:`ShardIterableDataset` that keeps its ``consumed`` count exact.

    Workers deliver the rank's sequence in order (see the module docstring), so after the ``k``-th
    batch the main process knows that ``start + k * batch_size`` rows were consumed and records it
    in ``loader.dataset``; ``loader.dataset.state_dict()`` is then exact for any ``num_workers``.
    ``batch_size`` defaults to (and must equal) the dataset's; ``persistent_workers`` is refused
    (workers would keep a stale position).
    """

    def __init__(self, dataset: ShardIterableDataset, **kwargs: Any):
        if not isinstance(dataset, ShardIterableDataset):
            raise TypeError("ResumableDataLoader needs a ShardIterableDataset")
        batch_size = kwargs.setdefault("batch_size", dataset.batch_size)
        if batch_size != dataset.batch_size:
            raise ValueError(f"batch_size={batch_size} differs from the dataset's batch_size={dataset.batch_size}")
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers=True would keep a stale position in the workers")
        super().__init__(dataset, **kwargs)

    def __iter__(self):
        ds: ShardIterableDataset = self.dataset
        start = ds._begin_pass()  # before workers copy the dataset
        step = ds.batch_size
        done = 0
        for batch in super().__iter__():
            done += 1
            ds._consumed = min(ds.num_samples, start + done * step)
            yield batch
        ds._consumed = ds.num_samples  # exhausted (also covers drop_last dropping the last partial batch)
