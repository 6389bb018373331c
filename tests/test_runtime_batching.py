"""Length-grouped and token-budget batch samplers, and the padding fraction they achieve."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from transforms.runtime import (
    Collator,
    LengthGroupedBatchSampler,
    ShardDataset,
    TokenBudgetBatchSampler,
    padding_fraction,
)
from transforms.runtime.synthetic import lognormal_lengths, write_synthetic_dataset

LENGTHS = lognormal_lengths(5000, seed=3, low=50, high=2000)


def random_batches(n, batch_size, seed=0):
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def test_padding_fraction_definition():
    lengths = np.array([2, 4, 4, 1])
    assert padding_fraction([[0, 1], [2, 3]], lengths) == pytest.approx(1 - 11 / 16)
    assert padding_fraction([[1, 2]], lengths) == 0.0
    assert padding_fraction([[1, 2]], lengths, pad_to_multiple_of=8) == pytest.approx(0.5)


def test_length_grouped_covers_every_row_once_and_reduces_padding():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=1)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [len(b) for b in batches if len(b) != 32] == [5000 % 32]  # one incomplete batch
    grouped = sampler.padding_fraction()
    baseline = padding_fraction(random_batches(len(LENGTHS), 32), LENGTHS)
    assert baseline > 0.4 and grouped < 0.05, (baseline, grouped)


def test_length_grouped_is_deterministic_per_epoch_and_shuffles_batches():
    a = LengthGroupedBatchSampler(LENGTHS, batch_size=16, seed=4)
    b = LengthGroupedBatchSampler(LENGTHS, batch_size=16, seed=4)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    maxima = [max(LENGTHS[x] for x in batch) for batch in first]
    assert maxima != sorted(maxima, reverse=True)  # batch order is shuffled, not sorted


@pytest.mark.parametrize("drop_last", [False, True])
def test_length_grouped_ranks_get_equal_batch_counts(drop_last):
    world = 3
    samplers = [LengthGroupedBatchSampler(LENGTHS, batch_size=32, seed=0, rank=r, world_size=world,
                                          drop_last=drop_last) for r in range(world)]
    counts = {len(s) for s in samplers}
    assert len(counts) == 1
    flat = [i for s in samplers for b in s for i in b]
    if drop_last:
        assert len(flat) == len(set(flat))
        assert all(len(b) == 32 for s in samplers for b in s)
    else:
        assert set(flat) == set(range(len(LENGTHS)))


@pytest.mark.parametrize("padding_free", [False, True])
def test_token_budget_respects_max_tokens(padding_free):
    max_tokens = 8192
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=max_tokens, padding_free=padding_free, seed=2)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(LENGTHS)))
    for b in batches:
        lens = LENGTHS[b]
        cost = lens.sum() if padding_free else len(b) * lens.max()
        assert cost <= max_tokens or len(b) == 1
    assert sampler.budget_utilisation() > 0.8
    if not padding_free:
        assert sampler.padding_fraction() < 0.05


def test_token_budget_oversized_rows_and_caps():
    lengths = np.array([10, 500, 20, 30, 40])
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=100, max_batch_size=2, seed=0)
    batches = list(sampler)
    assert [1] in batches  # longer than the budget: a batch of its own
    assert all(len(b) <= 2 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(5))
    mult = TokenBudgetBatchSampler(lengths, max_tokens=128, pad_to_multiple_of=64, seed=0)
    for b in mult:
        assert len(b) * (-(-max(lengths[b]) // 64) * 64) <= 128 or len(b) == 1


def test_batch_sampler_in_dataloader_with_workers(tmp_path):
    write_synthetic_dataset(tmp_path, num_rows=200, num_shards=2)
    ds = ShardDataset(tmp_path)
    sampler = TokenBudgetBatchSampler(ds.lengths, max_tokens=512, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=Collator.from_manifest(str(tmp_path)))
    batches = list(loader)
    assert len(batches) == len(sampler)
    assert all(b["input_ids"].numel() <= 512 for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    slots = sum(b["input_ids"].numel() for b in batches)
    assert real == int(ds.lengths.sum())
    assert 1 - real / slots == pytest.approx(sampler.padding_fraction())
