"""The arithmetic of a mixture's shares (pure; imports nothing else of chatshards, so the runtime uses it too).

:func:`share_targets` turns each dataset's size ``read[d]`` and its share into ``(kept, target)``: ``kept``
distinct items taken, ``target`` items made of them (``target > kept``: repeats). Exact (fractions of the numbers
as written: ``0.35`` is 7/20), rounding half up:

* weights ``w_d`` (all datasets): ``p_d = w_d / sum(w)`` over the datasets that have items; ``T`` is
  ``total`` when given, else ``min_d read_d / p_d`` (``first_exhausted``: the dataset that runs out first is
  taken whole, the others subsampled, nothing repeated) or ``max_d read_d / p_d`` (``all_exhausted``: the
  dataset with the most items for its weight is taken whole, the others repeated); ``target_d = round(p_d T)``
  (capped at ``read_d`` for ``first_exhausted``), ``kept_d = min(read_d, target_d)``;
* no weights: ``m_d = min(read_d, max_records_d)``, ``target_d = round(epochs_d * m_d)``,
  ``kept_d = min(m_d, target_d)`` (``epochs`` below 1 subsamples).
"""
from __future__ import annotations

from typing import Sequence

STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted")


def _round(value) -> int:
    """A ``Fraction`` rounded half up, exactly."""
    return int((value * 2 + 1) // 2)


def exact_fraction(value):
    """A number as the exact fraction its decimal text says (``0.35`` is 7/20, not the binary float below it)."""
    from fractions import Fraction

    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def share_targets(read: Sequence[int], *, weights: Sequence[float] | None = None,
                  max_records: Sequence[int | None] | None = None, epochs: Sequence[float | None] | None = None,
                  stopping_strategy: str = "first_exhausted", total: int | None = None) -> list[tuple[int, int]]:
    """``[(kept, target)]`` per dataset (module docstring)."""
    from fractions import Fraction  # here: the runtime imports this module and keeps its imports minimal

    n = len(read)
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"stopping_strategy must be one of {', '.join(STOPPING_STRATEGIES)}, "
                         f"got {stopping_strategy!r}")
    if weights is None:
        caps = list(max_records) if max_records is not None else [None] * n
        times = list(epochs) if epochs is not None else [None] * n
        out = []
        for size, cap, epoch in zip(read, caps, times):
            kept = size if cap is None else min(size, cap)
            target = _round((exact_fraction(epoch) if epoch is not None else Fraction(1)) * kept)
            out.append((min(kept, target), target))  # epochs below 1 take fewer distinct records
        return out
    fractions = [exact_fraction(w) for w in weights]
    if len(fractions) != n or any(w <= 0 for w in fractions):
        raise ValueError("weights must be positive, one per dataset")
    live = [d for d in range(n) if read[d] > 0]  # a dataset without items cannot be drawn from
    total_weight = sum(fractions[d] for d in live)
    if total is not None:
        size = Fraction(total)
    elif not live:
        size = Fraction(0)
    else:
        ratios = [Fraction(read[d]) / (fractions[d] / total_weight) for d in live]
        size = min(ratios) if stopping_strategy == "first_exhausted" else max(ratios)
    out = []
    for d in range(n):
        target = _round(fractions[d] / total_weight * size) if d in live else 0
        if total is None and stopping_strategy == "first_exhausted":
            target = min(target, read[d])  # first_exhausted never repeats
        out.append((min(read[d], target), target))
    return out
