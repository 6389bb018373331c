"""Collator: parity with transformers' collators, padding-free mode, 4D masks, plain-list features."""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from transforms.runtime import Batch, Collator, CollatorConfig, ShardDataset
from transforms.runtime.synthetic import write_synthetic_dataset

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
)

PAD, BOS, EOS = 0, 1, 2
VOCAB = 64


def tiny_tokenizer(padding_side="right", pad_token="[PAD]"):
    """An offline WordLevel tokenizer: '[PAD]'=0, '[BOS]'=1, '[EOS]'=2, 'w3'..'w63'."""
    vocab = {"[PAD]": PAD, "[BOS]": BOS, "[EOS]": EOS, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pad_token, eos_token="[EOS]", bos_token="[BOS]")
    tok.padding_side = padding_side
    return tok


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds")
    write_synthetic_dataset(path, num_rows=64, num_shards=2, vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS)
    return str(path)


@pytest.fixture(scope="module")
def features(root):
    ds = ShardDataset(root)
    return [ds[i] for i in range(11)]


def assert_same(ours, theirs, keys):
    for key in keys:
        a, b = ours[key], theirs[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor), key
            assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
            assert torch.equal(a, b), key
        else:
            assert type(a) is type(b) and a == b, key


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("as_lists", [False, True])
def test_padded_matches_seq2seq(root, features, side, multiple, as_lists):
    if as_lists:
        features = [{k: v.tolist() for k, v in f.items()} for f in features]
    theirs = DataCollatorForSeq2Seq(tiny_tokenizer(side), pad_to_multiple_of=multiple)(features)
    ours = Collator.from_manifest(root, padding_side=side, pad_to_multiple_of=multiple)(features)
    assert_same(ours, theirs, ["input_ids", "attention_mask", "labels"])
    assert set(ours) == {"input_ids", "attention_mask", "labels", "position_ids"}
    if multiple:
        assert ours["input_ids"].shape[1] % multiple == 0


@pytest.mark.parametrize("side", ["right", "left"])
def test_fixed_max_length_matches_seq2seq(features, side):
    theirs = DataCollatorForSeq2Seq(tiny_tokenizer(side), padding="max_length", max_length=70,
                                    pad_to_multiple_of=16)(features)
    ours = Collator(pad_token_id=PAD, padding_side=side, max_length=70, pad_to_multiple_of=16)(features)
    assert ours["input_ids"].shape == (len(features), 80)
    assert_same(ours, theirs, ["input_ids", "attention_mask", "labels"])
    with pytest.raises(ValueError, match="max_length"):
        Collator(pad_token_id=PAD, max_length=4)(features)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 4])
def test_padded_without_labels_matches_with_padding(features, side, multiple):
    unlabeled = [{"input_ids": f["input_ids"]} for f in features]
    theirs = DataCollatorWithPadding(tiny_tokenizer(side), pad_to_multiple_of=multiple)(unlabeled)
    ours = Collator(pad_token_id=PAD, padding_side=side, pad_to_multiple_of=multiple)(unlabeled)
    assert_same(ours, theirs, ["input_ids", "attention_mask"])
    # no labels given: every real token is trained, -100 only on padding
    expected = ours["input_ids"].masked_fill(ours["attention_mask"] == 0, -100)
    assert torch.equal(ours["labels"], expected)


def test_position_ids_follow_real_tokens(features):
    for side in ("right", "left"):
        batch = Collator(pad_token_id=PAD, padding_side=side)(features)
        mask = batch["attention_mask"]
        expected = (mask.cumsum(1) - 1) * mask
        assert torch.equal(batch["position_ids"], expected)


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("return_position_ids", [True, False])
def test_padding_free_matches_flattening(features, with_labels, return_position_ids):
    if not with_labels:
        features = [{"input_ids": f["input_ids"]} for f in features]
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True,
                                        return_position_ids=return_position_ids)(features)
    ours = Collator(padding_free=True, return_position_ids=return_position_ids)(features)
    assert set(ours) == set(theirs)
    assert_same(ours, theirs, list(theirs))
    assert ours["cu_seq_lens_q"].dtype == torch.int32
    assert isinstance(ours["max_length_q"], int)
    assert "attention_mask" not in ours


