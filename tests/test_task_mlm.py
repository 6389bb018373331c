"""``--task mlm`` (masked LM): rows equal ``run_mlm.py``'s preprocessing written out below (line by line and
grouped) with a real BERT WordPiece tokenizer; run-time masking against ``DataCollatorForLanguageModeling``
(rate, 80/10/10, special tokens never masked, whole words), deterministic per (seed, epoch, row); one training
step of a tiny BERT through ``Trainer`` with the loss of transformers' pipeline."""
from __future__ import annotations

from itertools import chain

import numpy as np
import pytest
from task_testing import C4, WIKI_TXT, bert_folder, manifest, records, rejections, run, shard_rows, write_jsonl

from transforms import errors


@pytest.fixture(scope="module")
def bert():
    from transformers import AutoTokenizer

    folder = bert_folder()
    return folder, AutoTokenizer.from_pretrained(folder)


# -- run_mlm.py's preprocessing, written out (examples/pytorch/language-modeling/run_mlm.py) ------------------

def mlm_line_by_line(tokenizer, examples, *, max_seq_length):
    examples["text"] = [line for line in examples["text"] if len(line) > 0 and not line.isspace()]
    return tokenizer(examples["text"], padding=False, truncation=True, max_length=max_seq_length,
                     return_special_tokens_mask=True)


def mlm_tokenize_function(tokenizer, examples):
    return tokenizer(examples["text"], return_special_tokens_mask=True)


def mlm_group_texts(examples, max_seq_length):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated[list(examples.keys())[0]])
    if total_length >= max_seq_length:
        total_length = (total_length // max_seq_length) * max_seq_length
    return {k: [t[i: i + max_seq_length] for i in range(0, total_length, max_seq_length)]
            for k, t in concatenated.items()}


def run_mlm_features(tokenizer, texts, *, line_by_line, max_seq_length, batch_size=1000):
    import datasets

    raw = datasets.Dataset.from_dict({"text": texts})
    if line_by_line:
        mapped = raw.map(lambda ex: mlm_line_by_line(tokenizer, ex, max_seq_length=max_seq_length), batched=True,
                         batch_size=batch_size, remove_columns=["text"])
    else:
        tokenized = raw.map(lambda ex: mlm_tokenize_function(tokenizer, ex), batched=True, batch_size=batch_size,
                            remove_columns=["text"])
        mapped = tokenized.map(lambda ex: mlm_group_texts(ex, max_seq_length), batched=True, batch_size=batch_size)
    return [mapped[i] for i in range(len(mapped))]


def test_line_by_line_rows_equal_run_mlm(tmp_path, bert):
    folder, tokenizer = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(C4), "--output", str(out), "--tokenizer", folder,
                "--max-length", "128", "--workers", "1"]) == 0
    rows = shard_rows(out)
    reference = run_mlm_features(tokenizer, [r["text"] for r in records(C4)], line_by_line=True, max_seq_length=128)
    assert [r["input_ids"] for r in rows] == [f["input_ids"] for f in reference]
    assert [r["special_tokens_mask"] for r in rows] == [f["special_tokens_mask"] for f in reference]
    assert all(r["num_loss_tokens"] == r["length"] - 2 for r in rows)  # [CLS] ... [SEP]
    m = manifest(out)
    assert m["task"]["columns"] == ["input_ids", "special_tokens_mask", "sample_index", "epoch"]
    assert m["task"]["mask_token_id"] == tokenizer.mask_token_id


def test_grouped_blocks_equal_run_mlm(tmp_path, bert):
    folder, tokenizer = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(C4), "--output", str(out), "--tokenizer", folder,
                "--group-texts", "64", "--group-remainder", "drop", "--batch-size", "6", "--workers", "1"]) == 0
    rows = shard_rows(out)
    reference = run_mlm_features(tokenizer, [r["text"] for r in records(C4)], line_by_line=False,
                                 max_seq_length=64, batch_size=6)
    assert [(r["input_ids"], r["special_tokens_mask"]) for r in rows] == \
        [(f["input_ids"], f["special_tokens_mask"]) for f in reference]
    assert manifest(out)["counts"]["read"] == 16 == manifest(out)["counts"]["written"] + len(rejections(out))


