"""Mixing finished datasets at training time, without rebuilding them: :class:`MixedShardDataset`.

Several output folders (each a :class:`~transforms.runtime.dataset.ShardDataset`) with weights and a stopping
strategy become one map-style dataset of a fixed length. Its composition is the job's arithmetic
(:func:`transforms.mixture.quota.share_targets`, the same as ``weight``/``stopping_strategy``/``total_records``
in a job config file), drawn once from ``seed``:

1. source ``d`` (``n_d`` rows) gets ``(kept_d, target_d)``; its taken rows are the first ``kept_d`` of a seeded
   permutation of its rows, cycled to ``target_d`` entries (every taken row appears ``target_d // kept_d``
   times, the first ``target_d % kept_d`` once more);
2. the sources' entries are concatenated and, with ``shuffle`` (default), interleaved by one seeded
   permutation; so any window of the mixture holds the sources close to their shares.

So the proportions are exact over the whole mixture (``target_d`` rows of source ``d``), ``len()`` is the same
every epoch, and samplers work unchanged: ``ShardIterableDataset(mixed, ...)`` (shuffled per epoch, rank and
worker partitioned, exactly resumable from its ``state_dict``), ``LengthGroupedBatchSampler(mixed.lengths, ...)``,
``TokenBudgetBatchSampler``. The draw does not change with the epoch (the samplers reshuffle); build a new
mixture with another ``seed`` to draw other rows of a subsampled source.

Folders are refused (``ValueError``) when their tokenizers (``vocab_hash``), chat templates
(``chat_template_hash``), tasks or row columns differ: their rows could not be trained together.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch.utils.data

from ..mixture.quota import STOPPING_STRATEGIES, share_targets
from . import heads
from .dataset import SAMPLE_INDEX, ShardDataset
from .partition import ShardIterableDataset, epoch_permutation

__all__ = ["MixedShardDataset"]


def _source_seed(seed: int, position: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}\x00source\x00{position}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What must agree between mixed datasets: tokenizer vocabulary, chat template, task."""
    tokenizer = manifest.get("tokenizer") or {}
    task = heads.task_section(manifest)
    return {"tokenizer (vocab_hash)": tokenizer.get("vocab_hash"),
            "chat template (chat_template_hash)": manifest.get("chat_template_hash",
                                                               tokenizer.get("chat_template_hash")),
            "task": (task or {}).get("name", "chat")}


