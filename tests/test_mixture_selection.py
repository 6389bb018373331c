"""The mixture's arithmetic and per-record decisions (transforms/mixture): exact quotas, a keyed permutation that is a
bijection, copies that add up to the targets exactly whatever the order or batching of the records, distinct sort
keys for repeats."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.mixture import DatasetEntry, KeyedPermutation, Mixture, Selection, copy_sort_key, share_targets
from transforms.mixture.selection import rejection_sort_key
from transforms.shard_format import row_sort_key


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=1, max_value=5000), key=st.binary(min_size=1, max_size=8))
def test_the_keyed_permutation_is_a_bijection_and_the_same_one_position_at_a_time(n, key):
    perm = KeyedPermutation(n, key)
    images = perm(np.arange(n))
    assert sorted(images.tolist()) == list(range(n))
    for position in {0, n - 1, n // 2}:
        assert perm.one(position) == int(images[position])


def test_another_key_gives_another_permutation():
    a, b = KeyedPermutation(1000, b"a")(np.arange(1000)), KeyedPermutation(1000, b"b")(np.arange(1000))
    assert (a != b).mean() > 0.9


@pytest.mark.parametrize("strategy, expected", [
    ("first_exhausted", [(60, 60), (30, 30)]),   # T = min(100/(2/3), 30/(1/3)) = 90: no repeats
    ("all_exhausted", [(100, 100), (30, 50)]),   # T = max(150, 90) = 150: the small set repeated
])
def test_weights_set_exact_targets_under_both_stopping_strategies(strategy, expected):
    assert share_targets([100, 30], weights=[2, 1], stopping_strategy=strategy) == expected


def test_total_records_sets_the_size_and_may_repeat_or_subsample():
    assert share_targets([100, 30], weights=[1, 1], total=100) == [(50, 50), (30, 50)]
    assert share_targets([100, 30], weights=[1, 1], total=20) == [(10, 10), (10, 10)]


def test_max_records_and_epochs():
    assert share_targets([10, 10, 10], max_records=[4, None, 4], epochs=[None, 1.5, 2.5]) == \
        [(4, 4), (10, 15), (4, 10)]
    assert share_targets([10, 3], epochs=[0.35, 0.5]) == [(4, 4), (2, 2)]  # below 1: a subsample (4 of 10, 2 of 3)
    # a dataset without records cannot be drawn from: it takes nothing and the others are sized without it
    assert share_targets([0, 10], weights=[1, 1]) == [(0, 0), (10, 10)]


def mixture(*entries, **kwargs) -> Mixture:
    datasets = tuple(DatasetEntry(name=name, patterns=(name,), **share) for name, share in entries)
    return Mixture(datasets=datasets, **kwargs).with_files({name: (f"{name}/0", f"{name}/1") for name, _ in entries})


def records_of(m: Mixture, counts: dict) -> list[tuple[str, int]]:
    return [(path, i) for entry in m.datasets for path in entry.files for i in range(counts[path])]


@pytest.mark.parametrize("m", [
    mixture(("a", {"weight": 3}), ("b", {"weight": 1}), seed=5),
    mixture(("a", {"weight": 1}), ("b", {"weight": 1}), stopping_strategy="all_exhausted", seed=9),
    mixture(("a", {"weight": 1}), ("b", {"weight": 2}), total_records=500),
    mixture(("a", {"max_records": 37}), ("b", {"epochs": 2.3})),
    mixture(("a", {"max_records": 11, "epochs": 3}), ("b", {})),
    mixture(("a", {"epochs": 0.3}), ("b", {"epochs": 1.7})),
], ids=["first_exhausted", "all_exhausted", "total", "max_records-epochs", "subsample-repeated", "fractional"])
def test_copies_add_up_to_the_targets_exactly_whatever_the_order_and_batching(m):
    counts = {"a/0": 120, "a/1": 81, "b/0": 7, "b/1": 60}
    selection = Selection(m, counts)
    records = records_of(m, counts)
    copies = dict(zip(records, selection.copies(records)))
    for quota in selection.quotas:
        mine = [c for (path, _), c in copies.items() if path.startswith(quota.name + "/")]
        assert sum(mine) == quota.target and sum(1 for c in mine if c) == quota.kept
        assert max(mine) - min(c for c in mine if c) <= 1 if quota.kept else True  # repeats spread evenly
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    again = {}
    for start in range(0, len(shuffled), 17):  # other batches, in another order, in another "process"
        batch = shuffled[start:start + 17]
        again.update(zip(batch, Selection(m, counts).copies(batch)))
    assert again == copies


def test_the_seed_decides_which_records_are_taken():
    counts = {"a/0": 500, "a/1": 0, "b/0": 50, "b/1": 0}
    taken = []
    for seed in (1, 2):
        m = mixture(("a", {"weight": 1}), ("b", {"weight": 1}), seed=seed)
        records = records_of(m, counts)
        taken.append({r for r, c in zip(records, Selection(m, counts).copies(records)) if c})
    assert len(taken[0]) == len(taken[1]) == 100 and taken[0] != taken[1]


def test_a_mixture_that_needs_no_counts_decides_without_them():
    m = mixture(("a", {"epochs": 2}), ("b", {}))
    assert not m.needs_counts
    assert Selection(m).copies([("a/0", 5), ("b/1", 0)]) == [2, 1]
    with pytest.raises(ValueError, match="record count"):
        Selection(mixture(("a", {"max_records": 3})))


def test_repeats_get_distinct_sort_keys_with_the_row_suffix_kept():
    key = row_sort_key("a.jsonl", 3)
    keys = {copy_sort_key(key, c) for c in range(5)} | {copy_sort_key(f"{key}:00000002", c)[64:] for c in range(1, 3)}
    assert len(keys) == 6 and copy_sort_key(key, 0) == key
    assert copy_sort_key(f"{key}:00000002", 2).endswith(":00000002")
    assert rejection_sort_key({"source": "a.jsonl", "index": 3, "copy": 2}) == copy_sort_key(key, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"datasets": ()}, "at least one"),
    ({"datasets": (DatasetEntry(name="a", patterns=("x",)), DatasetEntry(name="a", patterns=("y",)))}, "used twice"),
    ({"datasets": (DatasetEntry(name="a", patterns=("x",), weight=1), DatasetEntry(name="b", patterns=("y",)))},
     "without a weight"),
    ({"datasets": (DatasetEntry(name="a", patterns=("x",)),), "total_records": 5}, "weights"),
    ({"datasets": (DatasetEntry(name="a", patterns=("x",)),), "stopping_strategy": "longest"}, "stopping_strategy"),
])
def test_invalid_mixtures_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mixture(**kwargs)


@pytest.mark.parametrize("kwargs", [{"weight": -1}, {"weight": 0}, {"max_records": 0}, {"epochs": float("nan")},
                                    {"weight": 1, "epochs": 2}, {"name": "a b"}, {"patterns": ()}])
def test_invalid_entries_are_refused(kwargs):
    with pytest.raises(ValueError):
        DatasetEntry(**{"name": "a", "patterns": ("x",), **kwargs})