def test_whole_word_starts_match_transformers_word_ids(tmp_path, bert):
    from transformers import DataCollatorForLanguageModeling

    folder, tokenizer = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(WIKI_TXT), "--output", str(out), "--tokenizer", folder,
                "--max-length", "200", "--whole-word-mask", "--workers", "1"]) == 0
    rows = shard_rows(out)
    lines = [line for line in WIKI_TXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    encoded = tokenizer(lines, max_length=200, truncation=True, return_special_tokens_mask=True,
                        return_offsets_mapping=True)
    for row, offsets, special in zip(rows, encoded["offset_mapping"], encoded["special_tokens_mask"]):
        word_ids, _ = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(
            np.asarray([offsets]), np.asarray([special]))
        starts = np.asarray(row["word_starts"], dtype=bool)
        ours = np.where(np.asarray(special) == 1, -1, np.cumsum(starts))
        assert ours.tolist() == word_ids[0].tolist()


def collate_many(collator, rows, epochs=(0,)):
    batches = []
    for epoch in epochs:
        for start in range(0, len(rows), 8):
            batches.append(collator([{**row, "epoch": epoch} for row in rows[start:start + 8]]))
    return batches


def masking_statistics(batches, inputs, mask_id):
    selected = masked_to_mask = changed = kept = specials_hit = maskable = 0
    for batch, (ids, special) in zip(batches, inputs):
        labels = batch["labels"].numpy()
        out = batch["input_ids"].numpy()
        chosen = labels != -100
        selected += int(chosen.sum())
        maskable += int(((special == 0) & (ids >= 0)).sum())
        specials_hit += int((chosen & (special == 1)).sum())
        masked_to_mask += int((chosen & (out == mask_id)).sum())
        kept += int((chosen & (out == ids)).sum())
        changed += int((chosen & (out != ids) & (out != mask_id)).sum())
    return {"rate": selected / maskable, "mask": masked_to_mask / selected, "random": changed / selected,
            "kept": kept / selected, "specials": specials_hit}


def padded(rows, width):
    ids = np.full((len(rows), width), -1)
    special = np.ones((len(rows), width), dtype=int)
    for i, row in enumerate(rows):
        ids[i, :len(row["input_ids"])] = row["input_ids"]
        special[i, :len(row["input_ids"])] = row["special_tokens_mask"]
    return ids, special


def test_masking_statistics_match_data_collator_for_language_modeling(tmp_path, bert):
    import torch
    from transformers import DataCollatorForLanguageModeling

    from transforms.runtime import Collator, MaskingCollator, ShardDataset

    folder, tokenizer = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(C4), "--input", str(WIKI_TXT), "--output", str(out),
                "--tokenizer", folder, "--group-texts", "64", "--workers", "1"]) == 0
    dataset = ShardDataset(str(out))
    collator = Collator.from_manifest(str(out), seed=7)
    assert isinstance(collator, MaskingCollator) and collator.mask_token_id == tokenizer.mask_token_id
    rows = [dataset[i] for i in range(len(dataset))]
    epochs = range(12)
    ours = collate_many(collator, rows, epochs)
    inputs = [padded(rows[s:s + 8], b["input_ids"].shape[1]) for _ in epochs for s, b in
              zip(range(0, len(rows), 8), ours)]
    theirs_collator = DataCollatorForLanguageModeling(tokenizer, seed=7)
    plain = [{"input_ids": r["input_ids"].tolist(), "special_tokens_mask": r["special_tokens_mask"].tolist()}
             for r in rows]
    theirs = [theirs_collator(plain[s:s + 8]) for _ in epochs for s in range(0, len(rows), 8)]
    a = masking_statistics(ours, inputs, tokenizer.mask_token_id)
    b = masking_statistics(theirs, inputs, tokenizer.mask_token_id)
    tokens = sum(int((i[1] == 0).sum()) for i in inputs)
    assert tokens > 50_000 and a["specials"] == b["specials"] == 0
    # binomial standard deviations: sqrt(p(1-p)/n) is < 0.002 for the rate and < 0.004 for the split here
    assert abs(a["rate"] - 0.15) < 0.006 and abs(b["rate"] - 0.15) < 0.006
    for key, expected in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
        assert abs(a[key] - expected) < 0.012 and abs(a[key] - b[key]) < 0.02, (key, a, b)
    first = ours[0]
    assert torch.equal(first["attention_mask"], torch.from_numpy((inputs[0][0] >= 0).astype(np.int64)))
    assert (first["labels"][first["attention_mask"] == 0] == -100).all()


