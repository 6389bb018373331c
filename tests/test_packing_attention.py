"""No cross-contamination: every sequence inside a packed batch gives the logits and per-token losses it gives
alone, for tiny randomly initialised Llama and Qwen2 causal LMs (eager and SDPA attention), in every collator
mode ``docs/packing.md`` calls safe; the modes it calls unsafe are shown to leak. The summed token loss over
a packed epoch equals the unpacked one, and ``trl.SFTTrainer`` trains on the packed shards as they are.

The job runs on generated chat records with a small tokenizer trained in the test (tests/packing_fixtures.py),
so the models' vocabularies are the dataset's own (about 400 ids) and no id is remapped.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from packing_fixtures import (
    chat_records,
    run_job,
    sequences_of,
    small_tokenizer_dir,
    tiny_causal_lm,
    token_losses,
    write_jsonl,
)

from transforms.runtime import Collator, ShardDataset

PACK = 192
TOLERANCE = 2e-5
SAFE_MODES = {  # collator options -> attention implementations the docs call safe
    "4d-additive": ({}, ("eager", "sdpa")),
    "4d-bool": ({"mask_4d": "bool"}, ("sdpa",)),
    "padding-free": ({"padding_free": True}, ("eager", "sdpa")),
    "padding-free-4d": ({"padding_free": True, "mask_4d": "additive"}, ("eager", "sdpa")),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing_attention")
    data = write_jsonl(root / "chat.jsonl", chat_records(5, 48, words=20))
    for name, flags in (("packed", ["--pack-length", str(PACK)]), ("rows", ["--max-length", str(PACK)])):
        assert run_job(["--input", data, "--output", str(root / name), "--tokenizer", small_tokenizer_dir(),
                        "--num-shards", "1", "--workers", "1", *flags]) == 0
    return {"packed": str(root / "packed"), "rows": str(root / "rows")}


@pytest.fixture(scope="module")
def vocab_size(folders):
    return int(ShardDataset(folders["packed"]).tokenizer_info["vocab_size"])


def packed_rows(folder: str, count: int = 3) -> list[dict]:
    """The first packed rows holding several sequences (the last one not full, so padding is exercised)."""
    dataset = ShardDataset(folder)
    several = [dataset[i] for i in range(len(dataset)) if len(dataset[i]["seq_lengths"]) > 1]
    assert len(several) >= count
    chosen = several[:count - 1] + [min(several[count - 1:], key=lambda row: len(row["input_ids"]))]
    assert len(chosen[-1]["input_ids"]) < PACK
    return chosen


def tensor(values) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=np.int64))


def alone(model, rows) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, per-token losses) of every sequence of ``rows`` run by itself (no mask, default positions)."""
    out = []
    with torch.no_grad():
        for row in rows:
            start = 0
            ids, labels = tensor(row["input_ids"]), tensor(row["labels"])
            for length in np.asarray(row["seq_lengths"]).tolist():
                logits = model(input_ids=ids[None, start:start + length], use_cache=False).logits[0]
                out.append((logits, token_losses(logits, labels[start:start + length])))
                start += length
    return out