class MixedShardDataset(torch.utils.data.Dataset):
    """Several finished chatshards datasets as one map-style dataset, mixed by weight (module docstring).

    Args:
        sources: dataset folders or :class:`ShardDataset` objects; or a mapping ``{name: folder or dataset}``
            (names default to the folders' base names).
        weights: one positive weight per source; ``None``: every row of every source once (a concatenation).
        stopping_strategy: ``first_exhausted`` (default: the source that runs out first for its weight is taken
            whole, the others subsampled, nothing repeated) or ``all_exhausted`` (the others repeated until every
            source is used whole). Same names as ``datasets.interleave_datasets``.
        total: the mixture's length (weights only); overrides the stopping strategy (subsampling or repeating).
        seed: decides which rows a subsampled source gives, which rows a repeated source repeats, and the
            interleaving.
        shuffle: interleave the sources (default); ``False`` lists source 0's entries, then source 1's, ...
        columns, verify, max_open_shards: passed to every :class:`ShardDataset` opened from a folder.

    ``ds[i]`` is the source row's dict (``sample_index``, when requested, is ``i``); :attr:`row_sources` says which
    source each entry comes from, :attr:`targets` how many entries each source has.
    """

    def __init__(self, sources: Sequence[Any] | Mapping[str, Any], *, weights: Sequence[float] | None = None,
                 stopping_strategy: str = "first_exhausted", total: int | None = None, seed: int = 0,
                 shuffle: bool = True, columns: Sequence[str] | None = None, verify: bool = False,
                 max_open_shards: int | None = None):
        items = list(sources.items()) if isinstance(sources, Mapping) else [(None, s) for s in sources]
        if not items:
            raise ValueError("MixedShardDataset needs at least one dataset")
        datasets, names = [], []
        for name, source in items:
            if isinstance(source, (str, os.PathLike)):
                dataset = ShardDataset(source, verify=verify, columns=columns, max_open_shards=max_open_shards)
            else:
                dataset = source
            datasets.append(dataset)
            names.append(str(name) if name is not None else os.path.basename(os.path.normpath(
                getattr(dataset, "root", f"source{len(names)}"))))
        if len(set(names)) != len(names):
            raise ValueError(f"two sources have the same name ({names}); pass a mapping {{name: folder}}")
        first = _identity(datasets[0].manifest)
        for name, dataset in zip(names[1:], datasets[1:]):
            other = _identity(dataset.manifest)
            for key, value in first.items():
                if other[key] != value:
                    raise ValueError(f"cannot mix {names[0]!r} and {name!r}: their {key} differ ({value!r} vs "
                                     f"{other[key]!r}); their rows could not be trained together")
            if tuple(dataset.columns) != tuple(datasets[0].columns):
                raise ValueError(f"cannot mix {names[0]!r} and {name!r}: their rows have different columns "
                                 f"({list(datasets[0].columns)} vs {list(dataset.columns)}); pass columns=...")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(datasets):
                raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
            if not all(np.isfinite(w) and w > 0 for w in weights):
                raise ValueError(f"weights must be positive numbers, got {weights}")
        elif total is not None:
            raise ValueError("total sets the length of a weighted mixture: give weights")
        if stopping_strategy not in STOPPING_STRATEGIES:
            raise ValueError(f"stopping_strategy must be one of {', '.join(STOPPING_STRATEGIES)}, "
                             f"got {stopping_strategy!r}")
        if total is not None and (isinstance(total, bool) or int(total) != total or total < 1):
            raise ValueError(f"total must be an integer >= 1, got {total!r}")
        self.sources = datasets
        self.names = names
        self.weights = weights
        self.stopping_strategy = stopping_strategy
        self.total = int(total) if total is not None else None
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        sizes = [len(d) for d in datasets]
        self.quotas = share_targets(sizes, weights=weights, stopping_strategy=stopping_strategy, total=self.total)
        source_parts, row_parts = [], []
        for d, (size, (kept, target)) in enumerate(zip(sizes, self.quotas)):
            if target == 0:
                continue
            order = epoch_permutation(size, seed=_source_seed(self.seed, d), epoch=0)[:kept]
            row_parts.append(np.resize(order, target))
            source_parts.append(np.full(target, d, dtype=np.int32))
        self.row_sources = np.concatenate(source_parts) if source_parts else np.zeros(0, dtype=np.int32)
        self.rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
        if self.shuffle and len(self.rows):
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x6D6978]).permutation(len(self.rows))
            self.row_sources, self.rows = self.row_sources[order], self.rows[order]
        self.columns = tuple(datasets[0].columns)
        self.epoch = 0
        self._lengths: np.ndarray | None = None
        self.manifest = self._manifest()

    # -- what the samplers and collators read ------------------------------------------------------
    def _manifest(self) -> dict[str, Any]:
        """A manifest-like dict: the sources' shared tokenizer/template/task, and a fingerprint of the mixture
        (the sources' config fingerprints and this mixture's settings: resuming refuses another mixture)."""
        base = self.sources[0].manifest
        spec = {"sources": [d.manifest.get("config_fingerprint") for d in self.sources], "names": self.names,
                "weights": self.weights, "stopping_strategy": self.stopping_strategy, "total": self.total,
                "seed": self.seed, "shuffle": self.shuffle, "sizes": [len(d) for d in self.sources]}
        fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        manifest = {key: base[key] for key in ("tokenizer", "chat_template_hash", "task", "schema_version")
                    if key in base}
        manifest.update({"config_fingerprint": fingerprint, "mixture": {**spec, "targets": self.targets}})
        return manifest

    @property
    def targets(self) -> dict[str, int]:
        """Entries of each source in the mixture (``{name: count}``)."""
        return {name: target for name, (_, target) in zip(self.names, self.quotas)}

    @property
    def tokenizer_info(self) -> dict:
        return dict(self.manifest["tokenizer"])

    @property
    def lengths(self) -> np.ndarray:
        """int64[len(self)]: ``len(self[i]["input_ids"])`` of every entry (for the length-aware samplers)."""
        if self._lengths is None:
            out = np.zeros(len(self.rows), dtype=np.int64)
            for d, dataset in enumerate(self.sources):
                where = self.row_sources == d
                if where.any():
                    out[where] = np.asarray(dataset.lengths)[self.rows[where]]
            self._lengths = out
        return self._lengths

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        n = len(self.rows)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"entry {index} out of range for a mixture of {n} entries")
        row = self.sources[int(self.row_sources[i])][int(self.rows[i])]
        if SAMPLE_INDEX in row:
            row[SAMPLE_INDEX] = i
        return row

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def source_of(self, index: int) -> str:
        """The name of the source entry ``index`` comes from."""
        return self.names[int(self.row_sources[int(index)])]

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the sources (their rows' ``epoch`` column); the draw itself does not change."""
        self.epoch = int(epoch)
        for dataset in self.sources:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def iterable(self, **options: Any) -> ShardIterableDataset:
        """The mixture as a :class:`~transforms.runtime.ShardIterableDataset` (shuffled per epoch, partitioned,
        resumable)."""
        return ShardIterableDataset(self, **options)

    def __repr__(self) -> str:
        return (f"MixedShardDataset({dict(zip(self.names, self.targets.values()))}, entries={len(self)}, "
                f"stopping_strategy={self.stopping_strategy!r}, seed={self.seed})")
