"""Audit figures of the encoder heads: class balance and unmapped labels, tag frequencies and words lost,
QA features per example and answers lost to windowing; partial figures merge to the whole."""
from __future__ import annotations

import json

import numpy as np
import pytest
import test_heads_classification as classification
import test_heads_qa as qa
import test_heads_token_classification as token_classification
from encoder_head_references import DATA, minilm_tokenizer

from transforms.tasks.classification import ClassificationFigures, LabelSpace
from transforms.tasks.qa import QAFigures
from transforms.tasks.token_classification import TagSpace, TokenClassificationFigures


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def halves(make, rows, rejections=()):
    whole, first, second = make(), make(), make()
    for k, row in enumerate(rows):
        whole.add_row(row)
        (first if k % 2 else second).add_row(row)
    for k, item in enumerate(rejections):
        whole.add_rejection(item)
        (first if k % 2 else second).add_rejection(item)
    assert second.merge(first).to_json() == whole.to_json()
    return whole.to_json()


def test_class_balance_and_unmapped_labels(tok):
    records = classification.read("mrpc_dev.csv", ",")
    space, rows = classification.job_rows(records, tok)
    fixed = LabelSpace(problem_type=space.problem_type, names=("equivalent",), num_labels=1)
    rejected = [{"reason": "unmapped_label", "record": r} for r in records if r["label"] != "equivalent"]
    figures = halves(lambda: ClassificationFigures(space), rows)
    assert figures["class_balance"] == {"equivalent": 3, "not_equivalent": 3} and figures["rows"] == 6
    unmapped = halves(lambda: ClassificationFigures(fixed), [], rejected)
    assert unmapped["unmapped_labels"] == {"not_equivalent": 3} and unmapped["unmapped_label_records"] == 3


def test_regression_and_multi_label_figures(tok):
    records = classification.read("stsb_train.tsv", "\t")
    space, rows = classification.job_rows(records, tok, field_map={"label": "score"})
    figures = halves(lambda: ClassificationFigures(space), rows)
    assert (figures["label_min"], figures["label_max"]) == (0.5, 5.0) and sum(figures["label_histogram"].values()) == 9
    space, rows = classification.job_rows([{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}], tok)
    figures = halves(lambda: ClassificationFigures(space), rows)
    assert figures["class_balance"] == {"x": 1, "y": 2} and figures["labels_per_row"] == {"1": 1, "2": 1}


def test_tag_frequencies_and_words_lost(tok):
    records = [json.loads(line) for line in (DATA / "conll_sample.json").read_text().splitlines()]
    space, rows = token_classification.job_rows(records, tok, max_length=12)
    figures = halves(lambda: TokenClassificationFigures(space), rows)
    assert figures["words"] == sum(len(r["words"]) for r in records)
    kept_words = sum(int(np.count_nonzero(r["labels"] != -100)) for r in rows)  # first sub-tokens
    assert figures["words_lost_to_truncation"] == figures["words"] - kept_words > 0
    assert sum(figures["trained_tokens_per_tag"].values()) == kept_words
    small = TagSpace(names=("O",), num_labels=1)
    unmapped = halves(lambda: TokenClassificationFigures(small), [],
                      [{"reason": "unmapped_label", "record": records[1]}, {"reason": "too_long", "record": {}}])
    assert unmapped["unmapped_tags"] == {"B-LOC": 1, "B-ORG": 1}


def test_qa_features_per_example_and_answers_lost(tok):
    records = qa.squad("squad_v2_flat.json")
    rows = qa.job_features(records, tok, max_length=48, doc_stride=8)
    figures = halves(QAFigures, rows)
    answerable = [r for r in records if r["answers"]["text"]]
    assert figures["examples"] == 14 and figures["answerable_examples"] == len(answerable)
    assert figures["features"] == len(rows) and sum(figures["features_per_example"].values()) == 14
    lost = {r["example_id"] for r in rows if r["answerable"]} - {r["example_id"] for r in rows if r["answer_in_window"]}
    assert figures["answers_lost_to_windowing"] == len(lost)
    assert figures["features_with_cls_target"] == sum(1 for r in rows if not r["answer_in_window"])
