"""Sequence classification rows: parity with run_glue.py's preprocessing (written out in
encoder_head_references.py) on GLUE MRPC / STS-B fixtures, pair truncation, label spaces, and the
collator against DataCollatorWithPadding."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from encoder_head_references import DATA, glue_label_to_id, glue_preprocess, glue_sentence_keys, minilm_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.rows  # noqa: F401  (imports the task registry in its usual order)
from transforms.errors import RecordRejected
from transforms.reading.delimited import iter_delimited_records
from transforms.runtime.encoder_collate import SequenceClassificationCollator
from transforms.tasks.classification import (
    MULTI_LABEL,
    REGRESSION,
    SINGLE_LABEL,
    LabelSpace,
    PairEncoder,
    classification_columns,
    label_space_from_values,
    parse_classification,
)
from transforms.tasks.encoder_heads import Failed


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def job_rows(records, tok, *, max_length=128, truncation="longest_first", field_map=None, labels=None,
             problem_type=None):
    examples = [parse_classification(r, field_map) for r in records]
    space = label_space_from_values([e.label for e in examples], labels=labels, problem_type=problem_type)
    encoder = PairEncoder(tok, max_length=max_length, truncation=truncation)
    encoded = encoder.encode([(e.text, e.text_pair) for e in examples])
    rows = [classification_columns(x, space.encode(e.label), token_type_ids=encoder.token_type_ids)
            for e, x in zip(examples, encoded)]
    return space, rows


def read(name, delimiter):
    path = DATA / name
    with open(path, "rb") as stream:
        return [r.value for r in iter_delimited_records(stream, source=str(path), delimiter=delimiter)]


def columns_to_rows(columns):
    return [{k: v[i] for k, v in columns.items()} for i in range(len(columns["input_ids"]))]


def assert_rows_equal(rows, reference, label_key="label"):
    assert len(rows) == len(reference)
    for k, (row, ref) in enumerate(zip(rows, reference)):
        assert row["input_ids"].tolist() == ref["input_ids"], k
        assert row["token_type_ids"].tolist() == ref["token_type_ids"], k
        assert row["labels"] == ref[label_key], k


def test_mrpc_csv_matches_run_glue(tok, tmp_path):
    from datasets import load_dataset

    raw = load_dataset("csv", data_files=str(DATA / "mrpc_dev.csv"), cache_dir=str(tmp_path))["train"]
    key1, key2 = glue_sentence_keys(raw.column_names)
    label_to_id = glue_label_to_id(raw["label"])
    # the script's function on the script's batch (datasets 5's map would cast the new int labels back to
    # the input's string column type)
    reference = columns_to_rows(glue_preprocess(raw[:], tokenizer=tok, sentence1_key=key1, sentence2_key=key2,
                                                label_to_id=label_to_id, max_seq_length=128))
    space, rows = job_rows(read("mrpc_dev.csv", ","), tok)
    assert space.problem_type == SINGLE_LABEL and space.to_manifest()["label2id"] == label_to_id
    assert_rows_equal(rows, reference)
    assert {r["truncated_tokens"] for r in rows} == {0}


def test_mrpc_tsv_with_a_field_map_and_integer_labels(tok):
    with open(DATA / "mrpc_train.tsv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = {"label": [int(r[0]) for r in table[1:]], "sentence1": [r[3] for r in table[1:]],
               "sentence2": [r[4] for r in table[1:]]}
    reference = glue_preprocess(columns, tokenizer=tok, sentence1_key="sentence1", sentence2_key="sentence2",
                                label_to_id=glue_label_to_id(columns["label"]), max_seq_length=32)
    field_map = {"text": "#1 String", "text_pair": "#2 String", "label": "Quality"}
    space, rows = job_rows(read("mrpc_train.tsv", "\t"), tok, max_length=32, field_map=field_map)
    assert space == LabelSpace(problem_type=SINGLE_LABEL, num_labels=2)
    assert_rows_equal(rows, columns_to_rows(reference))
    assert all(len(r["input_ids"]) <= 32 for r in rows) and any(r["truncated_tokens"] for r in rows)


def test_stsb_is_regression_with_float_labels(tok, tmp_path):
    from datasets import load_dataset

    raw = load_dataset("csv", data_files=str(DATA / "stsb_train.tsv"), sep="\t", quoting=csv.QUOTE_NONE,
                       cache_dir=str(tmp_path))["train"].rename_column("score", "label")
    assert raw.features["label"].dtype in ("float32", "float64")  # run_glue's is_regression
    reference = raw.map(glue_preprocess, batched=True, fn_kwargs=dict(
        tokenizer=tok, sentence1_key="sentence1", sentence2_key="sentence2", label_to_id=None, max_seq_length=128))
    space, rows = job_rows(read("stsb_train.tsv", "\t"), tok, field_map={"label": "score"})
    assert space == LabelSpace(problem_type=REGRESSION, num_labels=1)
    assert_rows_equal(rows, list(reference))
    assert isinstance(rows[0]["labels"], float)


words = st.lists(st.sampled_from("the quick brown fox jumps over lazy tokenization unbelievably , ! Hello".split()),
                 max_size=14).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(pairs=st.lists(st.tuples(words, st.none() | words), min_size=1, max_size=6),
       max_length=st.integers(4, 24), strategy=st.sampled_from(["longest_first", "only_first", "only_second"]))
def test_pair_truncation_matches_the_tokenizer(tok, pairs, max_length, strategy):
    encoder = PairEncoder(tok, max_length=max_length, truncation=strategy)
    for (text, pair), got in zip(pairs, encoder.encode(pairs)):
        try:
            ref = tok([text], [pair] if pair is not None else None, max_length=max_length,
                      truncation=strategy if pair is not None else True)
        except Exception:  # noqa: BLE001 - transformers refuses the pair: we must reject it
            assert isinstance(got, Failed) and got.reason == "too_long"
            continue
        assert not isinstance(got, Failed)
        assert list(got.encoding.ids) == ref["input_ids"][0]
        assert list(got.encoding.type_ids) == ref["token_type_ids"][0]
        full = len(tok([text], [pair] if pair is not None else None)["input_ids"][0])
        assert got.full_length == full


def test_label_space_inference():
    assert label_space_from_values(["b", "a", "b"]).names == ("a", "b")
    assert label_space_from_values([0, 2, "1"]) == LabelSpace(problem_type=SINGLE_LABEL, num_labels=3)
    assert label_space_from_values(["5.000", "3", 1]).problem_type == REGRESSION
    assert label_space_from_values([[1, 0, 1], [0, 0, 1]]) == LabelSpace(problem_type=MULTI_LABEL, num_labels=3)
    assert label_space_from_values([["x", "y"], ["z"]]).names == ("x", "y", "z")
    assert label_space_from_values([1, 2], problem_type=REGRESSION).problem_type == REGRESSION
    assert label_space_from_values(["neg"], labels=["pos", "neg"]).names == ("pos", "neg")
    assert label_space_from_values([-1, 0]).num_labels == 1  # -1 (GLUE's "no label") is rejected per record
    for values in ([None], [[1, 0], [1]], [-1]):
        with pytest.raises(ValueError):
            label_space_from_values(values)


def test_label_encoding_and_rejections():
    names = label_space_from_values([], labels=["neg", "pos"])
    assert names.encode("pos") == 1 and names.encode(0) == 0 and names.encode("1") == 1
    for value, reason in (("meh", "unmapped_label"), (2, "unmapped_label"), ([1], "invalid_label"),
                          (True, "invalid_label")):
        with pytest.raises(RecordRejected) as caught:
            names.encode(value)
        assert caught.value.reason == reason
    multi = LabelSpace(problem_type=MULTI_LABEL, names=("a", "b", "c"), num_labels=3)
    assert multi.encode(["c", "a"]).tolist() == [1.0, 0.0, 1.0] and multi.encode([0, 1, 0.5]).dtype == np.float32
    for value in ("a", [1, 0], ["a", "zz"]):
        with pytest.raises(RecordRejected):
            multi.encode(value)
    with pytest.raises(RecordRejected) as caught:
        LabelSpace(problem_type=REGRESSION).encode("high")
    assert caught.value.reason == "invalid_label"
    assert LabelSpace.from_manifest(multi.to_manifest()) == multi


def test_parse_rejections():
    for record, reason in (({"label": 1}, "invalid_content"), ({"text": 3, "label": 1}, "invalid_content"),
                           ({"text": "a"}, "invalid_label"), ({"text": "a", "text_pair": 4, "label": 0},
                                                              "invalid_content"), (["x"], "invalid_content")):
        with pytest.raises(RecordRejected) as caught:
            parse_classification(record)
        assert caught.value.reason == reason
    example = parse_classification({"sentence": "s", "label": "x"})
    assert example.text == "s" and example.text_pair is None


def test_collator_matches_data_collator_with_padding(tok):
    from transformers import DataCollatorWithPadding

    records = read("mrpc_dev.csv", ",")
    _, rows = job_rows(records, tok)
    reference = glue_preprocess({"sentence1": [r["sentence1"] for r in records],
                                 "sentence2": [r["sentence2"] for r in records],
                                 "label": [r["label"] for r in records]}, tokenizer=tok, sentence1_key="sentence1",
                                sentence2_key="sentence2", label_to_id=glue_label_to_id(r["label"] for r in records),
                                max_seq_length=128)
    features = columns_to_rows(reference)
    for multiple in (None, 8):
        expected = DataCollatorWithPadding(tok, pad_to_multiple_of=multiple)(features)
        got = SequenceClassificationCollator(pad_token_id=tok.pad_token_id, pad_to_multiple_of=multiple)(rows)
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key


def test_collator_float_labels_match(tok):
    from transformers import DataCollatorWithPadding

    _, regression = job_rows(read("stsb_train.tsv", "\t"), tok, field_map={"label": "score"})
    ref = [{"input_ids": r["input_ids"].tolist(), "token_type_ids": r["token_type_ids"].tolist(),
            "label": float(r["labels"])} for r in regression]
    expected = DataCollatorWithPadding(tok)(ref)
    got = SequenceClassificationCollator(pad_token_id=0)(regression)
    assert got["labels"].dtype == expected["labels"].dtype == torch.float32
    assert torch.equal(got["labels"], expected["labels"])
    _, multi = job_rows([{"text": "a b", "label": ["x"]}, {"text": "c", "label": ["y", "x"]}], tok)
    batch = SequenceClassificationCollator(pad_token_id=0)(multi)
    assert batch["labels"].tolist() == [[1.0, 0.0], [1.0, 1.0]] and batch["labels"].dtype == torch.float32


def test_collator_names_the_bad_row():
    collator = SequenceClassificationCollator(pad_token_id=0, vocab_size=10)
    with pytest.raises(ValueError, match="row 1"):
        collator([{"input_ids": [1, 2], "labels": 0}, {"input_ids": [1, 12], "labels": 1}])
    with pytest.raises(ValueError, match="row 0: no labels"):
        collator([{"input_ids": [1, 2]}])
    with pytest.raises(ValueError, match="row 0: token_type_ids"):
        collator([{"input_ids": [1, 2], "token_type_ids": [0], "labels": 1}])
