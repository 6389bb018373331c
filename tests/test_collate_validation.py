"""Collator input validation (issue 11, item 8): malformed features raise ValueError naming the row
and the problem, in padded and padding-free mode, for numpy arrays, lists and tensors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from transforms.runtime import Collator, CollatorConfig, ShardDataset
from transforms.runtime.collate import manifest_options
from transforms.runtime.synthetic import write_synthetic_dataset

MODES = {"padded": dict(pad_token_id=0), "padding_free": dict(padding_free=True)}


def good_rows(n=5, as_type=np.asarray):
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        ids = rng.integers(3, 60, 6 + i).astype(np.int32)
        labels = ids.copy()
        labels[:3] = -100
        rows.append({"input_ids": as_type(ids), "labels": as_type(labels)})
    return rows


def to_list(a):
    return np.asarray(a).tolist()


@pytest.fixture(params=sorted(MODES))
def collator(request):
    return Collator(**MODES[request.param])


def expect(collator, features, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        collator(features)


@pytest.mark.parametrize("as_type", [np.asarray, to_list, torch.tensor], ids=["numpy", "list", "tensor"])
def test_labels_shorter_or_longer_than_input_ids(collator, as_type):
    rows = good_rows(as_type=as_type)
    rows[3]["labels"] = as_type(np.asarray(rows[3]["labels"])[:-2])
    expect(collator, rows, "row 3: labels has 7 values but input_ids has 9")
    rows = good_rows(as_type=as_type)
    rows[1]["labels"] = as_type(np.concatenate([np.asarray(rows[1]["labels"]), [5, 5]]))
    expect(collator, rows, "row 1: labels has 9 values but input_ids has 7")


def test_attention_mask_of_another_length(collator):
    rows = good_rows()
    for r in rows:
        r["attention_mask"] = np.ones(len(r["input_ids"]), dtype=np.int8)
    rows[2]["attention_mask"] = rows[2]["attention_mask"][:-1]
    expect(collator, rows, "row 2: attention_mask has 7 values but input_ids has 8")
    rows[2]["attention_mask"] = np.array([1] * 7 + [2], dtype=np.int8)
    expect(collator, rows, "row 2: attention_mask has 2 at position 7; it must be 0 or 1")


@pytest.mark.parametrize("as_type", [np.asarray, to_list], ids=["numpy", "list"])
def test_negative_ids(collator, as_type):
    rows = good_rows()
    rows[4]["input_ids"] = rows[4]["input_ids"].copy()
    rows[4]["input_ids"][5] = -7
    rows[4]["labels"] = rows[4]["input_ids"]
    rows[4] = {k: as_type(v) for k, v in rows[4].items()}
    expect(collator, rows, "row 4: input_ids has a negative id (-7 at position 5)")


def test_negative_label_other_than_ignore(collator):
    rows = good_rows()
    rows[0]["labels"] = rows[0]["labels"].copy()
    rows[0]["labels"][4] = -1
    expect(collator, rows, "row 0: labels has -1 at position 4: a label is a token id or -100 (no loss)")
    rows[0]["labels"][4] = -101
    expect(collator, rows, "row 0: labels has -101 at position 4")


def test_custom_negative_label_pad_is_accepted_as_no_loss():
    rows = good_rows()
    for r in rows:
        r["labels"] = np.where(r["labels"] == -100, -1, r["labels"]).astype(np.int32)
    batch = Collator(pad_token_id=0, label_pad_token_id=-1)(rows)
    assert int(batch["labels"].min()) == -1


@pytest.mark.parametrize("big", [2**31, 2**40, 2**63 - 1])
def test_ids_beyond_int32(collator, big):
    rows = good_rows()
    rows[2] = {"input_ids": np.array([5, big, 6], dtype=np.int64)}
    expect(collator, rows, f"row 2: input_ids has id {big} at position 1, beyond int32 (2147483647)")
    rows[2] = {"input_ids": [5, 6, big]}
    expect(collator, rows, f"row 2: input_ids has id {big} at position 2, beyond int32")


def test_ids_beyond_int64_in_lists(collator):
    rows = good_rows()
    rows[1] = {"input_ids": [5, 2**70, 6]}
    expect(collator, rows, f"row 1: input_ids has {2**70} at position 1, beyond int64")


def test_uint64_ids_beyond_int64(collator):
    rows = good_rows()
    rows[3] = {"input_ids": np.array([4, 2**64 - 1], dtype=np.uint64)}
    expect(collator, rows, f"row 3: input_ids has id {2**64 - 1} at position 1, beyond int32")


def test_ids_beyond_the_vocabulary(tmp_path):
    for mode in MODES.values():
        rows = good_rows()
        rows[1]["labels"] = rows[1]["labels"].copy()
        rows[1]["labels"][-1] = 64
        expect(Collator(**mode, vocab_size=64), rows,
               "row 1: labels has 64 at position 6: beyond the vocabulary (vocab_size=64)")
        rows[1]["input_ids"] = rows[1]["labels"].copy()
        rows[1]["input_ids"][:3] = 5
        expect(Collator(**mode, vocab_size=64), rows,
               "row 1: input_ids has id 64 at position 6, beyond the vocabulary (vocab_size=64)")
        Collator(**mode, vocab_size=65)(rows)  # in range
    write_synthetic_dataset(tmp_path, num_rows=8, num_shards=1, vocab_size=100)
    collator = Collator.from_manifest(str(tmp_path))
    assert collator.config.vocab_size == 100
    rows = [ShardDataset(str(tmp_path))[i] for i in range(8)]
    collator(rows)
    rows[6] = {"input_ids": np.array([3, 100], dtype=np.int32)}
    expect(collator, rows, "row 6: input_ids has id 100 at position 1, beyond the vocabulary (vocab_size=100)")


@pytest.mark.parametrize("value, message", [
    ([3, 4.5, 6], "row 2: input_ids has a non-integer value 4.5 at position 1"),
    (np.array([3.0, 4.0]), "row 2: input_ids holds non-integer values (dtype float64"),
    (["3", "4"], "row 2: input_ids has a non-integer value '3' at position 0"),
    ([3, None], "row 2: input_ids has a non-integer value None at position 1"),
    (np.zeros((1, 4), dtype=np.int64), "row 2: input_ids must be a flat sequence of integers, got shape (1, 4)"),
    (torch.zeros(1, 4, dtype=torch.long), "row 2: input_ids must be a flat sequence of integers, got shape (1, 4)"),
    (None, "row 2: input_ids is None"),
    (7, "row 2: input_ids must be a flat sequence of integers, got shape ()"),
])
def test_non_integer_or_malformed_values(collator, value, message):
    rows = good_rows()
    rows[2] = {"input_ids": value}
    expect(collator, rows, message)


def test_float_labels(collator):
    rows = good_rows()
    rows[0]["labels"] = rows[0]["labels"].astype(np.float32)
    expect(collator, rows, "row 0: labels holds non-integer values (dtype float32")


def test_missing_keys_and_non_mappings(collator):
    rows = good_rows()
    rows[3] = {"labels": rows[3]["labels"]}
    expect(collator, rows, "row 3: no 'input_ids' (keys: ['labels'])")
    rows[3] = [1, 2, 3]
    expect(collator, rows, "row 3: a feature must be a mapping with 'input_ids', not list")


def test_valid_mixed_inputs_still_collate_exactly():
    """uint64, int16, lists and tensors in one batch give the same tensors as int64 arrays."""
    rows = good_rows(4)
    kinds = [lambda a: np.asarray(a, dtype=np.uint64) if a.min() >= 0 else a,
             lambda a: a.astype(np.int16), to_list, torch.tensor]
    mixed = [{k: conv(v) for k, v in r.items()} for r, conv in zip(rows, kinds)]
    plain = [{k: v.astype(np.int64) for k, v in r.items()} for r in rows]
    for mode in MODES.values():
        ours, ref = Collator(**mode)(mixed), Collator(**mode)(plain)
        assert ours.keys() == ref.keys()
        for key in ref:
            if isinstance(ref[key], torch.Tensor):
                assert torch.equal(ours[key], ref[key]), key


def test_check_values_off_skips_only_value_checks():
    rows = good_rows()
    rows[1]["input_ids"] = rows[1]["input_ids"].copy()
    rows[1]["input_ids"][0] = -3
    batch = Collator(pad_token_id=0, check_values=False)(rows)
    assert int(batch["input_ids"][1, 0]) == -3
    rows[2]["labels"] = rows[2]["labels"][:-1]
    expect(Collator(pad_token_id=0, check_values=False), rows, "row 2: labels has")


def test_config_refuses_bad_pad_and_vocab():
    with pytest.raises(ValueError, match="pad_token_id"):
        CollatorConfig(pad_token_id=-1)
    with pytest.raises(ValueError, match="pad_token_id"):
        CollatorConfig(pad_token_id=64, vocab_size=64)
    with pytest.raises(ValueError, match="vocab_size"):
        CollatorConfig(pad_token_id=0, vocab_size=0)


def test_manifest_options():
    manifest = {"tokenizer": {"pad_token_id": None, "eos_token_id": 7, "vocab_size": 50}}
    assert manifest_options(manifest, {}) == {"pad_token_id": 7, "vocab_size": 50}
    assert manifest_options(manifest, {"vocab_size": 99, "pad_token_id": 1}) == {"vocab_size": 99, "pad_token_id": 1}
    assert manifest_options({"tokenizer": {"pad_token_id": 60, "vocab_size": 50}}, {})["vocab_size"] == 61
    assert "vocab_size" not in manifest_options({"tokenizer": {"pad_token_id": 0}}, {})