def test_padding_free_skips_empty_rows_like_transformers(features):
    mixed = [features[0], {"input_ids": np.zeros(0, np.int32), "labels": np.zeros(0, np.int32)}, features[1]]
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(mixed)
    assert_same(Collator(padding_free=True)(mixed), theirs, list(theirs))
    with pytest.raises(ValueError):
        Collator(padding_free=True)([mixed[1]])


def test_eos_equal_to_pad_stays_trained(tmp_path):
    write_synthetic_dataset(tmp_path, num_rows=8, num_shards=1, vocab_size=VOCAB, pad_token_id=EOS, eos_token_id=EOS)
    ds = ShardDataset(tmp_path)
    feats = [ds[i] for i in range(len(ds))]
    for side in ("right", "left"):
        batch = Collator.from_manifest(str(tmp_path), padding_side=side)(feats)
        for i, f in enumerate(feats):
            n = len(f["input_ids"])
            real = batch["attention_mask"][i].bool()
            assert int(real.sum()) == n
            assert batch["labels"][i][real][-1].item() == EOS  # the final EOS keeps its label
            assert (batch["labels"][i][~real] == -100).all()
            assert (batch["input_ids"][i][~real] == EOS).all()


def test_tokenizer_output_lists_drop_in():
    tok = tiny_tokenizer()
    enc = tok(["w3 w4 w5 [EOS]", "w6 [EOS]", "w7 w8 w9 w10 w11 [EOS]"])
    feats = [{"input_ids": ids, "attention_mask": m} for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
    ours = Collator(pad_token_id=tok.pad_token_id)(feats)
    theirs = DataCollatorWithPadding(tok)(feats)
    assert_same(ours, theirs, ["input_ids", "attention_mask"])
    assert ours["labels"].tolist()[1] == [6, 2, -100, -100, -100, -100]
    flat = Collator(padding_free=True)(feats)
    assert flat["labels"].tolist() == [[-100, 4, 5, 2, -100, 2, -100, 8, 9, 10, 11, 2]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4, 5]]


def test_rows_written_padded(tmp_path):
    write_synthetic_dataset(tmp_path, num_rows=11, num_shards=1, vocab_size=VOCAB, pad_to=64, pad_token_id=PAD)
    ds = ShardDataset(tmp_path)
    padded_rows = [ds[i] for i in range(len(ds))]
    batch = Collator(pad_token_id=PAD)(padded_rows)
    assert batch["input_ids"].shape == (11, 64)
    assert torch.equal(batch["attention_mask"],
                       torch.from_numpy(np.stack([r["attention_mask"] for r in padded_rows])).long())
    trimmed = [{"input_ids": r["input_ids"][r["attention_mask"] == 1], "labels": r["labels"][r["attention_mask"] == 1]}
               for r in padded_rows]
    flat = Collator(padding_free=True)(padded_rows)
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(trimmed)
    assert_same(flat, theirs, list(theirs))


def test_block_diagonal_masks(features):
    bool_batch = Collator(padding_free=True, mask_4d="bool")(features[:3])
    add_batch = Collator(padding_free=True, mask_4d="additive")(features[:3])
    total = bool_batch["input_ids"].shape[1]
    m = bool_batch["attention_mask"]
    assert m.shape == (1, 1, total, total) and m.dtype == torch.bool
    cu = bool_batch["cu_seq_lens_q"].tolist()
    expected = torch.zeros(total, total, dtype=torch.bool)
    for a, b in zip(cu[:-1], cu[1:]):
        expected[a:b, a:b] = torch.ones(b - a, b - a, dtype=torch.bool).tril()
    assert torch.equal(m[0, 0], expected)
    a = add_batch["attention_mask"]
    assert a.dtype == torch.float32
    assert torch.equal(a[0, 0] == 0, expected)
    assert (a[0, 0][~expected] == torch.finfo(torch.float32).min).all()


