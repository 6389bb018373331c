"""``--task text`` (causal LM on raw text): parity with ``run_clm.py``'s preprocessing written out below, the
``.txt`` reader, grouping edge cases (nothing lost at block edges), the runtime, and one training step with a
tiny random Llama through ``Trainer``."""
from __future__ import annotations

from itertools import chain

import numpy as np
import pytest
from task_testing import C4, WIKI_TXT, manifest, records, rejections, run, shard_rows, write_jsonl

from transforms import errors


@pytest.fixture(scope="module")
def qwen():
    from transforms.tokenizer_loading import bundled_tokenizer

    return bundled_tokenizer()


# -- run_clm.py's preprocessing, written out (examples/pytorch/language-modeling/run_clm.py) ------------------

def clm_tokenize_function(tokenizer, examples, *, eos: bool):
    """``tokenize_function``: ``tokenizer(examples["text"])``; with ``eos`` our documented addition: the EOS
    token appended to every document."""
    output = tokenizer(examples["text"])
    if eos:
        output["input_ids"] = [ids + [tokenizer.eos_token_id] for ids in output["input_ids"]]
        output["attention_mask"] = [m + [1] for m in output["attention_mask"]]
    return output


def clm_group_texts(examples, block_size):
    """``group_texts``: concatenate, drop the small remainder when at least one block is full, cut blocks."""
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated[list(examples.keys())[0]])
    if total_length >= block_size:
        total_length = (total_length // block_size) * block_size
    result = {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
              for k, t in concatenated.items()}
    result["labels"] = result["input_ids"].copy()
    return result


def run_clm_blocks(tokenizer, texts, *, block_size, batch_size, eos):
    """What ``run_clm.py`` feeds the model: ``datasets.map`` of both functions, ``batched=True``."""
    import datasets

    raw = datasets.Dataset.from_dict({"text": texts})
    tokenized = raw.map(lambda ex: clm_tokenize_function(tokenizer, ex, eos=eos), batched=True,
                        batch_size=batch_size, remove_columns=["text"])
    grouped = tokenized.map(lambda ex: clm_group_texts(ex, block_size), batched=True, batch_size=batch_size)
    return grouped


@pytest.mark.parametrize("eos", [False, True], ids=["run_clm", "eos-appended"])
def test_grouped_blocks_equal_run_clm_block_by_block(tmp_path, qwen, eos):
    texts = [r["text"] for r in records(C4)]
    block, batch = 128, 5
    out = tmp_path / "out"
    args = ["--task", "text", "--input", str(C4), "--output", str(out), "--group-texts", str(block),
            "--group-remainder", "drop", "--batch-size", str(batch), "--workers", "1"]
    assert run(args + ([] if eos else ["--no-eos"])) == 0
    reference = run_clm_blocks(qwen, texts, block_size=block, batch_size=batch, eos=eos)
    rows = shard_rows(out)
    assert [r["input_ids"] for r in rows] == reference["input_ids"]
    assert len(rows) > 20 and all(r["length"] == r["num_loss_tokens"] == block for r in rows)
    # run_clm drops each batch's remainder; here every dropped token is counted on the batch's last block
    m = manifest(out)
    dropped = sum(r["truncated_tokens"] for r in rows)
    total = sum(len(ids) + int(eos) for ids in qwen(texts)["input_ids"])
    assert total == block * len(rows) + dropped and dropped > 0
    assert m["counts"]["read"] == m["counts"]["written"] + m["counts"]["rejected"] == len(texts)
    assert m["audit"]["task"]["truncated_tokens"] == dropped


def test_the_remainder_is_kept_by_default_and_every_document_is_counted(tmp_path, qwen):
    texts = [r["text"] for r in records(C4)]
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", str(C4), "--output", str(out), "--group-texts", "256",
                "--batch-size", "4", "--workers", "1"]) == 0
    rows = shard_rows(out)
    expected = [ids + [qwen.eos_token_id] for ids in qwen(texts)["input_ids"]]
    # batch by batch, the blocks concatenate back to exactly the documents (nothing lost at block edges)
    for start in range(0, len(texts), 4):
        first_index = start
        batch_rows = [r for r in rows if first_index <= r["index"] < start + 4]
        assert list(chain(*[r["input_ids"] for r in batch_rows])) == list(chain(*expected[start:start + 4]))
        assert all(r["length"] == 256 for r in batch_rows[:-1]) and batch_rows[-1]["length"] <= 256
    assert sum(r["documents"] for r in rows) == len(texts)
    m = manifest(out)
    assert m["counts"] == {"read": 16, "written": 16, "rejected": 0, "rows": len(rows)}
    assert sum(entry["records"] for entry in m["shards"]) == 16


