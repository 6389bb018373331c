"""Packing statistics: per shard (plain JSON-able dicts that merge by addition) and the report the
manifest's ``packing`` section and the audit's ``stats.json`` carry.

Figures (see ``docs/packing.md``):

* ``efficiency``: real tokens / capacity (``packs x pack_length``): the fraction of a fixed-shape
  ``[B, pack_length]`` batch that is real tokens;
* ``sequences_per_pack``: how many rows (sequences) a packed row holds (mean, min, max, histogram);
* ``fill_histogram``: packed rows by fill (tokens / pack length) in 20 buckets of 5% (1.0 in the last);
* ``truncated_to_fit``: sequences cut to the pack length by ``--truncation`` and the tokens removed
  (rows rejected with ``--truncation drop`` are counted in ``rejected_by_reason.too_long``);
* ``runtime_padding``: what the same sequences would cost unpacked: each padded to the pack length
  (fixed shapes without packing), or batches of 8 / 32 consecutive rows of a shard (its rows are in
  hashed, i.e. shuffled, order) padded to their longest row (dynamic padding).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

FILL_BUCKETS = 20
PADDED_BATCH_SIZES = (8, 32)


def padded_slots(lengths: np.ndarray, batch_size: int) -> int:
    """Positions of batches of ``batch_size`` consecutive rows, each padded to its longest row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return 0
    starts = np.arange(0, len(lengths), batch_size)
    longest = np.maximum.reduceat(lengths, starts)
    sizes = np.diff(np.append(starts, len(lengths)))
    return int((longest * sizes).sum())


def shard_packing_stats(*, shard_lengths: np.ndarray, pack_tokens: np.ndarray, pack_sizes: np.ndarray,
                        capacity: int, trained_tokens: int, first_labels_masked: int,
                        truncated_sequences: int, truncated_tokens: int) -> dict[str, Any]:
    """One shard's packing figures.

    ``shard_lengths``: the sequences' lengths in shard order; ``pack_tokens`` / ``pack_sizes``: real
    tokens and sequences of every packed row; ``trained_tokens``: labels other than -100 after packing;
    ``first_labels_masked``: sequences whose first label was a token id (packing sets it to -100; the
    model never predicts a sequence's first token from inside the sequence, so no loss changes)."""
    pack_tokens = np.asarray(pack_tokens, dtype=np.int64)
    fill = np.minimum(FILL_BUCKETS - 1, (pack_tokens * FILL_BUCKETS) // capacity) if len(pack_tokens) else pack_tokens
    per_pack = np.bincount(np.asarray(pack_sizes, dtype=np.int64)) if len(pack_sizes) else np.zeros(0, np.int64)
    return {
        "sequences": int(len(shard_lengths)),
        "packs": int(len(pack_tokens)),
        "tokens": int(pack_tokens.sum()),
        "trained_tokens": int(trained_tokens),
        "capacity_tokens": int(len(pack_tokens)) * int(capacity),
        "fill_counts": np.bincount(fill, minlength=FILL_BUCKETS).astype(int).tolist(),
        "sequences_per_pack": {str(k): int(v) for k, v in enumerate(per_pack) if v},
        "first_labels_masked": int(first_labels_masked),
        "truncated_sequences": int(truncated_sequences),
        "truncated_tokens": int(truncated_tokens),
        "pad_to_length_slots": int(len(shard_lengths)) * int(capacity),
        "padded_batch_slots": {str(b): padded_slots(shard_lengths, b) for b in PADDED_BATCH_SIZES},
    }


def merge_packing_stats(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum shard figures (integers add, lists add element-wise, dicts add per key): order-independent."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                into = merged.setdefault(key, {})
                for k, v in value.items():
                    into[k] = into.get(k, 0) + v
            elif isinstance(value, list):
                into = merged.setdefault(key, [0] * len(value))
                merged[key] = [a + b for a, b in zip(into, value)]
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def packing_report(stats: Mapping[str, Any], *, length: int, strategy: str) -> dict[str, Any]:
    """The ``packing`` section (manifest and ``stats.json``) from merged shard figures."""
    stats = dict(stats) or shard_packing_stats(shard_lengths=np.zeros(0), pack_tokens=np.zeros(0),
                                               pack_sizes=np.zeros(0), capacity=length, trained_tokens=0,
                                               first_labels_masked=0, truncated_sequences=0, truncated_tokens=0)
    tokens, packs, sequences = stats["tokens"], stats["packs"], stats["sequences"]
    per_pack = {k: stats["sequences_per_pack"][k] for k in sorted(stats["sequences_per_pack"], key=int)}
    width = 1 / FILL_BUCKETS
    runtime = {"pad_each_row_to_pack_length": {"positions": stats["pad_to_length_slots"],
                                               "efficiency": _ratio(tokens, stats["pad_to_length_slots"])}}
    for size, slots in sorted(stats["padded_batch_slots"].items(), key=lambda item: int(item[0])):
        runtime[f"batches_of_{size}_padded_to_longest"] = {"positions": slots, "efficiency": _ratio(tokens, slots)}
    return {
        "packed": True,
        "length": length,
        "strategy": strategy,
        "unit": "shard",
        "sequences": sequences,
        "packs": packs,
        "tokens": tokens,
        "trained_tokens": stats["trained_tokens"],
        "capacity_tokens": stats["capacity_tokens"],
        "efficiency": _ratio(tokens, stats["capacity_tokens"]),
        "sequences_per_pack": {
            "mean": _ratio(sequences, packs),
            "min": min((int(k) for k in per_pack), default=None),
            "max": max((int(k) for k in per_pack), default=None),
            "histogram": per_pack,
        },
        "fill_histogram": [[round(i * width, 2), round((i + 1) * width, 2), count]
                           for i, count in enumerate(stats["fill_counts"])],
        "truncated_to_fit": {"sequences": stats["truncated_sequences"], "tokens_removed": stats["truncated_tokens"]},
        "first_labels_masked": stats["first_labels_masked"],
        "runtime_padding": runtime,
        "meaning": "efficiency = real tokens / (packs x length); runtime_padding: the same sequences unpacked, "
                   "each padded to the pack length, or in batches of consecutive shard rows (shuffled order) "
                   "padded to the batch's longest row; truncated_to_fit: sequences cut to the pack length by "
                   "--truncation (--truncation drop rejects them as too_long instead)",
    }


def report_of_shards(entries: Iterable[Mapping[str, Any]], *, length: int, strategy: str) -> dict[str, Any]:
    """The ``packing`` report from shard entries that carry their figures under ``"packing"`` (the job's
    shard writer adds them; empty shards may carry none)."""
    return packing_report(merge_packing_stats(entry["packing"] for entry in entries if entry.get("packing")),
                          length=length, strategy=strategy)
