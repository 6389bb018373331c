"""Token classification rows: parity with run_ner.py's tokenize_and_align_labels (written out in
encoder_head_references.py) on transformers' conll and GermEval fixtures, rejections, tag maps, and the
collator against DataCollatorForTokenClassification."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from encoder_head_references import DATA, minilm_tokenizer, ner_b_to_i, ner_label_list, ner_tokenize_and_align_labels

import transforms.rows  # noqa: F401  (imports the task registry in its usual order)
from transforms.errors import RecordRejected
from transforms.reading.conll import iter_conll_records
from transforms.runtime.encoder_collate import TokenClassificationCollator
from transforms.tasks.encoder_heads import Failed
from transforms.tasks.token_classification import (
    TagSpace,
    WordsEncoder,
    align_labels,
    parse_tagged,
    tag_space_from_values,
    token_classification_columns,
)


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def job_rows(records, tok, *, max_length=128, label_all_tokens=False, labels=None, field_map=None):
    sentences = [parse_tagged(r, field_map) for r in records]
    space = tag_space_from_values([s.tags for s in sentences], labels=labels)
    encoder = WordsEncoder(tok, max_length=max_length)
    encoded = encoder.encode([s.words for s in sentences])
    b_to_i = space.b_to_i()
    rows = [token_classification_columns(x, space.encode(s.tags), label_all_tokens=label_all_tokens, b_to_i=b_to_i,
                                         token_type_ids=encoder.token_type_ids) for s, x in zip(sentences, encoded)]
    return space, rows


def reference_rows(words, tags, tok, *, max_length, label_all_tokens):
    label_list = ner_label_list(tags)
    columns = ner_tokenize_and_align_labels(
        {"words": words, "ner": tags}, tokenizer=tok, text_column_name="words", label_column_name="ner",
        label_to_id={label: i for i, label in enumerate(label_list)}, b_to_i_label=ner_b_to_i(label_list),
        label_all_tokens=label_all_tokens, max_seq_length=max_length)
    return label_list, [{k: v[i] for k, v in columns.items()} for i in range(len(words))]


def conll_json():
    return [json.loads(line) for line in (DATA / "conll_sample.json").read_text().splitlines()]


@pytest.mark.parametrize("label_all_tokens", [False, True])
@pytest.mark.parametrize("max_length", [128, 12])
def test_conll_sample_matches_run_ner(tok, label_all_tokens, max_length):
    records = conll_json()
    space, rows = job_rows(records, tok, max_length=max_length, label_all_tokens=label_all_tokens)
    label_list, reference = reference_rows([r["words"] for r in records], [r["ner"] for r in records], tok,
                                           max_length=max_length, label_all_tokens=label_all_tokens)
    assert list(space.names) == label_list
    for k, (row, ref) in enumerate(zip(rows, reference)):
        assert row["input_ids"].tolist() == ref["input_ids"], k
        assert row["token_type_ids"].tolist() == ref["token_type_ids"], k
        assert row["labels"].tolist() == ref["labels"], k
    if max_length == 12:
        assert sum(r["words_truncated"] for r in rows) > 0 and all(r["length"] <= 12 for r in rows)
    else:
        assert all(r["words_truncated"] == 0 and r["truncated_tokens"] == 0 for r in rows)


def test_germeval_conll_file_matches_run_ner(tok):
    path = DATA / "germeval_train.conll"
    records = [r.value for r in iter_conll_records(open(path, "rb"), source=str(path))]
    space, rows = job_rows(records, tok, label_all_tokens=True)
    assert "B-LOCderiv" in space.names and space.b_to_i()[space.names.index("B-PER")] == space.names.index("I-PER")
    label_list, reference = reference_rows([r["tokens"] for r in records], [r["tags"] for r in records], tok,
                                           max_length=128, label_all_tokens=True)
    for row, ref in zip(rows, reference):
        assert row["input_ids"].tolist() == ref["input_ids"] and row["labels"].tolist() == ref["labels"]


def test_labels_sit_on_first_subtokens(tok):
    _, rows = job_rows([{"tokens": ["Unbelievably", "Fowler"], "tags": ["O", "B-PER"]}], tok)
    row = rows[0]
    pieces = tok.convert_ids_to_tokens(row["input_ids"].tolist())
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    labelled = [p for p, label in zip(pieces, row["labels"]) if label != -100]
    assert len(labelled) == 2 and not any(p.startswith("##") for p in labelled)
    assert row["labels"][0] == row["labels"][-1] == -100


def test_rejections(tok):
    encoder = WordsEncoder(tok, max_length=32)
    out = encoder.encode([("a", "\u200b", "b"), ("fine",)])
    assert isinstance(out[0], Failed) and out[0].reason == "word_not_tokenized" and "word 1" in out[0].detail
    assert not isinstance(out[1], Failed)
    for record, reason in (({"tokens": ["a", "b"], "tags": ["O"]}, "length_mismatch"),
                           ({"tokens": [], "tags": []}, "invalid_content"),
                           ({"tokens": ["a", ""], "tags": ["O", "O"]}, "invalid_content"),
                           ({"tokens": ["a"]}, "invalid_label"),
                           ({"tokens": ["a"], "tags": [None]}, "invalid_label")):
        with pytest.raises(RecordRejected) as caught:
            parse_tagged(record)
        assert caught.value.reason == reason
    with pytest.raises(RecordRejected) as caught:
        TagSpace(names=("O", "B-X"), num_labels=2).encode(["O", "I-X"])
    assert caught.value.reason == "unmapped_label"


def test_tag_spaces():
    assert tag_space_from_values([[3, 0], [1]]) == TagSpace(num_labels=4)
    space = tag_space_from_values([["O", "B-LOC"], ["I-LOC", "B-PER"]])
    assert space.names == ("B-LOC", "B-PER", "I-LOC", "O")
    assert space.b_to_i().tolist() == [2, 1, 2, 3]  # B-PER has no I-PER: stays itself
    assert space.encode(["O", 0]).tolist() == [3, 0]
    assert TagSpace.from_manifest(space.to_manifest()) == space
    fixed = tag_space_from_values([["O"]], labels=["O", "B-X", "I-X"])
    assert fixed.names == ("O", "B-X", "I-X")
    with pytest.raises(ValueError):
        tag_space_from_values([[]])
    labels = align_labels([None, 0, 0, 1, None], np.array([1, 0]), label_all_tokens=True, b_to_i=np.array([0, 0]))
    assert labels.tolist() == [-100, 1, 0, 0, -100]


def test_collator_matches_data_collator_for_token_classification(tok):
    from transformers import DataCollatorForTokenClassification

    records = conll_json()
    _, rows = job_rows(records, tok, max_length=24)
    _, reference = reference_rows([r["words"] for r in records], [r["ner"] for r in records], tok,
                                  max_length=24, label_all_tokens=False)
    for multiple in (None, 8):
        expected = DataCollatorForTokenClassification(tok, pad_to_multiple_of=multiple)(reference)
        got = TokenClassificationCollator(pad_token_id=tok.pad_token_id, pad_to_multiple_of=multiple)(rows)
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key
    left = TokenClassificationCollator(pad_token_id=0, padding_side="left")(rows[:2])
    assert left["labels"][1, 0].item() == -100 and left["attention_mask"][1, 0].item() == 0
    with pytest.raises(ValueError, match="row 0: labels"):
        TokenClassificationCollator(pad_token_id=0)([{"input_ids": [1, 2], "labels": [0]}])
