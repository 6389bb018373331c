"""Parity with TRL 1.16: the runtime collators against ``DataCollatorForPreference`` /
``DataCollatorForUnpairedPreference``, and the DPO and KTO losses that ``DPOTrainer`` / ``KTOTrainer`` compute on
a tiny randomly initialised model from our rows against the losses they compute from their own preparation
(``datasets.map`` tokenization) of the same pairs.

TRL 1.16 cannot skip its preparation (``_prepare_dataset`` always runs: it would extract a prompt from rows that
have no ``prompt`` column); the documented route (``docs/preference.md``, ``examples/train_dpo_trl.py``) is a
subclass whose ``_prepare_dataset`` returns our rows as they are, with our collator (or TRL's: the batches are
equal). With a template that writes nothing after the end-of-turn token (Llama 3), TRL's rows equal ours and so
do the losses; with ChatML, TRL's completions also hold the newline the template writes after ``<|im_end|>``
(ours stop at the end-of-turn token, the SFT end rule), which the test checks exactly.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_preference_labels import family_tokenizer

from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions
from transforms.reading import RawRecord
from transforms.rows import RowBuilder
from transforms.runtime.preference import KtoCollator, PreferenceCollator
from transforms.tasks.preference import KtoOptions, PreferenceOptions

trl = pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DataCollatorForPreference  # noqa: E402
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference  # noqa: E402

import template_families as tf  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
row_ids = st.lists(st.integers(1, 50), min_size=0, max_size=7)
completion_ids = st.lists(st.integers(1, 50), min_size=1, max_size=7)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(row_ids, completion_ids, completion_ids), min_size=1, max_size=5),
       max_length=st.none() | st.integers(1, 12), mode=st.sampled_from(["keep_start", "keep_end"]),
       multiple=st.none() | st.integers(1, 4), ref=st.booleans())
def test_preference_collator_equals_trl(rows, max_length, mode, multiple, ref):
    features = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in rows]
    if ref:
        for k, f in enumerate(features):
            f["ref_chosen_logps"], f["ref_rejected_logps"] = -1.5 * k, -2.0 - k
    theirs = DataCollatorForPreference(pad_token_id=0, max_length=max_length, truncation_mode=mode,
                                       pad_to_multiple_of=multiple)(features)
    ours = PreferenceCollator(pad_token_id=0, max_length=max_length, truncation_mode=mode, pad_to_multiple_of=multiple,
                              labels=True)([{k: np.asarray(v, dtype=np.int32) if isinstance(v, list) else v
                                             for k, v in f.items()} for f in features])
    assert set(ours) == set(theirs) | {"labels"}
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert torch.equal(ours["labels"], theirs["input_ids"].masked_fill(theirs["completion_mask"] == 0, -100))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(row_ids, completion_ids, st.booleans()), min_size=1, max_size=5),
       max_length=st.none() | st.integers(1, 12), multiple=st.none() | st.integers(1, 4))
def test_kto_collator_equals_trl(rows, max_length, multiple):
    features = [{"prompt_ids": p, "completion_ids": c, "label": label} for p, c, label in rows]
    # TRL's KTOTrainer rotates the completions within each batch of per_device_train_batch_size rows
    with_kl = [{**f, "KL_completion_ids": features[k - 1]["completion_ids"]} for k, f in enumerate(features)]
    theirs = DataCollatorForUnpairedPreference(pad_token_id=0, max_length=max_length,
                                               pad_to_multiple_of=multiple)(with_kl)
    ours = KtoCollator(pad_token_id=0, max_length=max_length, pad_to_multiple_of=multiple, kl=True)(features)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    plain = DataCollatorForUnpairedPreference(pad_token_id=0, max_length=max_length)(features)
    assert set(KtoCollator(pad_token_id=0, max_length=max_length)(features)) == set(plain)


# --------------------------------------------------------------------------------------------------------------
# losses on a tiny model: TRL's own preparation against our rows
# --------------------------------------------------------------------------------------------------------------
def conversational_pairs(count: int = 3) -> list[dict]:
    """TRL's explicit conversational format from the LLaMA-Factory DPO demo (real prompts and answers, cut short:
    the logits of the tokenizer's 151k-entry vocabulary dominate the cost of the tiny model)."""
    records = json.loads((DATA / "llamafactory_dpo_en_demo_12.json").read_text(encoding="utf-8"))
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    pairs = []
    for record in records[:count]:
        prompt = [{"role": roles[m["from"]], "content": m["value"][:120]} for m in record["conversations"]]
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": record["chosen"]["value"][:80]}],
                      "rejected": [{"role": "assistant", "content": record["rejected"]["value"][:80]}]})
    return pairs


def our_rows(tokenizer, records, task="preference"):
    options = PreferenceOptions() if task == "preference" else KtoOptions()
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions(),
                         task=task, task_options=options)
    built = builder.build_records([RawRecord(source="p.jsonl", index=k, value=r) for k, r in enumerate(records)])
    assert all(kind == "row" for kind, _ in built), built
    return [row for _, row in built]