def _tiny_llama(attn):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=PAD, attn_implementation=attn)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("attn,mask", [("eager", "additive"), ("sdpa", "bool"), ("sdpa", None)])
def test_padding_free_logits_equal_per_sequence(features, attn, mask):
    """The flattened batch gives every sequence the logits it gets alone (masks and positions right)."""
    model = _tiny_llama(attn)
    feats = features[:4]
    batch = Collator(padding_free=True, mask_4d=mask)(feats)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
    # Without a 4D mask, transformers finds the sequence boundaries from position_ids only when it
    # builds no KV cache: use_cache=False (training does not need one).
    inputs["use_cache"] = False
    with torch.no_grad():
        flat_logits = model(**inputs).logits[0]
        cu = batch["cu_seq_lens_q"].tolist()
        for j, f in enumerate(feats):
            alone = model(input_ids=torch.tensor(f["input_ids"], dtype=torch.long)[None]).logits[0]
            torch.testing.assert_close(flat_logits[cu[j]:cu[j + 1]], alone, atol=1e-4, rtol=1e-4)
        padded = Collator(pad_token_id=PAD, padding_side="left")(feats)
        left_logits = model(**{k: padded[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits
        for j, f in enumerate(feats):
            n = len(f["input_ids"])
            alone = model(input_ids=torch.tensor(f["input_ids"], dtype=torch.long)[None]).logits[0]
            torch.testing.assert_close(left_logits[j, -n:], alone, atol=1e-4, rtol=1e-4)


def test_batch_helpers_and_dtypes(features):
    batch = Collator(pad_token_id=PAD)(features)
    assert isinstance(batch, Batch)
    assert all(v.dtype == torch.int64 for v in batch.values())
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, Batch) and torch.equal(moved["labels"], batch["labels"])
    flat = Collator(padding_free=True).__call__(features).to(torch.device("cpu"))
    assert isinstance(flat["max_length_k"], int)
    # pin_memory is ignored without CUDA rather than failing
    assert Collator(pad_token_id=PAD, pin_memory=True)(features)["input_ids"].shape == batch["input_ids"].shape


def test_config_is_frozen_keyword_only_and_validated():
    cfg = CollatorConfig(pad_token_id=PAD)
    with pytest.raises(TypeError):
        CollatorConfig(PAD)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.pad_token_id = 3
    collator = Collator(cfg, padding_side="left")
    assert collator.config.padding_side == "left" and collator.config.pad_token_id == PAD
    clone = pickle.loads(pickle.dumps(collator))
    assert clone.config == collator.config
    with pytest.raises(ValueError, match="pad_token_id"):
        Collator()
    with pytest.raises(ValueError, match="padding_side"):
        Collator(pad_token_id=0, padding_side="middle")
    with pytest.raises(ValueError, match="padding-free"):
        Collator(pad_token_id=0, mask_4d="bool")
    with pytest.raises(ValueError):
        Collator(pad_token_id=0)([])


def test_from_manifest_falls_back_to_eos(tmp_path):
    write_synthetic_dataset(tmp_path, num_rows=4, num_shards=1, pad_token_id=None, eos_token_id=EOS)
    assert Collator.from_manifest(str(tmp_path)).config.pad_token_id == EOS
    assert Collator.from_manifest(str(tmp_path), pad_token_id=7).config.pad_token_id == 7


def test_collate_extra_hook(features):
    class WithImages(Collator):
        def collate_extra(self, feats, batch, layout):
            batch["pixel_values"] = torch.stack([torch.full((3,), float(i)) for i in layout.rows])
            batch["row_starts"] = torch.from_numpy(layout.starts)

    feats = [dict(f, pixel_values="ignored by default") for f in features[:3]]
    assert "pixel_values" not in Collator(pad_token_id=PAD)(feats)  # nothing extra passes through
    batch = WithImages(pad_token_id=PAD, padding_side="left")(feats)
    assert batch["pixel_values"].shape == (3, 3)
    lens = [len(f["input_ids"]) for f in feats]
    assert batch["row_starts"].tolist() == [batch["input_ids"].shape[1] - n for n in lens]
    flat = WithImages(padding_free=True)(feats)
    assert flat["row_starts"].tolist() == flat["cu_seq_lens_q"][:-1].tolist()
