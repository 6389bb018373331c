"""Bin planning (transforms.packing.bins): every row in exactly one bin, capacity kept, deterministic,
the same bins as plain O(n^2) reference implementations of each strategy, and at least as efficient as
TRL's ``pack_dataset(strategy="bfd")`` on the same lengths."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.packing.bins import STRATEGIES, plan_bins


def reference_bins(lengths, capacity, strategy):
    """The strategies written the obvious way (a list scan per item)."""
    n = len(lengths)
    if strategy == "sequential":
        order = list(range(n))
    else:
        order = sorted(range(n), key=lambda i: (-lengths[i], i))
    bins, rooms = [], []
    for i in order:
        size = lengths[i]
        if strategy == "sequential":
            choice = len(bins) - 1 if bins and rooms[-1] >= size else None
        elif strategy == "ffd":
            choice = next((b for b, room in enumerate(rooms) if room >= size), None)
        else:  # bfd: least room that fits, first opened on ties
            fitting = [(room, b) for b, room in enumerate(rooms) if room >= size]
            choice = min(fitting)[1] if fitting else None
        if choice is None:
            bins.append([])
            rooms.append(capacity)
            choice = len(bins) - 1
        bins[choice].append(i)
        rooms[choice] -= size
    return sorted((sorted(b) for b in bins), key=lambda b: b[0])


lengths_strategy = st.lists(st.integers(0, 64), min_size=0, max_size=120)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_strategy, capacity=st.integers(64, 200), strategy=st.sampled_from(STRATEGIES))
def test_bins_hold_every_row_once_within_capacity_and_equal_the_reference(lengths, capacity, strategy):
    bins = plan_bins(lengths, capacity, strategy)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert all(b == sorted(b) and b for b in bins)
    assert [b[0] for b in bins] == sorted(b[0] for b in bins)
    assert bins == reference_bins(lengths, capacity, strategy)
    assert plan_bins(np.asarray(lengths, dtype=np.int32), capacity, strategy) == bins  # any integer array
    if strategy == "sequential":
        assert [i for b in bins for i in b] == list(range(len(lengths)))  # row order kept


@pytest.mark.parametrize("bad", [
    dict(lengths=[5, 11], capacity=10, strategy="bfd"),
    dict(lengths=[5], capacity=10, strategy="greedy"),
    dict(lengths=[5], capacity=0, strategy="bfd"),
    dict(lengths=[-1], capacity=10, strategy="ffd"),
])
def test_impossible_plans_are_refused(bad):
    with pytest.raises(ValueError):
        plan_bins(**bad)


@pytest.mark.slow  # importing trl takes about 11 s
def test_best_fit_decreasing_is_at_least_as_efficient_as_trl_pack_dataset():
    from datasets import Dataset
    from trl import pack_dataset

    rng = np.random.default_rng(0)
    for capacity in (256, 1024):
        # chat-like lengths: many short rows, a long tail, none longer than a pack
        lengths = np.minimum(rng.lognormal(4.5, 0.9, size=1500).astype(int) + 1, capacity)
        dataset = Dataset.from_dict({"input_ids": [list(range(n)) for n in lengths]})
        trl_packs = len(pack_dataset(dataset, capacity, strategy="bfd", map_kwargs={"batch_size": len(lengths)}))
        ours = plan_bins(lengths, capacity, "bfd")
        assert len(ours) <= trl_packs, (capacity, len(ours), trl_packs)
        efficiency = lengths.sum() / (len(ours) * capacity)
        assert efficiency >= lengths.sum() / (trl_packs * capacity)
        assert len(plan_bins(lengths, capacity, "sequential")) > len(ours)  # sequential pays for keeping order
