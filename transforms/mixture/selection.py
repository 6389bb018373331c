"""From record counts to per-record decisions: how many times each record of a mixture is written.

:func:`quotas` turns each dataset's record count (``read``) into ``kept`` (distinct records taken) and
``target`` (examples made from them, repeats included); :class:`Selection` then decides, for one record,
its number of ``copies`` (0: skipped):

* the dataset's record positions are numbered in file order (its files sorted, then each file's record
  ``index``), ``g`` in ``range(read)``;
* ``r = perm(g)``, a keyed permutation of ``range(read)`` (:class:`~.permutation.KeyedPermutation`, key:
  the mixture's seed and the dataset's name);
* the record is kept when ``r < kept``, with ``target // kept`` copies, one more when ``r < target % kept``.

So exactly ``kept`` distinct records are taken, exactly ``target`` examples made, the kept records and the
repeated ones are uniform, seeded draws, and a record's decision depends only on the seed, the dataset,
the record's identity (file, index) and the files' record counts: never on arrival order, batches,
workers or engine. Where no count is needed (every record once, or a whole number of ``epochs``) no
permutation is used.

Repeats need their own sort keys (rows are ordered and sharded by them): copy ``c >= 1`` of a row takes
:func:`copy_sort_key` (a hash of the row's key and ``c``), so repeats land in other shards, apart from
the original; copy 0 keeps the row's own key. A rejected record is rejected once per copy (a ``copy``
field tells them apart), so ``examples = written + rejected`` holds per dataset.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from transforms.mixture.entries import Mixture
from transforms.mixture.permutation import KeyedPermutation
from transforms.mixture.quota import share_targets
from transforms.shard_format import row_sort_key

DATASET_COLUMN = "dataset"
COPY_FIELD = "copy"


@dataclass(frozen=True)
class Quota:
    """One dataset's numbers: ``read`` records in its files, ``kept`` distinct records taken, ``target``
    examples made from them (``target >= kept``; ``target > kept`` means repeats)."""

    name: str
    read: int
    kept: int
    target: int

    def to_json(self) -> dict[str, int | str]:
        return {"name": self.name, "read": self.read, "kept": self.kept, "target": self.target}


def quotas(mixture: Mixture, read: Sequence[int]) -> tuple[Quota, ...]:
    """Each dataset's :class:`Quota` given its record count ``read[d]`` (:func:`~.quota.share_targets`)."""
    entries = mixture.datasets
    if mixture.weighted:
        pairs = share_targets(read, weights=[e.weight for e in entries], stopping_strategy=mixture.stopping_strategy,
                              total=mixture.total_records)
    else:
        pairs = share_targets(read, max_records=[e.max_records for e in entries], epochs=[e.epochs for e in entries])
    return tuple(Quota(entry.name, n, kept, target) for entry, n, (kept, target) in zip(entries, read, pairs))


def copy_sort_key(sort_key: str, copy: int) -> str:
    """The sort key of copy ``copy`` of a row whose key is ``sort_key`` (``<record key>[:<suffix>]``): the
    row's own key for copy 0, else a hash of the record key and ``copy`` with the same suffix."""
    if copy == 0:
        return sort_key
    base, sep, suffix = sort_key.partition(":")
    return hashlib.sha256(f"{base}\x00copy\x00{copy}".encode("utf-8")).hexdigest() + sep + suffix


def rejection_sort_key(item: Mapping[str, Any]) -> str:
    """The sort key of a rejection (its record's, or its copy's)."""
    key = row_sort_key(str(item["source"]), int(item["index"]))
    copy = item.get(COPY_FIELD) if isinstance(item, Mapping) else None
    return copy_sort_key(key, int(copy)) if isinstance(copy, int) and copy > 0 else key


