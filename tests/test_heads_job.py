"""The job with --task classification / token-classification / qa on transformers' fixtures: shards equal to
the example scripts' preprocessing row by row, label maps in the manifest, rejections with reasons, audit
figures, ShardDataset + Collator.from_manifest equal to transformers' collators, both engines byte-identical."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import test_heads_classification as classification
import test_heads_qa as qa
import test_heads_token_classification as token_classification
import torch
from encoder_head_references import DATA, minilm_tokenizer
from task_testing import BEAM, bert_folder, manifest, rejections, run, shard_rows, tree_digest, write_jsonl

MRPC_CSV, MRPC_TSV, STSB = DATA / "mrpc_dev.csv", DATA / "mrpc_train.tsv", DATA / "stsb_train.tsv"
CONLL_JSON, GERMEVAL = DATA / "conll_sample.json", DATA / "germeval_train.conll"
SQUAD_FLAT, SQUAD_NESTED = DATA / "squad_v2_flat.json", DATA / "squad_v2_nested.json"


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def job(tmp_path, name, *args):
    out = tmp_path / name
    assert run([*map(str, args), "--output", str(out), "--tokenizer", bert_folder(), "--workers", "1"]) == 0
    return out


def reconciles(out):
    counts = manifest(out)["counts"]
    assert counts["read"] == counts["written"] + counts["rejected"]
    return counts


# -- classification -----------------------------------------------------------------------------------
def test_classification_job_equals_run_glue(tmp_path, tok):
    out = job(tmp_path, "mrpc", "--task", "classification", "--input", MRPC_CSV)
    with open(MRPC_CSV, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    label_to_id = classification.glue_label_to_id(r["label"] for r in records)
    reference = classification.columns_to_rows(classification.glue_preprocess(
        {key: [r[key] for r in records] for key in ("sentence1", "sentence2", "label")}, tokenizer=tok,
        sentence1_key="sentence1", sentence2_key="sentence2", label_to_id=label_to_id, max_seq_length=128))
    rows = shard_rows(out)
    assert [r["input_ids"] for r in rows] == [r["input_ids"] for r in reference]
    assert [r["token_type_ids"] for r in rows] == [r["token_type_ids"] for r in reference]
    assert [r["labels"] for r in rows] == [r["label"] for r in reference]
    section = manifest(out)["task"]
    assert section["label2id"] == label_to_id and section["problem_type"] == "single_label_classification"
    assert section["options"]["labels"] == sorted(label_to_id) and section["columns"][1] == "token_type_ids"
    audit = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert audit["class_balance"] == {"equivalent": 3, "not_equivalent": 3}
    reconciles(out)


def test_classification_tsv_field_map_and_regression(tmp_path, tok):
    out = job(tmp_path, "tsv", "--task", "classification", "--input", MRPC_TSV, "--max-length", "32",
              "--field-map", "text=#1 String,text_pair=#2 String,label=Quality")
    field_map = {"text": "#1 String", "text_pair": "#2 String", "label": "Quality"}
    _, expected = classification.job_rows(classification.read("mrpc_train.tsv", "\t"), tok, max_length=32,
                                          field_map=field_map)
    rows = shard_rows(out)
    assert [r["input_ids"] for r in rows] == [e["input_ids"].tolist() for e in expected]
    assert [r["labels"] for r in rows] == [e["labels"] for e in expected]
    assert manifest(out)["task"]["num_labels"] == 2 and "id2label" not in manifest(out)["task"]
    assert any(r["truncated"] for r in rows)
    out = job(tmp_path, "stsb", "--task", "classification", "--input", STSB, "--field-map", "label=score")
    rows = shard_rows(out)
    assert manifest(out)["task"]["problem_type"] == "regression"
    with open(STSB, newline="", encoding="utf-8") as handle:
        scores = [float(r[-1]) for r in list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    assert [r["labels"] for r in rows] == pytest.approx(scores) and all(np.float32(s) == np.float32(r["labels"])
                                                                        for s, r in zip(scores, rows))


def test_classification_rejections_and_unmapped_labels(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "a good one", "label": "pos"}, {"text": "a bad one", "label": "neg"},
        {"text": "meh", "label": "neutral"}, {"text": "no label"}, {"label": "pos"},
        {"text": "x " * 40, "text_pair": "y", "label": "pos"}])
    out = job(tmp_path, "out", "--task", "classification", "--input", path, "--labels", "neg,pos",
              "--max-length", "16", "--pair-truncation", "only_second")
    reasons = {r["index"]: r["reason"] for r in rejections(out)}
    assert reasons == {2: "unmapped_label", 3: "invalid_label", 4: "invalid_content", 5: "too_long"}
    assert [r["labels"] for r in shard_rows(out)] == [1, 0]
    audit = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert audit["unmapped_labels"] == {"neutral": 1} and audit["class_balance"] == {"neg": 1, "pos": 1}
    reconciles(out)


def test_multi_label_and_integer_labels(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a", "label": ["sports", "news"]},
                                               {"text": "b", "label": ["news"]}])
    out = job(tmp_path, "multi", "--task", "classification", "--input", path)
    assert [r["labels"] for r in shard_rows(out)] == [[1.0, 1.0], [1.0, 0.0]]
    assert manifest(out)["task"]["id2label"] == {"0": "news", "1": "sports"}
    path = write_jsonl(tmp_path / "ids.jsonl", [{"text": "a", "label": 3}, {"text": "b", "label": 0}])
    out = job(tmp_path, "ids", "--task", "classification", "--input", path, "--num-labels", "5")
    assert [r["labels"] for r in shard_rows(out)] == [3, 0] and manifest(out)["task"]["num_labels"] == 5


# -- token classification -----------------------------------------------------------------------------
@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_token_classification_job_equals_run_ner(tmp_path, tok, label_all_tokens):
    flags = ["--label-all-tokens"] if label_all_tokens else []
    out = job(tmp_path, "ner", "--task", "token-classification", "--input", CONLL_JSON, "--max-length", "20", *flags)
    records = token_classification.conll_json()
    label_list, reference = token_classification.reference_rows(
        [r["words"] for r in records], [r["ner"] for r in records], tok, max_length=20,
        label_all_tokens=label_all_tokens)
    rows = shard_rows(out)
    assert [r["input_ids"] for r in rows] == [r["input_ids"] for r in reference]
    assert [r["labels"] for r in rows] == [r["labels"] for r in reference]
    section = manifest(out)["task"]
    assert section["options"]["labels"] == label_list and section["options"]["label_all_tokens"] is label_all_tokens
    audit = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert audit["words_lost_to_truncation"] == sum(r["words_truncated"] for r in rows) > 0
    reconciles(out)


def test_conll_files_and_rejections(tmp_path):
    out = job(tmp_path, "germeval", "--task", "token-classification", "--input", GERMEVAL)
    assert len(shard_rows(out)) == 11 and "B-LOCderiv" in manifest(out)["task"]["label2id"]
    text = tmp_path / "tags.txt"
    text.write_text("EU B-ORG\nrejects O\n\nlonely\n\nzero \u200b O\nwidth O\n", encoding="utf-8")
    out = job(tmp_path, "conll", "--task", "token-classification", "--input", text, "--format", "conll",
              "--labels", "O,B-ORG")
    assert [r["reason"] for r in rejections(out)] == ["invalid_content"]  # the line without a tag
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"tokens": ["a", "b"], "tags": ["O"]}, {"tokens": ["a", "\u200b"], "tags": ["O", "O"]},
        {"tokens": ["a"], "tags": ["B-MISC"]}, {"tokens": ["fine"], "tags": ["O"]}])
    out = job(tmp_path, "bad", "--task", "token-classification", "--input", path, "--labels", "O,B-ORG")
    reasons = {r["index"]: r["reason"] for r in rejections(out)}
    assert reasons == {0: "length_mismatch", 1: "word_not_tokenized", 2: "unmapped_label"}
    assert json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]["unmapped_tags"] == {"B-MISC": 1}
    reconciles(out)


# -- QA -------------------------------------------------------------------------------------------------
def test_qa_job_equals_run_qa(tmp_path, tok):
    out = job(tmp_path, "squad", "--task", "qa", "--input", SQUAD_NESTED, "--max-length", "64", "--doc-stride", "16")
    reference = qa.reference_features(qa.squad("squad_v2_nested.json"), tok, max_length=64, doc_stride=16)
    rows = shard_rows(out)
    assert len(rows) == len(reference) > 14
    for row, ref in zip(rows, reference):
        assert row["input_ids"] == ref["input_ids"] and row["token_type_ids"] == ref["token_type_ids"]
        assert (row["start_positions"], row["end_positions"]) == (ref["start_positions"], ref["end_positions"])
        assert row["offset_mapping"] == [list(o) if o is not None else None for o in ref["offset_mapping"]]
        assert row["example_id"] == ref["example_id"]
    counts = reconciles(out)
    assert counts["read"] == 14 and counts["rows"] == len(rows)
    audit = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert audit["examples"] == 14 and audit["features"] == len(rows)


def test_qa_rejections(tmp_path):
    context = "The Normans gave their name to Normandy, a region in France."
    at = context.index("France")
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "a", "question": "Where?", "context": context, "answers": {"text": ["France"], "answer_start": [at]}},
        {"id": "b", "question": "Where?", "context": context, "answers": {"text": ["France"], "answer_start": [3]}},
        {"id": "c", "question": "why " * 40, "context": context, "answers": {"text": [], "answer_start": []}},
        {"id": "d", "question": "Where?", "context": context}])
    out = job(tmp_path, "out", "--task", "qa", "--input", path, "--max-length", "32", "--doc-stride", "4")
    reasons = {r["index"]: r["reason"] for r in rejections(out)}
    assert reasons == {1: "answer_not_in_context", 2: "question_too_long", 3: "invalid_label"}
    row = shard_rows(out)[0]
    start, end = row["offset_mapping"][row["start_positions"]][0], row["offset_mapping"][row["end_positions"]][1]
    assert context[start:end] == "France"


# -- runtime: ShardDataset + Collator.from_manifest -------------------------------------------------------
def test_collators_from_manifest_equal_transformers_collators(tmp_path, tok):
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, default_data_collator

    from transforms.runtime import (
        Collator,
        QuestionAnsweringCollator,
        SequenceClassificationCollator,
        ShardDataset,
        TokenClassificationCollator,
    )

    cases = [
        (["--task", "classification", "--input", MRPC_CSV], SequenceClassificationCollator,
         lambda rows: DataCollatorWithPadding(tok)([{"input_ids": r["input_ids"], "token_type_ids": r["token_type_ids"],
                                                     "label": r["labels"]} for r in rows]), {}),
        (["--task", "token-classification", "--input", CONLL_JSON], TokenClassificationCollator,
         lambda rows: DataCollatorForTokenClassification(tok)(
             [{k: r[k] for k in ("input_ids", "token_type_ids", "labels")} for r in rows]), {}),
        (["--task", "qa", "--input", SQUAD_FLAT, "--max-length", "64", "--doc-stride", "16"], QuestionAnsweringCollator,
         lambda rows: default_data_collator([padded_qa_feature(r, 64) for r in rows]), {"max_length": 64}),
    ]
    for k, (args, kind, expected_of, options) in enumerate(cases):
        out = job(tmp_path, f"case{k}", *args)
        dataset = ShardDataset(str(out))
        collator = Collator.from_manifest(str(out), **options)
        assert isinstance(collator, kind)
        indices = list(range(min(len(dataset), 8)))
        batch = collator([dataset[i] for i in indices])
        rows = pa_rows(out, indices)
        expected = expected_of(rows)
        assert set(batch) == set(expected), args[1]
        for key in expected:
            assert batch[key].dtype == expected[key].dtype and torch.equal(batch[key], expected[key]), (args[1], key)


def padded_qa_feature(row, width):
    """A job row as run_qa.py's padded training feature (what default_data_collator stacks)."""
    pad = width - len(row["input_ids"])
    return {"input_ids": row["input_ids"] + [0] * pad, "token_type_ids": row["token_type_ids"] + [0] * pad,
            "attention_mask": [1] * len(row["input_ids"]) + [0] * pad,
            "start_positions": row["start_positions"], "end_positions": row["end_positions"]}


