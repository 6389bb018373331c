"""Truncation keeps preference pairs meaningful (hypothesis): no written pair has an empty completion, no written
pair has identical chosen and rejected, limits hold, and every record is a row or a rejection with a reason."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import errors
from transforms.config import TokenizeOptions
from transforms.errors import RecordRejected
from transforms.formats import FormatOptions
from transforms.preference.truncation import PairLimits, truncate_completions, truncate_pair
from transforms.reading import RawRecord
from transforms.rows import RowBuilder
from transforms.tasks.preference import KtoOptions, PreferenceOptions
from transforms.tokenizer_loading import bundled_tokenizer

PAIR_REASONS = {errors.PAIR_TRUNCATED, errors.IDENTICAL_PAIR, errors.TOO_LONG}
ids = st.lists(st.integers(0, 2), max_size=12).map(lambda v: np.asarray(v, dtype=np.int32))
completions = st.lists(st.integers(0, 2), min_size=1, max_size=12).map(lambda v: np.asarray(v, dtype=np.int32))
limits = st.builds(PairLimits, max_length=st.none() | st.integers(2, 30),
                   max_prompt_length=st.none() | st.integers(1, 12),
                   max_completion_length=st.none() | st.integers(1, 12), drop=st.booleans())


def fits(prompt, completion, limit: PairLimits) -> bool:
    return ((limit.max_length is None or len(prompt) + len(completion) <= limit.max_length)
            and (limit.max_prompt_length is None or len(prompt) <= limit.max_prompt_length)
            and (limit.max_completion_length is None or len(completion) <= limit.max_completion_length))


@settings(max_examples=300, deadline=None)
@given(prompt=ids, chosen=completions, rejected=completions, limit=limits)
def test_truncate_pair_property(prompt, chosen, rejected, limit):
    try:
        out = truncate_pair(prompt, chosen, rejected, limit)
    except RecordRejected as exc:
        assert exc.reason in PAIR_REASONS
        if exc.reason == errors.TOO_LONG:
            assert limit.drop and not (fits(prompt, chosen, limit) and fits(prompt, rejected, limit))
        elif exc.reason == errors.PAIR_TRUNCATED:
            kept = len(prompt) if limit.max_prompt_length is None else min(len(prompt), limit.max_prompt_length)
            assert limit.max_length is not None and kept >= limit.max_length
        else:  # identical: in the input, or once both are cut to the same budget
            assert np.array_equal(chosen, rejected) or not limit.drop
        return
    kept_chosen, kept_rejected = out.completions
    assert len(kept_chosen) and len(kept_rejected) and not np.array_equal(kept_chosen, kept_rejected)
    assert fits(out.prompt, kept_chosen, limit) and fits(out.prompt, kept_rejected, limit)
    assert np.array_equal(out.prompt, prompt[len(prompt) - len(out.prompt):])  # the prompt keeps its end
    assert np.array_equal(kept_chosen, chosen[:len(kept_chosen)])  # completions keep their start
    assert np.array_equal(kept_rejected, rejected[:len(kept_rejected)])
    assert out.prompt_cut == len(prompt) - len(out.prompt)
    assert out.completion_cuts == (len(chosen) - len(kept_chosen), len(rejected) - len(kept_rejected))
    if limit.drop:
        assert out.cut == 0


@settings(max_examples=200, deadline=None)
@given(prompt=ids, completion=completions, limit=limits)
def test_truncate_completion_property(prompt, completion, limit):
    try:
        out = truncate_completions(prompt, (completion,), limit)
    except RecordRejected as exc:
        assert exc.reason in (errors.NO_LOSS_TOKENS, errors.TOO_LONG)
        if exc.reason == errors.NO_LOSS_TOKENS:
            assert exc.detail.startswith("truncation")  # counted by the audit as a truncation rejection
        return
    (kept,) = out.completions
    assert len(kept) and fits(out.prompt, kept, limit)


@functools.lru_cache(maxsize=1)
def tokenizer():
    return bundled_tokenizer()


words = st.sampled_from(["yes", "no", "maybe", "blue", "sky", "the", "is", "a"])
texts = st.lists(words, min_size=1, max_size=8).map(" ".join)
pair_records = st.builds(lambda q, c, r: {"prompt": [{"role": "user", "content": q}],
                                          "chosen": [{"role": "assistant", "content": c}],
                                          "rejected": [{"role": "assistant", "content": r}]}, texts, texts, texts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(pair_records, min_size=1, max_size=8), max_length=st.none() | st.integers(8, 40),
       max_prompt_length=st.none() | st.integers(4, 30), max_completion_length=st.none() | st.integers(1, 6),
       drop=st.booleans())
def test_written_pairs_are_meaningful_and_counts_reconcile(records, max_length, max_prompt_length,
                                                            max_completion_length, drop):
    if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
        max_prompt_length = max_length - 1
    options = TokenizeOptions(max_length=max_length, truncation="drop" if drop else "right")
    builder = RowBuilder(tokenizer=tokenizer(), format_options=FormatOptions(), tokenize_options=options,
                         task="preference", task_options=PreferenceOptions(
                             max_prompt_length=max_prompt_length, max_completion_length=max_completion_length))
    built = builder.build_records([RawRecord(source="p.jsonl", index=k, value=r) for k, r in enumerate(records)])
    assert len(built) == len(records)  # every record is one row or one rejection
    for (kind, item), record in zip(built, records):
        if kind != "row":
            assert item["reason"] in PAIR_REASONS
            if item["reason"] == errors.IDENTICAL_PAIR and record["chosen"] != record["rejected"]:
                assert max_completion_length is not None or max_length is not None  # identical once truncated
            continue
        assert len(item["chosen_ids"]) and len(item["rejected_ids"])
        assert not np.array_equal(item["chosen_ids"], item["rejected_ids"])
        prompt = len(item["prompt_ids"])
        for side in ("chosen_ids", "rejected_ids"):
            assert max_length is None or prompt + len(item[side]) <= max_length
            assert max_completion_length is None or len(item[side]) <= max_completion_length
        assert max_prompt_length is None or prompt <= max_prompt_length
        assert item["truncated_tokens"] == item["prompt_truncated_tokens"] + item["chosen_truncated_tokens"] \
            + item["rejected_truncated_tokens"]


@pytest.mark.parametrize("limit,reason", [(PairLimits(max_length=5), errors.NO_LOSS_TOKENS),
                                          (PairLimits(max_length=5, drop=True), errors.TOO_LONG)])
def test_kto_examples_without_room_are_rejected(limit, reason):
    with pytest.raises(RecordRejected) as raised:
        truncate_completions(np.arange(6, dtype=np.int32), (np.arange(3, dtype=np.int32),), limit)
    assert raised.value.reason == reason
    assert KtoOptions(max_prompt_length=2).max_prompt_length == 2