def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def trainer_pair(trainer_class, config_class, tokenizer, raw_records, rows, collator, tmp_path, **config):
    """TRL's trainer on its own preparation of ``raw_records``, and the shards route: the same trainer class with
    ``_prepare_dataset`` returning our ``rows`` as they are and our collator."""
    from datasets import Dataset

    class OnOurRows(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    model = tiny_model(tokenizer)
    args = config_class(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(rows), report_to=[],
                        use_cpu=True, max_length=None, **config)
    theirs = trainer_class(model=model, ref_model=copy.deepcopy(model), args=args,
                           train_dataset=Dataset.from_list(raw_records), processing_class=tokenizer)
    columns = {key: [np.asarray(row[key]).tolist() if isinstance(row[key], np.ndarray) else row[key] for row in rows]
               for key in collator_columns(collator)}
    ours = OnOurRows(model=model, ref_model=copy.deepcopy(model), args=copy.deepcopy(args),
                     train_dataset=Dataset.from_dict(columns), processing_class=tokenizer, data_collator=collator)
    return theirs, ours


def collator_columns(collator):
    return ("prompt_ids", "completion_ids", "label") if isinstance(collator, KtoCollator) else \
        ("prompt_ids", "chosen_ids", "rejected_ids")


@pytest.mark.slow
def test_dpo_loss_on_our_rows_equals_trls_own_preparation(tmp_path):
    from trl import DPOConfig, DPOTrainer

    tokenizer = family_tokenizer(tf.BY_NAME["llama3"])
    pairs = conversational_pairs()
    rows = our_rows(tokenizer, pairs)
    theirs, ours = trainer_pair(DPOTrainer, DPOConfig, tokenizer, pairs, rows,
                                PreferenceCollator(pad_token_id=tokenizer.pad_token_id), tmp_path)
    prepared = theirs.train_dataset
    for k, row in enumerate(rows):  # Llama 3 writes nothing after <|eot_id|>: the same token rows
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert prepared[k][key] == list(row[key]), (k, key)
    their_batch = theirs.data_collator([prepared[k] for k in range(len(rows))])
    our_batch = ours.data_collator([ours.train_dataset[k] for k in range(len(rows))])
    for key in their_batch:
        assert torch.equal(their_batch[key], our_batch[key]), key
    with torch.no_grad():
        their_loss = theirs.compute_loss(theirs.model, their_batch)
        our_loss = ours.compute_loss(ours.model, our_batch)
    assert torch.isfinite(their_loss) and their_loss.item() == our_loss.item()
    # one optimisation step on our rows runs (the route trains)
    ours.args.max_steps = 1
    ours.train()


def test_chatml_rows_differ_from_trls_by_the_newline_after_the_end_of_turn_token(tmp_path):
    from trl import DPOConfig, DPOTrainer

    tokenizer = family_tokenizer(tf.BY_NAME["qwen2_5"])
    pairs = conversational_pairs(3)
    rows = our_rows(tokenizer, pairs)
    theirs, _ = trainer_pair(DPOTrainer, DPOConfig, tokenizer, pairs, rows,
                             PreferenceCollator(pad_token_id=tokenizer.pad_token_id), tmp_path)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for k, row in enumerate(rows):
        prepared = theirs.train_dataset[k]
        assert prepared["prompt_ids"] == list(row["prompt_ids"])
        for key in ("chosen_ids", "rejected_ids"):
            assert list(row[key])[-1] == end and prepared[key] == list(row[key]) + newline, (k, key)


@pytest.mark.slow
def test_kto_loss_on_our_rows_equals_trls_own_preparation(tmp_path):
    from trl import KTOConfig, KTOTrainer

    tokenizer = family_tokenizer(tf.BY_NAME["llama3"])
    pairs = conversational_pairs(2)
    examples = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
                for p in pairs for side in ("chosen", "rejected")]
    rows = our_rows(tokenizer, examples, task="kto")
    theirs, ours = trainer_pair(KTOTrainer, KTOConfig, tokenizer, examples, rows,
                                KtoCollator(pad_token_id=tokenizer.pad_token_id, kl=True), tmp_path)
    prepared = theirs.train_dataset
    for k, row in enumerate(rows):
        assert prepared[k]["prompt_ids"] == list(row["prompt_ids"])
        assert prepared[k]["completion_ids"] == list(row["completion_ids"]) and prepared[k]["label"] == row["label"]
    their_batch = theirs.data_collator([prepared[k] for k in range(len(rows))])
    our_batch = ours.data_collator([ours.train_dataset[k] for k in range(len(rows))])
    assert set(their_batch) == set(our_batch)
    for key in their_batch:
        assert torch.equal(their_batch[key], our_batch[key]), key
    with torch.no_grad():
        their_loss = theirs.compute_loss(theirs.model, their_batch)
        our_loss = ours.compute_loss(ours.model, our_batch)
    assert torch.isfinite(their_loss) and their_loss.item() == our_loss.item()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["preference", "kto"])
def test_the_documented_trl_route_trains_on_the_shards(tmp_path, task):
    """``examples/train_dpo_trl.py``: ``DPOTrainer`` / ``KTOTrainer`` on a job's shards, one optimisation step."""
    import importlib.util

    from test_local_engine import default_command

    records = [{"prompt": [{"role": "user", "content": f"Say {k}"}],
                "chosen": [{"role": "assistant", "content": f"{k}"}],
                "rejected": [{"role": "assistant", "content": f"not {k}"}]} for k in range(4)]
    if task == "kto":
        records = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
                   for r in records for side in ("chosen", "rejected")]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert default_command(["--task", task, "--input", str(data), "--output", str(out), "--workers", "1"]) == 0
    spec = importlib.util.spec_from_file_location("train_dpo_trl", Path(__file__).parents[1] / "examples" /
                                                  "train_dpo_trl.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main([str(out), "--steps", "1", "--output-dir", str(tmp_path / "run")])
    assert result["global_step"] == 1 and np.isfinite(result["training_loss"])