def worst_difference(model, batch, rows, reference, padding_free: bool) -> list[float]:
    """Per sequence: the largest |logit difference| between the packed batch and the sequence alone (and its
    per-token losses, which must agree as well for the result to count as equal)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits
    differences = []
    for (b, start, length), (expected, expected_losses) in zip(sequences_of(batch, rows, padding_free), reference):
        got = logits[b, start:start + length]
        losses = token_losses(got, batch["labels"][b, start:start + length])
        differences.append(max(float((got - expected).abs().max()), float((losses - expected_losses).abs().max())))
    return differences


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_every_sequence_of_a_packed_batch_equals_the_sequence_alone_in_the_safe_modes(folders, vocab_size,
                                                                                      arch, attn):
    model = tiny_causal_lm(arch, vocab_size, attn)
    rows = packed_rows(folders["packed"])
    reference = alone(model, rows)
    checked = []
    for mode, (options, safe_for) in SAFE_MODES.items():
        if attn not in safe_for:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mask_4d="bool" warns that it suits SDPA only
            collator = Collator.from_manifest(folders["packed"], **options)
        batch = collator(rows)
        padding_free = bool(options.get("padding_free"))
        if not padding_free:
            assert batch["input_ids"].shape == (len(rows), PACK)
            assert batch["attention_mask"].shape == (len(rows), 1, PACK, PACK)
        else:
            assert batch["use_cache"] is False and len(batch["cu_seq_lens_q"]) == len(reference) + 1
        differences = worst_difference(model, batch, rows, reference, padding_free)
        assert max(differences) < TOLERANCE, (mode, differences)
        checked.append(mode)
    assert checked


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_unsafe_modes_leak_across_packed_sequences(folders, vocab_size, attn):
    """What the docs warn about, measured: a 2D mask with reset positions (any implementation), a boolean 4D
    mask under eager attention, and a padding-free batch run with a cache (use_cache=True)."""
    model = tiny_causal_lm("llama", vocab_size, attn)
    rows = packed_rows(folders["packed"])
    reference = alone(model, rows)
    firsts = [k for k, (_, start, _) in enumerate(sequences_of({}, rows, False)) if start == 0]
    safe = Collator.from_manifest(folders["packed"])(rows)
    two_d = dict(safe, attention_mask=(torch.arange(PACK)[None, :] < torch.tensor(
        [len(row["input_ids"]) for row in rows])[:, None]).long())  # padding masked, sequences not separated
    flat = Collator.from_manifest(folders["packed"], padding_free=True)(rows)
    unsafe = {"2d-mask-reset-positions": (two_d, False, True),
              "padding-free-with-cache": (dict(flat, use_cache=True), True, True)}
    if attn == "eager":
        with pytest.warns(UserWarning, match="SDPA"):
            boolean = Collator.from_manifest(folders["packed"], mask_4d="bool")
        unsafe["4d-bool-eager"] = (boolean(rows), False, False)  # eager adds 1/0: not even causal any more
    for mode, (batch, padding_free, causal) in unsafe.items():
        differences = worst_difference(model, batch, rows, reference, padding_free)
        first = [0] if padding_free else firsts  # the sequences with nothing before them in their row
        later = [d for k, d in enumerate(differences) if k not in first]
        assert min(later) > 1e-3, (mode, differences)  # every later sequence attends to the earlier ones
        if causal:
            assert max(differences[k] for k in first) < TOLERANCE, mode


def test_with_rope_the_mask_separates_sequences_and_reset_positions_are_secondary(folders, vocab_size):
    """RoPE scores depend on position differences only: under the block mask, positions running on across a
    packed row change the logits by float rounding only (the collator resets them anyway: models with
    absolute positions, and M-RoPE, need it), while the reset positions cannot replace the mask."""
    model = tiny_causal_lm("qwen2", vocab_size, "sdpa")
    rows = packed_rows(folders["packed"])
    reference = alone(model, rows)
    safe = Collator.from_manifest(folders["packed"])(rows)
    running = dict(safe, position_ids=torch.arange(PACK).expand(len(rows), PACK))
    assert max(worst_difference(model, running, rows, reference, False)) < 1e-4


def test_summed_token_loss_over_a_packed_epoch_equals_the_unpacked_one(folders, vocab_size):
    model = tiny_causal_lm("qwen2", vocab_size, "sdpa")
    packed, rows = ShardDataset(folders["packed"]), ShardDataset(folders["rows"])
    collator = Collator.from_manifest(folders["packed"])
    packed_sum, packed_tokens, model_sum = 0.0, 0, 0.0
    with torch.no_grad():
        for start in range(0, len(packed), 8):
            batch = collator([packed[i] for i in range(start, min(start + 8, len(packed)))])
            out = model(**batch)
            for b in range(len(out.logits)):
                packed_sum += float(token_losses(out.logits[b], batch["labels"][b]).sum())
            trained = int((batch["labels"][:, 1:] != -100).sum())
            packed_tokens += trained
            model_sum += float(out.loss) * trained  # transformers' own loss: mean over trained tokens
        unpacked_sum, unpacked_tokens = 0.0, 0
        for i in range(len(rows)):
            row = rows[i]
            logits = model(input_ids=tensor(row["input_ids"])[None], use_cache=False).logits[0]
            losses = token_losses(logits, tensor(row["labels"]))
            unpacked_sum += float(losses.sum())
            unpacked_tokens += int((tensor(row["labels"])[1:] != -100).sum())
    assert packed_tokens == unpacked_tokens > 500
    assert packed_sum == pytest.approx(unpacked_sum, rel=1e-5)
    assert model_sum == pytest.approx(unpacked_sum, rel=1e-5)


def test_sft_trainer_trains_on_packed_shards_as_they_are(folders, vocab_size, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from transforms.runtime.hf import hf_dataset

    folder = folders["packed"]
    dataset = hf_dataset(folder)
    collator = Collator.from_manifest(folder)
    model = tiny_causal_lm("qwen2", vocab_size, "sdpa")
    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, max_steps=2, report_to=[],
                     remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
                     use_cpu=True, save_strategy="no", logging_steps=1, seed=0, learning_rate=1e-2)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                         processing_class=AutoTokenizer.from_pretrained(small_tokenizer_dir()))
    batch = next(iter(trainer.get_train_dataloader()))
    # our labels, unchanged: every row of the trainer's batch is one packed row collated by our collator
    shards = ShardDataset(folder)
    by_tokens = {}
    for i in range(len(shards)):
        alone_batch = collator([shards[i]])
        by_tokens[tuple(alone_batch["input_ids"][0].tolist())] = (shards[i], alone_batch)
    rows = []
    for b in range(len(batch["input_ids"])):
        row, expected = by_tokens[tuple(batch["input_ids"][b].tolist())]
        for key in ("labels", "position_ids", "attention_mask"):
            assert torch.equal(batch[key][b], expected[key][0]), key
        rows.append(row)
    # the trainer's loss is the mean token loss of the sequences, each run alone
    model.eval()
    reference = alone(model, rows)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
    losses = torch.cat([token_losses_ for _, token_losses_ in reference])
    trained = sum(int((tensor(row["labels"])[1:] != -100).sum()) for row in rows)
    assert float(loss) == pytest.approx(float(losses.sum()) / trained, rel=1e-5)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
