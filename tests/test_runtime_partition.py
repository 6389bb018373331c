"""Iterable mode: deterministic shuffle, rank/worker partitioning, mid-epoch resume."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from torch.utils.data import DataLoader

from transforms.runtime import (
    ResumableDataLoader,
    ShardDataset,
    ShardIterableDataset,
    epoch_permutation,
    rank_indices,
)
from transforms.runtime.synthetic import write_synthetic_dataset

N = 103  # prime: divides neither the world sizes nor the batch sizes used below


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    lengths = np.arange(N) % 17 + 2  # row i has a length that identifies i modulo 17
    write_synthetic_dataset(root, lengths=lengths, num_shards=3)
    dataset = ShardDataset(root, columns=("input_ids", "labels", "index"))
    return dataset


def ids_of(rows):
    return [int(r["index"]) for r in rows]


def collate_ids(rows):
    return [int(r["index"]) for r in rows]


def test_permutation_is_deterministic():
    a = epoch_permutation(1000, seed=3, epoch=1)
    assert np.array_equal(a, epoch_permutation(1000, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_permutation(1000, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_permutation(1000, seed=4, epoch=1))
    assert sorted(a.tolist()) == list(range(1000))
    assert epoch_permutation(5, seed=0, epoch=0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
def test_rank_partition_pad_and_drop(world_size):
    order = epoch_permutation(N, seed=0, epoch=0)
    parts = [rank_indices(order, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == -(-N // world_size)
    merged = np.concatenate(parts)
    assert set(merged.tolist()) == set(range(N))  # nothing lost
    assert len(merged) - N == (-N) % world_size  # exactly the padding is repeated
    dropped = [rank_indices(order, rank=r, world_size=world_size, drop_last=True) for r in range(world_size)]
    merged = np.concatenate(dropped)
    assert len(merged) == len(set(merged.tolist())) == N // world_size * world_size  # no duplicate
    assert len({len(p) for p in dropped}) == 1


def test_iterable_covers_epoch_across_ranks_and_workers(ds):
    world_size, batch_size = 2, 4
    seen = []
    for rank in range(world_size):
        it = ds.iterable(batch_size=batch_size, seed=7, rank=rank, world_size=world_size, drop_last=True)
        reference = ids_of(iter(it))
        assert reference == it.indices().tolist()
        loader = DataLoader(it, batch_size=batch_size, num_workers=2, collate_fn=collate_ids)
        got = list(itertools.chain.from_iterable(loader))
        assert got == reference  # same order whatever num_workers is
        seen.extend(got)
    assert len(seen) == len(set(seen)) == N // world_size * world_size


def test_shuffle_changes_with_epoch(ds):
    it = ds.iterable(seed=1, world_size=1, rank=0)
    first = ids_of(iter(it))
    assert ids_of(iter(it)) == first  # same epoch replays the same order
    it.set_epoch(1)
    second = ids_of(iter(it))
    assert second != first and sorted(second) == sorted(first) == list(range(N))


@pytest.mark.parametrize("k", [0, 1, 37, N - 1, N])
def test_resume_in_process(ds, k):
    it = ds.iterable(seed=5, epoch=2, rank=0, world_size=1)
    full = ids_of(iter(it))
    it2 = ds.iterable(seed=5, epoch=2, rank=0, world_size=1)
    head = ids_of(itertools.islice(iter(it2), k))
    state = json.loads(json.dumps(it2.state_dict()))  # JSON-able
    assert state["consumed"] == k
    fresh = ShardIterableDataset(ShardDataset(ds.root, columns=ds.columns), seed=5, rank=0, world_size=1)
    fresh.load_state_dict(state)
    tail = ids_of(iter(fresh))
    if k == N:  # a completed epoch: the next pass replays it (until set_epoch moves on)
        assert head == full and tail == full
    else:
        assert head + tail == full


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_with_dataloader_workers(ds, num_workers):
    batch_size, k_batches = 4, 5
    it = ds.iterable(batch_size=batch_size, seed=11, epoch=1, rank=1, world_size=2)
    full = list(itertools.chain.from_iterable(
        DataLoader(it, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_ids)))
    assert full == it.indices().tolist()

    it1 = ds.iterable(batch_size=batch_size, seed=11, epoch=1, rank=1, world_size=2)
    loader = ResumableDataLoader(it1, num_workers=num_workers, collate_fn=collate_ids)
    head = []
    for batch in loader:
        head.extend(batch)
        if len(head) == k_batches * batch_size:
            break
    state = it1.state_dict()
    assert state["consumed"] == k_batches * batch_size

    it2 = ds.iterable(batch_size=batch_size, seed=11, rank=1, world_size=2)
    it2.load_state_dict(state)
    loader2 = ResumableDataLoader(it2, num_workers=num_workers, collate_fn=collate_ids)
    tail = list(itertools.chain.from_iterable(loader2))
    assert head + tail == full
    assert it2.state_dict()["consumed"] == len(it2) == len(full)


def test_resume_with_other_batch_size_and_worker_count(ds):
    it = ds.iterable(batch_size=3, seed=2, rank=0, world_size=1)
    full = it.indices().tolist()
    head = list(itertools.chain.from_iterable(itertools.islice(
        iter(ResumableDataLoader(it, num_workers=2, collate_fn=collate_ids)), 4)))
    it2 = ds.iterable(batch_size=5, seed=2, rank=0, world_size=1)
    it2.load_state_dict(it.state_dict())
    tail = list(itertools.chain.from_iterable(ResumableDataLoader(it2, num_workers=1, collate_fn=collate_ids)))
    assert head + tail == full


def test_load_state_dict_refuses_other_partitioning(ds):
    state = ds.iterable(seed=1, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="seed"):
        ds.iterable(seed=2, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        ds.iterable(seed=1, rank=0, world_size=4).load_state_dict(state)


def test_resumable_loader_rejects_mismatched_batch_size(ds):
    it = ds.iterable(batch_size=4, rank=0, world_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        ResumableDataLoader(it, batch_size=8)
    with pytest.raises(ValueError, match="persistent_workers"):
        ResumableDataLoader(it, num_workers=1, persistent_workers=True)


def test_iterable_from_a_folder_path_equals_the_dataset_view(ds):
    """``ShardIterableDataset(path)`` (a documented ``transforms.runtime`` form) opens the folder itself."""
    from_path = ShardIterableDataset(str(ds.root), seed=3, epoch=1, rank=0, world_size=1)
    from_view = ds.iterable(seed=3, epoch=1, rank=0, world_size=1)
    assert len(from_path) == len(from_view) == N
    assert [r["input_ids"].tolist() for r in from_path] == [r["input_ids"].tolist() for r in from_view]