class Selection:
    """A mixture's per-record decisions once the files' record counts are known (module docstring).

    ``counts``: ``{file: records}`` for every file of the mixture (``None`` when the mixture does not need
    them: :attr:`Mixture.needs_counts` is false). Picklable; the same arguments give the same decisions
    in every process.
    """

    def __init__(self, mixture: Mixture, counts: Mapping[str, int] | None = None):
        if counts is None and mixture.needs_counts:
            raise ValueError("this mixture's decisions need every file's record count")
        self.mixture = mixture
        self.counts = None if counts is None else {path: int(counts.get(path, 0))
                                                   for d in mixture.datasets for path in d.files}
        self.quotas = None if counts is None else quotas(
            mixture, [sum(self.counts[path] for path in d.files) for d in mixture.datasets])
        self._setup()

    def _setup(self) -> None:
        self._offsets: dict[str, int] = {}
        self._fixed: list[int | None] = []  # per dataset: every record's copies when no permutation is needed
        self._perms: list[KeyedPermutation | None] = []
        for d, entry in enumerate(self.mixture.datasets):
            if self.quotas is None:
                self._fixed.append(int(entry.epochs) if entry.epochs is not None else 1)
                self._perms.append(None)
                continue
            offset = 0
            for path in entry.files:
                self._offsets[path] = offset
                offset += self.counts[path]
            quota = self.quotas[d]
            if quota.read == 0 or (quota.kept == quota.read and quota.target % quota.read == 0):
                self._fixed.append(quota.target // quota.read if quota.read else 0)
                self._perms.append(None)
            else:
                key = hashlib.sha256(f"{self.mixture.seed}\x00{entry.name}".encode("utf-8")).digest()
                self._fixed.append(None)
                self._perms.append(KeyedPermutation(quota.read, key))

    def __getstate__(self):
        return {"mixture": self.mixture, "counts": self.counts, "quotas": self.quotas}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()

    def copies(self, records: Iterable[tuple[str, int]]) -> list[int]:
        """The copies of each ``(source, index)`` record (0: not taken), in order."""
        records = list(records)
        out = [0] * len(records)
        pending: dict[int, list[tuple[int, int]]] = {}
        for k, (source, index) in enumerate(records):
            d = self.mixture.index_of(source)
            fixed = self._fixed[d]
            if fixed is not None:
                out[k] = fixed
            else:
                pending.setdefault(d, []).append((k, self._offsets[source] + int(index)))
        for d, items in pending.items():
            quota = self.quotas[d]
            positions = np.fromiter((g for _, g in items), dtype=np.int64, count=len(items))
            if int(positions.max()) >= quota.read:  # an index past the file's count: never taken (cannot happen)
                positions = np.minimum(positions, quota.read - 1)
            ranks = self._perms[d](positions)
            base, extra = divmod(quota.target, quota.kept) if quota.kept else (0, 0)
            for (k, _), rank in zip(items, ranks.tolist()):
                out[k] = 0 if rank >= quota.kept else base + (1 if rank < extra else 0)
        return out

    # -- the job's step helpers ------------------------------------------------------------------------
    def select(self, batch: Sequence) -> tuple[list, int, int]:
        """``(records taken, skipped, repeats)`` of a batch of raw records: the records with at least one
        copy (in batch order), how many were not taken, and how many extra copies the taken ones get."""
        copies = self.copies((raw.source, raw.index) for raw in batch)
        taken = [raw for raw, c in zip(batch, copies) if c > 0]
        return taken, sum(1 for c in copies if c == 0), sum(c - 1 for c in copies if c > 1)

    def expand_rows(self, rows: Sequence[dict]) -> list[dict]:
        """Every row with its ``dataset`` column, followed by its repeats (copy ``c`` with
        :func:`copy_sort_key`); rows are dicts with ``source``, ``index`` and ``sort_key``."""
        copies = self.copies((row["source"], row["index"]) for row in rows)
        out = []
        for row, count in zip(rows, copies):
            row[DATASET_COLUMN] = self.mixture.entry_of(row["source"]).name
            out.append(row)
            for c in range(1, count):
                out.append({**row, "sort_key": copy_sort_key(row["sort_key"], c)})
        return out

    def expand_rejections(self, items: Sequence[Mapping[str, Any]]) -> list[dict]:
        """Every rejection with its ``dataset`` field, once per copy of its record (``copy``: 1, 2, ... on
        the repeats)."""
        copies = self.copies((str(item["source"]), int(item["index"])) for item in items)
        out = []
        for item, count in zip(items, copies):
            tagged = tag_rejection(item, self.mixture)
            out.append(tagged)
            out.extend({**tagged, COPY_FIELD: c} for c in range(1, count))
        return out

    def report(self) -> list[dict[str, Any]]:
        """Per dataset: its quota and the share options asked for (the manifest's ``mixture`` section)."""
        shares = self.mixture.asked_shares() or {}
        out = []
        for d, entry in enumerate(self.mixture.datasets):
            item: dict[str, Any] = {"name": entry.name, "files": len(entry.files), **entry.share_json()}
            if shares:
                item["share_asked"] = round(shares[entry.name], 6)
            if self.quotas is not None:
                quota = self.quotas[d]
                item.update({"read": quota.read, "kept": quota.kept, "target": quota.target})
            out.append(item)
        return out


def tag_rejection(item: Mapping[str, Any], mixture: Mixture) -> dict:
    """A rejection with its ``dataset`` field (a rejection of a file outside the mixture is left as is)."""
    try:
        name = mixture.entry_of(str(item["source"])).name
    except KeyError:
        return dict(item)
    return {**item, DATASET_COLUMN: name}
