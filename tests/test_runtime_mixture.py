"""MixedShardDataset (transforms/runtime/mixture.py): finished datasets mixed at training time by weight and stopping
strategy: exact proportions over an epoch and close ones over every window of batches, the samplers working on it,
exact resume, and refusal of datasets whose tokenizer, template or task differ."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from transforms.runtime import (
    Collator,
    LengthGroupedBatchSampler,
    MixedShardDataset,
    ResumableDataLoader,
    ShardDataset,
    write_synthetic_dataset,
)

SIZES = {"big": 300, "mid": 100, "small": 50}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    for seed, (name, rows) in enumerate(SIZES.items()):
        write_synthetic_dataset(root / name, num_rows=rows, num_shards=2, seed=seed)
    return {name: str(root / name) for name in SIZES}


@pytest.mark.parametrize("strategy, expected", [
    ("first_exhausted", {"big": 100, "mid": 50, "small": 50}),   # small runs out first: 50 / (1/4) = 200 entries
    ("all_exhausted", {"big": 300, "mid": 150, "small": 150}),   # big is used whole: 300 / (2/4) = 600 entries
])
def test_the_proportions_are_exact_over_the_mixture_and_close_over_every_window(folders, strategy, expected):
    mix = MixedShardDataset(folders, weights=[2, 1, 1], stopping_strategy=strategy, seed=7)
    assert mix.targets == expected and len(mix) == sum(expected.values())
    iterable = mix.iterable(batch_size=8, seed=3, shuffle=True)
    order = [mix.source_of(i) for i in iterable.indices()]
    assert collections.Counter(order) == expected
    # any 25 consecutive batches (200 entries) hold each source close to its share: the interleaving is a uniform
    # shuffle, so a window's count is hypergeometric (standard deviation under 6 here); 5 sigma is the bound
    shares = {name: count / len(mix) for name, count in expected.items()}
    for start in range(0, len(order) - 199, 40):
        window = collections.Counter(order[start:start + 200])
        for name, share in shares.items():
            assert abs(window[name] - 200 * share) <= 30, (start, name, window)
    # a repeated source repeats its rows evenly: each target // kept or one more time (mid: 150 of 100 rows: 1 or 2)
    repeats = collections.Counter(zip(mix.row_sources.tolist(), mix.rows.tolist()))
    for d, name in enumerate(mix.names):
        times = {count for (source, _), count in repeats.items() if source == d}
        kept = min(SIZES[name], expected[name])
        assert times <= {expected[name] // kept, expected[name] // kept + 1}
        assert sum(1 for source, _ in repeats if source == d) == kept


def test_rows_are_the_sources_rows_and_lengths_serve_the_samplers(folders):
    mix = MixedShardDataset({"a": folders["big"], "b": folders["small"]}, weights=[1, 1], seed=2)
    sources = {"a": ShardDataset(folders["big"]), "b": ShardDataset(folders["small"])}
    for i in (0, 17, len(mix) - 1):
        expected = sources[mix.source_of(i)][int(mix.rows[i])]
        assert np.array_equal(mix[i]["input_ids"], expected["input_ids"])
        assert len(mix[i]["input_ids"]) == mix.lengths[i]
    sampler = LengthGroupedBatchSampler(mix.lengths, batch_size=8, seed=1)
    batch = next(iter(sampler))
    collated = Collator.from_manifest(folders["big"])([mix[i] for i in batch])
    assert collated["input_ids"].shape[0] == len(batch)
    assert sum(len(b) for b in sampler) == len(mix)


def test_the_same_arguments_give_the_same_mixture_and_another_seed_another(folders):
    a = MixedShardDataset(folders, weights=[1, 1, 1], seed=4)
    b = MixedShardDataset(folders, weights=[1, 1, 1], seed=4)
    c = MixedShardDataset(folders, weights=[1, 1, 1], seed=5)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.row_sources, b.row_sources)
    assert a.manifest["config_fingerprint"] == b.manifest["config_fingerprint"] != c.manifest["config_fingerprint"]
    assert not np.array_equal(a.rows, c.rows)


def test_no_weights_is_every_row_once_and_total_sets_the_length(folders):
    whole = MixedShardDataset(folders)
    assert whole.targets == SIZES
    sized = MixedShardDataset(folders, weights=[1, 1, 2], total=1000)
    assert sized.targets == {"big": 250, "mid": 250, "small": 500}


def _ids(rows) -> list[list[int]]:
    return [row["input_ids"].tolist() for row in rows]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_exactly_where_the_run_stopped(folders, num_workers):
    def loader(mix):
        iterable = mix.iterable(batch_size=4, seed=11, rank=0, world_size=1)
        return iterable, ResumableDataLoader(iterable, num_workers=num_workers, collate_fn=lambda rows: rows)

    mix = MixedShardDataset(folders, weights=[3, 1, 1], stopping_strategy="all_exhausted", seed=9)
    _, full = loader(mix)
    everything = [row for batch in full for row in _ids(batch)]
    iterable, first = loader(mix)
    seen = []
    for k, batch in enumerate(first):
        seen.extend(_ids(batch))
        if k == 6:
            break
    state = json.loads(json.dumps(iterable.state_dict()))
    resumed_iterable, resumed = loader(MixedShardDataset(folders, weights=[3, 1, 1], stopping_strategy="all_exhausted",
                                                         seed=9))
    resumed_iterable.load_state_dict(state)
    rest = [row for batch in resumed for row in _ids(batch)]
    assert seen + rest == everything
    other, _ = loader(MixedShardDataset(folders, weights=[1, 1, 1], stopping_strategy="all_exhausted", seed=9))
    with pytest.raises(ValueError, match="cannot resume"):
        other.load_state_dict(state)


def _edit_manifest(folder, **changes):
    path = f"{folder}/manifest.json"
    manifest = json.load(open(path))
    for key, value in changes.items():
        if key == "vocab_hash":
            manifest["tokenizer"]["vocab_hash"] = value
        else:
            manifest[key] = value
    json.dump(manifest, open(path, "w"))


@pytest.mark.parametrize("change, message", [
    ({"vocab_hash": "another-vocabulary"}, "tokenizer"),
    ({"chat_template_hash": "another-template"}, "chat template"),
    ({"task": {"name": "text", "columns": ["input_ids"], "collator": "text"}}, "task"),
])
def test_datasets_of_another_tokenizer_template_or_task_are_refused(tmp_path, folders, change, message):
    other = tmp_path / "other"
    write_synthetic_dataset(other, num_rows=20, seed=5)
    _edit_manifest(other, **change)
    with pytest.raises(ValueError, match=f"cannot mix 'big' and 'other': their {message}"):
        MixedShardDataset([folders["big"], str(other)], weights=[1, 1])


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": [1, 2]}, "2 weights for 3 datasets"),
    ({"weights": [1, 0, 1]}, "positive"),
    ({"weights": [1, 1, 1], "stopping_strategy": "longest"}, "stopping_strategy"),
    ({"total": 10}, "give weights"),
])
def test_bad_arguments_are_refused(folders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixedShardDataset(folders, **kwargs)


def test_a_dataloader_over_the_mixture_trains_like_over_one_dataset(folders):
    mix = MixedShardDataset(folders, weights=[1, 1, 1], seed=1)
    loader = torch.utils.data.DataLoader(mix, batch_size=16, shuffle=False,
                                         collate_fn=Collator.from_manifest(folders["mid"]))
    batches = list(loader)
    assert sum(int(b["input_ids"].shape[0]) for b in batches) == len(mix)