def test_masks_depend_on_seed_epoch_and_row_only(tmp_path, bert):
    import torch

    from transforms.runtime import Collator, ShardDataset

    folder, _ = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(C4), "--output", str(out), "--tokenizer", folder,
                "--group-texts", "64", "--whole-word-mask", "--workers", "1"]) == 0
    dataset = ShardDataset(str(out))
    rows = [dataset[i] for i in range(len(dataset))]
    first = Collator.from_manifest(str(out), seed=3)
    assert first.whole_word_mask  # the shards hold word starts
    again = Collator.from_manifest(str(out), seed=3)
    a = first(rows[:6])
    assert all(torch.equal(a[k], again(rows[:6])[k]) for k in a)  # two runs, same seed: identical
    # a row masks the same in any batch (resume, another worker, another batch size)
    alone = [again([row]) for row in rows[:6]]
    for i, single in enumerate(alone):
        n = int(single["attention_mask"].sum())
        assert torch.equal(single["labels"][0, :n], a["labels"][i, :n])
        assert torch.equal(single["input_ids"][0, :n], a["input_ids"][i, :n])
    other_seed = Collator.from_manifest(str(out), seed=4)(rows[:6])
    dataset.set_epoch(1)
    next_epoch = first([dataset[i] for i in range(6)])
    assert not torch.equal(a["labels"], other_seed["labels"]) and not torch.equal(a["labels"], next_epoch["labels"])
    # whole words: a masked token's word is masked entirely, always with [MASK]
    labels, ids = a["labels"].numpy(), a["input_ids"].numpy()
    for i, row in enumerate(rows[:6]):
        word = np.cumsum(row["word_starts"]) - 1
        special = row["special_tokens_mask"] == 1
        chosen = labels[i, :len(word)] != -100
        for w in set(word[chosen].tolist()):
            inside = (word == w) & ~special
            assert chosen[inside].all() and (ids[i, :len(word)][inside] == first.mask_token_id).all()


def test_bad_records_and_configuration(tmp_path, bert):
    from pipeline.launch.cli import ConfigError, parse_args

    folder, _ = bert
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine words"}, {"text": " "}, {"body": 1}])
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", path, "--output", str(out), "--tokenizer", folder, "--workers", "1"]) == 0
    assert sorted((r["index"], r["reason"]) for r in rejections(out)) == [(1, errors.EMPTY_TEXT),
                                                                            (2, errors.UNKNOWN_FORMAT)]
    with pytest.raises(ConfigError, match="--no-eos applies to --task text"):
        parse_args(["--input", "x", "--output", "o", "--task", "mlm", "--no-eos"])
    qwen_out = tmp_path / "qwen"  # the bundled tokenizer has no mask token
    assert run(["--task", "mlm", "--input", path, "--output", str(qwen_out), "--workers", "1"]) == 2


@pytest.mark.slow
def test_a_tiny_bert_trains_on_the_shards_with_the_loss_of_transformers_pipeline(tmp_path, bert):
    import torch
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from transforms.runtime import Collator, MaskingCollator, ShardDataset, epoch_callback

    folder, tokenizer = bert
    out = tmp_path / "out"
    assert run(["--task", "mlm", "--input", str(C4), "--output", str(out), "--tokenizer", folder,
                "--max-length", "96", "--workers", "1"]) == 0
    dataset = ShardDataset(str(out))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64)).eval()
    rows = [dataset[i] for i in range(6)]
    reference = run_mlm_features(tokenizer, [r["text"] for r in records(C4)], line_by_line=True, max_seq_length=96)
    by_ids = {tuple(f["input_ids"]): f for f in reference}
    features = [{k: by_ids[tuple(r["input_ids"].tolist())][k] for k in ("input_ids", "attention_mask",
                                                                         "special_tokens_mask")}
                for r in rows]  # transformers' rows for ours, in our order
    # with every maskable token masked to [MASK] both collators are deterministic: the same batch, the same loss
    everything = {"mlm_probability": 1.0, "mask_replace_prob": 1.0, "random_replace_prob": 0.0}
    ours = Collator.from_manifest(str(out), **everything)(rows)
    theirs = DataCollatorForLanguageModeling(tokenizer, **everything)(features)
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    with torch.no_grad():
        loss_ours = model(**ours).loss
        loss_theirs = model(**{k: theirs[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    assert torch.isfinite(loss_ours) and torch.allclose(loss_ours, loss_theirs)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), num_train_epochs=2, per_device_train_batch_size=8,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
                             remove_unused_columns=False)  # the collator needs special_tokens_mask, sample_index
    seen = []

    class Recording(MaskingCollator):
        def __call__(self, features):
            seen.append({int(f["epoch"]) for f in features})
            return super().__call__(features)

    collator = Recording(**vars(Collator.from_manifest(str(out))))
    trainer = Trainer(model=model.train(), args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[epoch_callback(dataset)])
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert seen == [{0}, {0}, {1}, {1}]  # rows report the epoch: masks change from epoch to epoch