def pa_rows(out, indices):
    """Rows in ShardDataset order (shard order, then row order), as Python values."""
    import pyarrow as pa

    rows = []
    for entry in manifest(out)["shards"]:
        with pa.memory_map(str(out / entry["path"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return [rows[i] for i in indices]


# -- configuration errors and engines --------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--task", "classification", "--doc-stride", "3"], "--doc-stride applies to --task qa"),
    (["--task", "qa", "--truncation", "left"], "--truncation does not apply"),
    (["--task", "classification", "--labels", "a,a"], "distinct"),
    (["--task", "token-classification", "--pair-truncation", "only_first"], "--pair-truncation applies"),
    (["--task", "qa", "--max-length", "20", "--doc-stride", "20"], "plus --doc-stride 20"),
])
def test_configuration_errors(tmp_path, capsys, args, message):
    code = run([*args, "--input", str(MRPC_CSV), "--output", str(tmp_path / "out"), "--tokenizer", bert_folder(),
                "--workers", "1"])
    assert code == 2 and message in capsys.readouterr().err


def test_no_label_in_the_data_is_a_configuration_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}])
    code = run(["--task", "classification", "--input", path, "--output", str(tmp_path / "out"),
                "--tokenizer", bert_folder(), "--workers", "1"])
    assert code == 2 and "no record has a label" in capsys.readouterr().err


ENGINE_CASES = {
    # mrpc_train.tsv has no text column under these names: its rows are rejected (rejected/ files on both engines)
    "classification": ["--task", "classification", "--input", MRPC_CSV, "--input", MRPC_TSV, "--max-length", "40",
                       "--dedup", "--num-shards", "2"],
    "token-classification": ["--task", "token-classification", "--input", CONLL_JSON, "--input", GERMEVAL,
                             "--label-all-tokens", "--max-length", "24", "--num-shards", "2"],
    "qa": ["--task", "qa", "--input", SQUAD_NESTED, "--input", SQUAD_FLAT, "--max-length", "64", "--doc-stride", "16",
           "--dedup", "--num-shards", "3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_both_engines_write_the_same_bytes(tmp_path, case):
    args = [*map(str, ENGINE_CASES[case]), "--tokenizer", bert_folder()]
    assert run([*args, "--output", str(tmp_path / "beam"), *BEAM]) == 0
    reference = tree_digest(tmp_path / "beam")
    assert any(k.startswith("data/") for k in reference)
    for workers in (1, 2):
        out = tmp_path / f"local-{workers}"
        assert run([*args, "--output", str(out), "--workers", str(workers)]) == 0
        assert tree_digest(out) == reference, workers
