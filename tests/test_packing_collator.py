"""The collator on packed rows (synthetic features, no job, no model): fixed shapes, per-sequence positions,
the block-diagonal mask, padding-free per-sequence boundaries, and the configurations it refuses or warns
about because they would let packed sequences attend to each other."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from transforms.runtime import Collator
from transforms.runtime.packed import block_mask, sequence_ids

MIN = torch.finfo(torch.float32).min


def packed_row(lengths, first_token: int = 10) -> dict:
    total = int(sum(lengths))
    ids = np.arange(first_token, first_token + total, dtype=np.int32)
    labels = ids.copy()
    starts = np.cumsum([0, *lengths[:-1]])
    labels[starts] = -100
    return {"input_ids": ids, "labels": labels, "seq_lengths": np.asarray(lengths, dtype=np.int32)}


ROWS = [packed_row([3, 2, 4]), packed_row([5], 40), packed_row([1, 6], 70)]


def test_padded_packed_batches_have_fixed_shapes_reset_positions_and_a_block_mask():
    batch = Collator(pad_token_id=0, packed=True, max_length=12, mask_4d="additive")(ROWS)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (3, 12)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 0, 0]
    assert batch["labels"][0, 9:].tolist() == [-100] * 3 and batch["input_ids"][1, 5:].tolist() == [0] * 7
    mask = batch["attention_mask"]
    assert mask.shape == (3, 1, 12, 12) and mask.dtype == torch.float32
    allowed = mask[0, 0] == 0
    expected = torch.tensor(sequence_ids([np.array([3, 2, 4])], 12)[0])
    assert torch.equal(allowed, (expected[:, None] == expected[None, :]) & torch.ones(12, 12, dtype=torch.bool).tril())
    assert mask[0, 0, 3, 2] == MIN and mask[0, 0, 4, 3] == 0 and mask[0, 0, 9, 8] == MIN  # padding: own block
    assert bool((allowed.sum(dim=-1) > 0).all())  # no row fully masked (no NaN in softmax)


def test_padding_free_packed_batches_split_rows_into_their_sequences():
    batch = Collator(padding_free=True, packed=True)(ROWS)
    assert batch["input_ids"].shape == (1, 21)
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 9, 14, 15, 21] == batch["cu_seq_lens_k"].tolist()
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 6
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 5]
    starts = batch["cu_seq_lens_q"][:-1].long()
    assert (batch["labels"][0, starts] == -100).all()
    assert batch["use_cache"] is False and "attention_mask" not in batch
    with_mask = Collator(padding_free=True, packed=True, mask_4d="additive", padding_free_no_cache=False)(ROWS)
    assert with_mask["attention_mask"].shape == (1, 1, 21, 21) and "use_cache" not in with_mask


def test_configurations_that_would_leak_are_refused_or_warned_about():
    with pytest.raises(ValueError, match="need mask_4d='additive'"):
        Collator(pad_token_id=0, packed=True)  # a 2D mask over packed rows
    with pytest.raises(ValueError, match="need mask_4d='additive'"):
        Collator(pad_token_id=0, packed=True, return_attention_mask=False)
    with pytest.raises(ValueError, match="right"):
        Collator(pad_token_id=0, packed=True, mask_4d="additive", padding_side="left")
    with pytest.raises(ValueError, match="no sequence boundaries"):
        Collator(padding_free=True, packed=True, return_position_ids=False, return_flash_attn_kwargs=False)
    with pytest.warns(UserWarning, match="SDPA attention only"):
        Collator(pad_token_id=0, packed=True, mask_4d="bool")
    with pytest.raises(ValueError, match="row 0 is a packed row"):
        Collator(pad_token_id=0)(ROWS)  # a plain collator given packed rows
    with pytest.raises(ValueError, match="row 2 is a packed row"):
        Collator(padding_free=True)([ROWS[1], {"input_ids": [1, 2]}, ROWS[2]])
    Collator(pad_token_id=0)([ROWS[1]])  # a one-sequence row is an ordinary row


@pytest.mark.parametrize("feature, message", [
    ({"input_ids": [1, 2, 3]}, "has no 'seq_lengths'"),
    ({"input_ids": [1, 2, 3], "seq_lengths": [1, 1]}, "sum to 2 but input_ids has 3"),
    ({"input_ids": [1, 2, 3], "seq_lengths": [4, -1]}, "negative"),
    ({"input_ids": [1, 2, 3], "seq_lengths": [1.5, 1.5]}, "integers"),
])
def test_malformed_packed_rows_are_named(feature, message):
    collator = Collator(pad_token_id=0, packed=True, mask_4d="additive")
    with pytest.raises(ValueError, match=f"row 1: .*{message}|row 1 {message}"):
        collator([ROWS[0], feature])


def test_boolean_and_additive_masks_agree():
    ids = sequence_ids([np.array([2, 3]), np.array([4])], 6)
    additive = block_mask(ids, causal=True, kind="additive", dtype=torch.bfloat16)
    boolean = block_mask(ids, causal=True, kind="bool")
    assert additive.dtype == torch.bfloat16 and torch.equal(additive == 0, boolean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = Collator(pad_token_id=0, packed=True, mask_4d="bool", max_length=9)(ROWS[:1])
    assert batch["attention_mask"].dtype == torch.bool and batch["attention_mask"].shape == (1, 1, 9, 9)