def test_drop_rejects_documents_wholly_in_the_dropped_remainder(tmp_path, qwen):
    # batch of 4: 10 + 10 + 10 tokens, then a short document that starts after the last full block of 16
    word = "alpha beta gamma delta epsilon zeta eta theta iota"
    docs = [{"text": word}, {"text": word}, {"text": word}, {"text": "kappa"}]
    lengths = [len(qwen(d["text"])["input_ids"]) + 1 for d in docs]
    path = write_jsonl(tmp_path / "in.jsonl", docs)
    block = 16
    total = sum(lengths)
    kept = total // block * block
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", path, "--output", str(out), "--group-texts", str(block),
                "--group-remainder", "drop", "--workers", "1"]) == 0
    starts = np.cumsum([0] + lengths[:-1])
    lost = [i for i, s in enumerate(starts) if s >= kept]
    assert lost, "the sample must put a document in the dropped remainder"
    rejected = rejections(out)
    assert sorted(r["index"] for r in rejected) == lost
    assert {r["reason"] for r in rejected} == {errors.GROUP_REMAINDER}
    m = manifest(out)
    assert m["counts"]["read"] == 4 == m["counts"]["written"] + m["counts"]["rejected"]
    rows = shard_rows(out)
    assert rows[-1]["truncated"] and rows[-1]["truncated_tokens"] == total - kept


def test_one_row_per_document_with_max_length_and_truncation(tmp_path, qwen):
    texts = [r["text"] for r in records(C4)][:6]
    for mode in ("right", "left", "drop"):
        out = tmp_path / mode
        # every document is over 64 tokens: drop rejects them all, and a job that writes no row exits 3
        assert run(["--task", "text", "--input", str(C4), "--output", str(out), "--max-length", "64",
                    "--truncation", mode, "--workers", "1"]) == (3 if mode == "drop" else 0)
        rows = shard_rows(out)
        full = [ids + [qwen.eos_token_id] for ids in qwen(texts)["input_ids"]]
        if mode == "drop":
            assert {r["reason"] for r in rejections(out)} == {errors.TOO_LONG}
            assert all(len(r["input_ids"]) <= 64 for r in rows)
            continue
        for row in rows[:6]:
            ids = full[row["index"]]
            assert row["input_ids"] == (ids[:64] if mode == "right" else ids[-64:])
            assert row["truncated_tokens"] == max(0, len(ids) - 64) and row["truncated"] == (len(ids) > 64)


def test_txt_files_one_document_per_non_blank_line_as_datasets_text_loader_filtered(tmp_path, qwen):
    import datasets

    out = tmp_path / "out"
    assert run(["--task", "text", "--input", str(WIKI_TXT), "--output", str(out), "--workers", "1"]) == 0
    lines = datasets.load_dataset("text", data_files=str(WIKI_TXT), split="train", keep_linebreaks=False)["text"]
    documents = [line for line in lines if line and not line.isspace()]  # run_mlm --line_by_line's filter
    rows = shard_rows(out)
    assert len(rows) == len(documents) == 3
    assert [r["input_ids"] for r in rows] == [ids + [qwen.eos_token_id] for ids in qwen(documents)["input_ids"]]
    # one document per file
    whole = tmp_path / "whole"
    assert run(["--task", "text", "--input", str(WIKI_TXT), "--output", str(whole), "--text-file-unit", "file",
                "--workers", "1"]) == 0
    (row,) = shard_rows(whole)
    assert row["input_ids"] == qwen(WIKI_TXT.read_text(encoding="utf-8"))["input_ids"] + [qwen.eos_token_id]


