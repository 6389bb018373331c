"""Mergeable, deterministic histograms with fixed bins (pure Python, integer arithmetic only).

Two bin schemes, both fixed in advance (never derived from the data), so partial histograms built
on different workers merge by adding counts, in any order, to the same result:

``int_log2_32`` (non-negative integers: token counts, turns, images)
    Every value below 64 has its own bucket (exact). From 64 up, each power-of-two range
    ``[2^e, 2^(e+1))`` is split into 32 equal buckets of width ``2^(e-5)``. A bucket is stored as
    ``[lo, hi, count]`` with ``hi`` inclusive.

``fraction_100`` (a ratio ``num / den`` in ``[0, 1]``: the trained-token fraction)
    100 buckets of width 0.01: bucket ``i`` holds ``i/100 <= x < (i+1)/100``; 1.0 goes to the last
    bucket. The bucket is found with integer arithmetic (``num * 100 // den``), never with floats.
    Ratios are also kept as integer parts per billion (``num * 10**9 // den``) for min/mean/max.

Summaries: ``count``, ``sum``, ``min``, ``max`` are exact; ``mean = sum / count``. Percentiles use
the nearest-rank definition (the value of the row ranked ``ceil(p/100 * count)`` in ascending
order) evaluated on the merged histogram: the reported value is the *upper edge of the bucket*
holding that row, clipped to ``[min, max]``. So a reported percentile is exact for integer values
below 64, otherwise at most 1/32 (3.1 %) above the true value and never below it; for fractions it
is at most 0.01 above the true value.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

PERCENTILES = (50, 90, 95, 99)
INT_SCHEME = "int_log2_32"
FRACTION_SCHEME = "fraction_100"
_EXACT_BELOW = 64
_SUB_BITS = 5  # 2**5 = 32 buckets per power of two
PPB = 10**9


def int_bucket(value: int) -> tuple[int, int]:
    """``(lo, hi)`` (inclusive) of the ``int_log2_32`` bucket holding ``value`` (``value >= 0``)."""
    if value < _EXACT_BELOW:
        return value, value
    shift = value.bit_length() - 1 - _SUB_BITS
    lo = (value >> shift) << shift
    return lo, lo + (1 << shift) - 1


def _nearest_rank(count: int, p: int) -> int:
    """1-based rank of the ``p``-th percentile (nearest-rank), integer arithmetic."""
    return max(1, -(-p * count // 100))


class IntHistogram:
    """Histogram of non-negative integers (``int_log2_32`` bins). Mutable; ``merge`` adds another."""

    __slots__ = ("buckets", "count", "total", "minimum", "maximum")
    scheme = INT_SCHEME

    def __init__(self):
        self.buckets: dict[int, int] = {}  # bucket lo -> count
        self.count = 0
        self.total = 0
        self.minimum: int | None = None
        self.maximum: int | None = None

    def add(self, value: int) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"IntHistogram takes non-negative integers, got {value}")
        if value < _EXACT_BELOW:
            lo = value
        else:
            shift = value.bit_length() - 1 - _SUB_BITS
            lo = (value >> shift) << shift
        buckets = self.buckets
        buckets[lo] = buckets.get(lo, 0) + 1
        self.count += 1
        self.total += value
        if self.minimum is None or value < self.minimum:
            self.minimum = value
        if self.maximum is None or value > self.maximum:
            self.maximum = value

    def merge(self, other: "IntHistogram") -> "IntHistogram":
        for lo, n in other.buckets.items():
            self.buckets[lo] = self.buckets.get(lo, 0) + n
        self.count += other.count
        self.total += other.total
        if other.minimum is not None and (self.minimum is None or other.minimum < self.minimum):
            self.minimum = other.minimum
        if other.maximum is not None and (self.maximum is None or other.maximum > self.maximum):
            self.maximum = other.maximum
        return self

    def bucket_list(self) -> list[list[int]]:
        """``[[lo, hi, count], ...]`` of the non-empty buckets, ascending."""
        return [[lo, int_bucket(lo)[1], self.buckets[lo]] for lo in sorted(self.buckets)]

    def percentile(self, p: int) -> int | None:
        if not self.count:
            return None
        rank = _nearest_rank(self.count, p)
        seen = 0
        for lo in sorted(self.buckets):
            seen += self.buckets[lo]
            if seen >= rank:
                return max(self.minimum, min(self.maximum, int_bucket(lo)[1]))
        return self.maximum  # pragma: no cover - counts always add up

    def to_json(self) -> dict[str, Any]:
        empty = not self.count
        return {
            "bins": self.scheme,
            "count": self.count,
            "sum": self.total,
            "min": self.minimum,
            "mean": None if empty else round(self.total / self.count, 6),
            "max": self.maximum,
            **{f"p{p}": self.percentile(p) for p in PERCENTILES},
            "buckets": self.bucket_list(),
        }


class FractionHistogram:
    """Histogram of ratios ``num / den`` in ``[0, 1]`` (``fraction_100`` bins)."""

    __slots__ = ("buckets", "count", "total_ppb", "minimum_ppb", "maximum_ppb")
    scheme = FRACTION_SCHEME

    def __init__(self):
        self.buckets: dict[int, int] = {}  # bucket index 0..99 -> count
        self.count = 0
        self.total_ppb = 0
        self.minimum_ppb: int | None = None
        self.maximum_ppb: int | None = None

    def add(self, num: int, den: int) -> None:
        num, den = int(num), int(den)
        if den <= 0 or not 0 <= num <= den:
            raise ValueError(f"FractionHistogram takes 0 <= num <= den, den > 0; got {num}/{den}")
        index = min(99, num * 100 // den)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        ppb = num * PPB // den
        self.count += 1
        self.total_ppb += ppb
        if self.minimum_ppb is None or ppb < self.minimum_ppb:
            self.minimum_ppb = ppb
        if self.maximum_ppb is None or ppb > self.maximum_ppb:
            self.maximum_ppb = ppb

    def merge(self, other: "FractionHistogram") -> "FractionHistogram":
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total_ppb += other.total_ppb
        if other.minimum_ppb is not None and (self.minimum_ppb is None or other.minimum_ppb < self.minimum_ppb):
            self.minimum_ppb = other.minimum_ppb
        if other.maximum_ppb is not None and (self.maximum_ppb is None or other.maximum_ppb > self.maximum_ppb):
            self.maximum_ppb = other.maximum_ppb
        return self

    def percentile(self, p: int) -> float | None:
        if not self.count:
            return None
        rank = _nearest_rank(self.count, p)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                upper_ppb = (index + 1) * PPB // 100
                return _ppb(max(self.minimum_ppb, min(self.maximum_ppb, upper_ppb)))
        return _ppb(self.maximum_ppb)  # pragma: no cover

    def bucket_list(self) -> list[list]:
        """``[[lo, hi, count], ...]`` (``hi`` exclusive, except 1.0 in the last bucket)."""
        return [[index / 100, (index + 1) / 100, self.buckets[index]] for index in sorted(self.buckets)]

    def to_json(self) -> dict[str, Any]:
        empty = not self.count
        return {
            "bins": self.scheme,
            "count": self.count,
            "sum": None if empty else _ppb(self.total_ppb),
            "min": None if empty else _ppb(self.minimum_ppb),
            "mean": None if empty else round(self.total_ppb / self.count / PPB, 6),
            "max": None if empty else _ppb(self.maximum_ppb),
            **{f"p{p}": self.percentile(p) for p in PERCENTILES},
            "buckets": self.bucket_list(),
        }


def _ppb(value: int) -> float:
    return round(value / PPB, 6)


def merge_counts(into: dict, other: Mapping[str, int]) -> dict:
    """Add the integer counts of ``other`` into ``into`` (returns ``into``)."""
    for key, n in other.items():
        into[key] = into.get(key, 0) + n
    return into


def sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {key: counts[key] for key in sorted(counts)}


def display_bins(buckets: Iterable[list], *, per_octave: int = 8) -> list[list]:
    """Coarser ``[lo, hi, count]`` bins of an ``int_log2_32`` bucket list, for plotting.

    Values below 16 keep their own bin; from 16 up each power of two is split into ``per_octave``
    (a power of two <= 32) equal bins. The edges are fixed, so plots of merged data are merged plots.
    """
    bits = per_octave.bit_length() - 1
    merged: dict[int, list] = {}
    for lo, hi, n in buckets:
        if lo < 16:
            key_lo, key_hi = lo, hi
        else:
            shift = max(0, lo.bit_length() - 1 - bits)
            key_lo = (lo >> shift) << shift
            key_hi = key_lo + (1 << shift) - 1
        entry = merged.setdefault(key_lo, [key_lo, key_hi, 0])
        entry[2] += n
    return [merged[k] for k in sorted(merged)]
