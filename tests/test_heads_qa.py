"""Extractive QA features: parity with run_qa.py's prepare_train_features / prepare_validation_features
(written out in encoder_head_references.py) on transformers' SQuAD v2 fixtures, windows, rejections,
and the collator against default_data_collator."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_head_references import (
    DATA,
    minilm_tokenizer,
    qa_prepare_train_features,
    qa_prepare_validation_features,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.rows  # noqa: F401  (imports the task registry in its usual order)
from transforms.errors import RecordRejected
from transforms.reading import iter_records
from transforms.reading.squad import expand_squad
from transforms.runtime.encoder_collate import QuestionAnsweringCollator
from transforms.tasks.encoder_heads import Failed
from transforms.tasks.qa import (
    QAEncoder,
    answer_positions,
    answer_positions_of,
    in_sequence,
    offset_matrix,
    parse_qa,
    qa_feature_columns,
)


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def squad(name):
    with open(DATA / name, "rb") as stream:
        return [r.value for r in expand_squad(iter_records(stream, source=name))]


_ENCODERS: dict = {}


def job_features(records, tok, *, max_length, doc_stride):
    examples = [parse_qa(r) for r in records]
    key = (id(tok), max_length, doc_stride)
    encoder = _ENCODERS.get(key) or _ENCODERS.setdefault(key, QAEncoder(tok, max_length=max_length,
                                                                        doc_stride=doc_stride))
    rows = []
    for example, encoded in zip(examples, encoder.encode([(e.question, e.context) for e in examples])):
        rows.extend(qa_feature_columns(encoder, encoded, example, example.example_id))
    return rows


def reference_features(records, tok, *, max_length, doc_stride, pad_to_max_length=False):
    def batch():
        return {key: [r[key] for r in records] for key in ("id", "question", "context", "answers")}

    kwargs = dict(tokenizer=tok, max_seq_length=max_length, doc_stride=doc_stride, pad_to_max_length=pad_to_max_length)
    train = qa_prepare_train_features(batch(), **kwargs)
    validation = qa_prepare_validation_features(batch(), **kwargs)
    return [{**{k: v[i] for k, v in train.items()}, "offset_mapping": validation["offset_mapping"][i],
             "example_id": validation["example_id"][i]} for i in range(len(train["input_ids"]))]


@pytest.mark.parametrize("max_length,doc_stride", [(384, 128), (64, 16), (48, 8)])
def test_squad_v2_features_match_run_qa(tok, max_length, doc_stride):
    records = squad("squad_v2_flat.json")
    rows = job_features(records, tok, max_length=max_length, doc_stride=doc_stride)
    reference = reference_features(records, tok, max_length=max_length, doc_stride=doc_stride)
    assert len(rows) == len(reference)
    for k, (row, ref) in enumerate(zip(rows, reference)):
        assert row["input_ids"].tolist() == ref["input_ids"], k
        assert row["token_type_ids"].tolist() == ref["token_type_ids"], k
        assert (row["start_positions"], row["end_positions"]) == (ref["start_positions"], ref["end_positions"]), k
        assert row["offset_mapping"] == [list(o) if o is not None else None for o in ref["offset_mapping"]], k
        assert row["example_id"] == ref["example_id"], k
    if max_length < 100:
        assert max(r["num_features"] for r in rows) > 3  # long contexts gave several windows
        lost = [r for r in rows if not r["answer_in_window"] and r["start_positions"] == 0]
        assert lost and all(r["end_positions"] == 0 for r in lost)
    for row in rows:  # the answer text is where the positions say
        if row["answer_in_window"]:
            record = next(r for r in records if r["id"] == row["example_id"])
            start = row["offset_mapping"][row["start_positions"]][0]
            end = row["offset_mapping"][row["end_positions"]][1]
            assert record["context"][start:end] == record["answers"]["text"][0]


def test_nested_squad_gives_the_flat_features(tok):
    nested = job_features(squad("squad_v2_nested.json"), tok, max_length=64, doc_stride=16)
    flat = job_features(squad("squad_v2_flat.json"), tok, max_length=64, doc_stride=16)
    keys = ("input_ids", "start_positions", "end_positions", "example_id", "feature_index")
    assert [[str(r[k]) for k in keys] for r in nested] == [[str(r[k]) for k in keys] for r in flat]


def test_question_is_never_truncated(tok):
    context = " ".join(["word"] * 200)
    encoder = QAEncoder(tok, max_length=40, doc_stride=10)
    long_question = " ".join(["why"] * 40)
    tight_question = " ".join(["why"] * 30)  # room 7 <= stride 10
    out = encoder.encode([(long_question, context), (tight_question, "short context"), (tight_question, context),
                          ("why?", context)])
    assert isinstance(out[0], Failed) and out[0].reason == "question_too_long"
    assert not isinstance(out[1], Failed) and len(out[1].features) == 1  # fits without windows
    assert isinstance(out[2], Failed) and out[2].reason == "question_too_long"
    assert len(out[3].features) > 1
    question_ids = tok("why?", add_special_tokens=False)["input_ids"]
    for feature in out[3].features:  # every window holds the whole question
        assert feature.ids[1:1 + len(question_ids)] == question_ids and len(feature.ids) <= 40


def _described(result):
    if isinstance(result, Failed):
        return ("failed", result.reason, result.detail)
    return [(f.ids, f.type_ids, f.offsets, f.sequence_ids) for f in result.features]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(range(5)), min_size=1, max_size=6))
def test_one_call_and_question_by_question_give_the_same_encodings(tok, picks):
    """encode tries the whole batch in one Rust call; encode_checked counts the questions' tokens first.
    Same results, Failed items included; a batch that needed encode_checked makes the encoder keep to it."""
    context = " ".join(["word"] * 200)
    long_question, tight_question = " ".join(["why"] * 40), " ".join(["why"] * 30)
    choices = [(long_question, context), (tight_question, "short context"), (tight_question, context),
               ("why?", context), ("who?", "a short one")]
    items = [choices[k] for k in picks]
    key = (id(tok), 40, 10)
    fresh = _ENCODERS.get(key) or _ENCODERS.setdefault(key, QAEncoder(tok, max_length=40, doc_stride=10))
    fresh.check_questions = False  # as a new encoder
    once = fresh.encode(items)
    checked = QAEncoder.encode_checked(fresh, items)
    assert [_described(r) for r in once] == [_described(r) for r in checked]
    assert fresh.check_questions == any(k in (0, 2) for k in picks)  # only a question too long fails the call
    assert [_described(r) for r in fresh.encode(items[::-1])] == [_described(r) for r in checked[::-1]]


def test_parse_rejections():
    good = {"id": 1, "question": "  q?", "context": "abc", "answers": {"text": ["b"], "answer_start": [1]}}
    example = parse_qa(good)
    assert example.question == "q?" and example.example_id == "1" and example.answerable
    nested_answers = {**good, "answers": [{"text": "b", "answer_start": 1}]}
    assert parse_qa(nested_answers).answer_starts == (1,)
    for change, reason in (({"answers": {"text": ["b"], "answer_start": [2]}}, "answer_not_in_context"),
                           ({"answers": {"text": ["b"], "answer_start": []}}, "invalid_label"),
                           ({"question": " "}, "invalid_content"), ({"context": ""}, "invalid_content"),
                           ({"answers": "b"}, "invalid_label")):
        with pytest.raises(RecordRejected) as caught:
            parse_qa({**good, **change})
        assert caught.value.reason == reason
    assert answer_positions([(0, 0), (0, 3), (4, 7), (0, 0)], [None, 1, 1, None], context_sequence=1,
                            start_char=4, end_char=7, cls_index=0) == (2, 2, True)


def test_collator_matches_default_data_collator(tok):
    from transformers import default_data_collator

    records = squad("squad_v2_flat.json")
    rows = job_features(records, tok, max_length=64, doc_stride=16)
    reference = reference_features(records, tok, max_length=64, doc_stride=16, pad_to_max_length=True)
    keys = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")
    expected = default_data_collator([{k: ref[k] for k in keys} for ref in reference[:8]])
    got = QuestionAnsweringCollator(pad_token_id=tok.pad_token_id, max_length=64)(rows[:8])
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key
    left = QuestionAnsweringCollator(pad_token_id=0, padding_side="left")(rows[:3])
    right = QuestionAnsweringCollator(pad_token_id=0)(rows[:3])
    for i in range(3):  # positions follow their tokens
        s_left, s_right = left["start_positions"][i], right["start_positions"][i]
        assert left["input_ids"][i, s_left] == right["input_ids"][i, s_right]
    with pytest.raises(ValueError, match="row 0: start_positions"):
        QuestionAnsweringCollator(pad_token_id=0)([{"input_ids": [1, 2], "start_positions": 5, "end_positions": 1}])


def test_answer_on_a_windows_last_context_token(tok):
    """The one place we differ from run_qa.py on purpose: its start scan runs past the context into [SEP]."""
    record = {"id": "x", "question": "q?", "context": "a b c d e f g h i j",
              "answers": {"text": ["d"], "answer_start": [6]}}
    rows = job_features([record], tok, max_length=9, doc_stride=1)
    reference = reference_features([record], tok, max_length=9, doc_stride=1)
    first, ref = rows[0], reference[0]
    assert first["input_ids"].tolist() == ref["input_ids"]
    assert tok.convert_ids_to_tokens(ref["input_ids"])[-2:] == ["d", "[SEP]"]
    assert (ref["start_positions"], ref["end_positions"]) == (8, 7)  # start on [SEP], after the end
    assert (first["start_positions"], first["end_positions"]) == (7, 7) and first["answer_in_window"]


_WORDS = "the Normans were famed for martial spirit 1066 Hastings Antioch's co-operation ; , unbelievably".split()


@settings(max_examples=25, deadline=None)
@given(words=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=60), data=st.data(),
       max_length=st.integers(20, 48), doc_stride=st.integers(0, 8))
def test_random_windows_match_run_qa(tok, words, data, max_length, doc_stride):
    context = " ".join(words)
    first = data.draw(st.integers(0, len(words) - 1))
    last = data.draw(st.integers(first, min(first + 3, len(words) - 1)))
    start = len(" ".join(words[:first])) + (1 if first else 0)
    answer = " ".join(words[first:last + 1])
    answers = data.draw(st.sampled_from([{"text": [answer], "answer_start": [start]},
                                         {"text": [], "answer_start": []}]))
    record = {"id": "r", "question": " where " + data.draw(st.sampled_from(_WORDS)) + "?", "context": context,
              "answers": answers}
    rows = job_features([record], tok, max_length=max_length, doc_stride=doc_stride)
    reference = reference_features([record], tok, max_length=max_length, doc_stride=doc_stride)
    assert [r["input_ids"].tolist() for r in rows] == [r["input_ids"] for r in reference]
    for row, ref in zip(rows, reference):
        ours = (row["start_positions"], row["end_positions"])
        theirs = (ref["start_positions"], ref["end_positions"])
        if ours != theirs:  # only where run_qa.py's start scan runs into [SEP] (see the test above)
            assert ref["start_positions"] > ref["end_positions"] and row["start_positions"] == row["end_positions"]
        if row["answer_in_window"]:
            offsets = row["offset_mapping"]
            assert context[offsets[row["start_positions"]][0]:offsets[row["end_positions"]][1]] == answer


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_numpy_answer_scans_equal_the_python_ones(data):
    """answer_positions_of (the job's numpy scans over offset_matrix / in_sequence) gives answer_positions'
    result, on arbitrary offsets (not monotonic) and sequence ids, or None where that one would scan off the
    array (then the job calls it)."""
    n = data.draw(st.integers(1, 12))
    offsets = data.draw(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=n, max_size=n))
    sequence_ids = data.draw(st.lists(st.sampled_from([None, 0, 1]), min_size=n, max_size=n))
    context = data.draw(st.sampled_from([0, 1]))
    start_char = data.draw(st.integers(0, 20))
    span = dict(start_char=start_char, end_char=start_char + data.draw(st.integers(1, 5)), cls_index=0)
    mask = in_sequence(sequence_ids, context)
    assert mask.tolist() == [s == context for s in sequence_ids]
    matrix = offset_matrix(offsets)
    assert matrix.dtype == np.int32 and matrix.tolist() == [list(o) for o in offsets]
    ours = answer_positions_of(matrix, mask, **span)
    try:
        theirs = answer_positions(offsets, sequence_ids, context_sequence=context, **span)
    except IndexError:  # no context token, or the end scan ran off the front
        assert ours is None
        return
    if ours is None:  # the end scan wrapped round to the last tokens: answer_positions' own result stands
        assert theirs[2] and theirs[1] <= 0
    else:
        assert ours == theirs