def test_bad_text_records_are_rejected_with_reasons(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "   "}\n{"body": "x"}\n{"text": 3}\n[1]\n{"body": "mapped"}\n',
                    encoding="utf-8")
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"good line\n\xff\xfe not utf-8\n\n")
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", str(path), "--input", str(txt), "--output", str(out),
                "--workers", "1"]) == 0
    reasons = sorted((r["source"].rsplit("/", 1)[-1], r["index"], r["reason"]) for r in rejections(out))
    assert reasons == [("bad.txt", 1, errors.INVALID_CONTENT), ("in.jsonl", 1, errors.EMPTY_TEXT),
                       ("in.jsonl", 2, errors.UNKNOWN_FORMAT), ("in.jsonl", 3, errors.INVALID_CONTENT),
                       ("in.jsonl", 4, errors.UNKNOWN_FORMAT), ("in.jsonl", 5, errors.UNKNOWN_FORMAT)]
    assert manifest(out)["counts"] == {"read": 8, "written": 2, "rejected": 6, "rows": 2}
    mapped = tmp_path / "mapped"
    assert run(["--task", "text", "--input", str(path), "--output", str(mapped), "--field-map", "text=body",
                "--workers", "1"]) == 0
    assert {r["index"] for r in shard_rows(mapped)} == {2, 5}


def test_dedup_keeps_one_of_texts_equal_up_to_whitespace(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a  b c"}, {"text": "a b c\n"}, {"text": "d"}])
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", path, "--output", str(out), "--dedup", "--workers", "1"]) == 0
    kept = [r["index"] for r in shard_rows(out)]
    (rejected,) = rejections(out)
    assert rejected["reason"] == errors.DUPLICATE and sorted(kept + [rejected["index"]]) == [0, 1, 2]
    assert 2 in kept


@pytest.mark.slow
def test_the_runtime_serves_text_rows_and_a_tiny_llama_trains_on_them(tmp_path, qwen):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, default_data_collator

    from transforms.runtime import Collator, ShardDataset

    block = 32
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", str(C4), "--output", str(out), "--group-texts", str(block),
                "--group-remainder", "drop", "--batch-size", "4", "--workers", "1"]) == 0
    dataset = ShardDataset(str(out))
    assert dataset.columns == ("input_ids",)
    collator = Collator.from_manifest(str(out))
    assert type(collator) is Collator and collator.config.pad_token_id == qwen.pad_token_id
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(qwen), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=qwen.pad_token_id)).eval()
    ours = collator([dataset[i] for i in range(8)])
    texts = [r["text"] for r in records(C4)]
    reference = run_clm_blocks(qwen, texts, block_size=block, batch_size=4, eos=True)
    by_ids = {tuple(reference[i]["input_ids"]): reference[i] for i in range(len(reference))}
    same = [by_ids[tuple(dataset[i]["input_ids"].tolist())] for i in range(8)]  # run_clm's rows, our order
    theirs = default_data_collator([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in same])
    with torch.no_grad():
        loss_ours = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"],
                          labels=ours["labels"]).loss
        loss_theirs = model(**theirs).loss
    assert torch.isfinite(loss_ours) and torch.allclose(loss_ours, loss_theirs)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = Trainer(model=model.train(), args=args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    assert np.isfinite(result.training_loss)


def test_parquet_records_read_like_jsonl(tmp_path, qwen):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [r["text"] for r in records(C4)][:5]
    pq.write_table(pa.table({"text": texts, "url": [f"u{i}" for i in range(5)]}), tmp_path / "c4.parquet")
    out = tmp_path / "out"
    assert run(["--task", "text", "--input", str(tmp_path / "c4.parquet"), "--output", str(out), "--workers", "1"]) == 0
    assert [r["input_ids"] for r in shard_rows(out)] == [ids + [qwen.eos_token_id] for ids in qwen(texts)["input_ids"]]
