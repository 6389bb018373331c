"""Labels on real data and the real Qwen2 vocabulary, checked token by token.

Three template styles:
* ChatML without generation markers that injects a default system prompt (Qwen2.5 style);
* the same format with ``{% generation %}`` markers;
* a header style (Llama 3 format) that renders BOS itself and trims content.

Expectations are computed independently of ``chat_render``: from the records' own text (each
trained run must decode to exactly the assistant content plus its stop token), from transformers'
``apply_chat_template(return_assistant_tokens_mask=True)``, and by agreement of the two methods.
Real reasoning + tool-call records (LLaMA-Factory's ``reason_tool_use`` demo) are checked against
``apply_chat_template`` with TRL's published ``qwen3_training`` template (generation markers, renders
reasoning and tool calls).

Inputs: the committed subsets in tests/data (every run, a fresh clone too) and, where ../shared/data exists,
the whole public files as well (the larger matrix; those parameters are not collected without it).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from chatshards_testing import SHARED_DATA, sample, shared
from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions, to_conversation
from transforms.reading import iter_raw_records_from_path
from transforms.rows import ROW, RowBuilder
from transforms.shard_format import IGNORE_INDEX

#: (file in tests/data, records taken or None for all)
SAMPLE_FILES = [
    ("sharegpt/fastchat_dummy_conversation.json", None),
    ("alpaca/llamafactory_alpaca_en_demo.json", None),
    ("alpaca/llamafactory_identity.json", None),
    ("openai/openai_cookbook_toy_chat_fine_tuning.jsonl", None),
    ("openai/llamafactory_v1_sft_demo.jsonl", None),
    ("tool_calling/llamafactory_glaive_toolcall_en_demo.json", None),
    ("tool_calling/openai_cookbook_drone_training_first3.jsonl", None),
    ("edge_cases/xtuner_openai_sft_bare_lists.jsonl", None),
]
#: the larger matrix: whole files of ../shared/data (collected only where it exists)
SHARED_FILES = [
    ("sharegpt/fastchat_dummy_conversation.json", None),
    ("alpaca/llamafactory_alpaca_en_demo.json", 150),
    ("alpaca/llamafactory_identity.json", None),
    ("openai/openai_cookbook_toy_chat_fine_tuning.jsonl", None),
    ("openai/llamafactory_v1_sft_demo.jsonl", 100),
    ("tool_calling/llamafactory_glaive_toolcall_en_demo.json", None),
    ("tool_calling/openai_cookbook_drone_training_first5.jsonl", None),
    ("edge_cases/xtuner_openai_sft_bare_lists.jsonl", 50),
]
REAL_FILES = ([pytest.param("sample", rel, limit, id=f"sample-{rel}") for rel, limit in SAMPLE_FILES]
              + [pytest.param("shared", rel, limit, id=f"shared-{rel}") for rel, limit in SHARED_FILES
                 if SHARED_DATA.is_dir()])
HEADER_STYLE_FILES = [p for p in REAL_FILES if p.values[1] in {rel for rel, _ in SAMPLE_FILES[:5]}]
REASONING_TOOLS = "tool_calling/llamafactory_reason_tool_use_demo.jsonl"


def load_raws(where, relative, limit=None):
    path = sample(relative) if where == "sample" else shared(relative)
    raws = list(iter_raw_records_from_path(str(path)))
    return raws[:limit] if limit else raws


def trained_runs(labels: np.ndarray) -> list[np.ndarray]:
    """Maximal runs of consecutive trained positions, as arrays of token ids."""
    trained = labels != IGNORE_INDEX
    runs, start = [], None
    for i, flag in enumerate(list(trained) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append(labels[start:i])
            start = None
    return runs


def mask_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each maximal run of trained positions."""
    trained = np.concatenate([[False], labels != IGNORE_INDEX, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(trained))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def build_rows(tokenizer, raws, **options):
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions(**options))
    return builder.build_records(raws)


def assistant_messages(raw):
    return [m for m in to_conversation(raw.value, FormatOptions()).messages if m["role"] == "assistant"]


@pytest.mark.parametrize("where,relative,limit", REAL_FILES)
def test_chatml_trained_runs_are_exactly_assistant_content_plus_im_end(qwen_tokenizer, where, relative, limit):
    raws = load_raws(where, relative, limit)
    results = build_rows(qwen_tokenizer, raws)
    checked = 0
    for raw, (kind, row) in zip(raws, results):
        if kind != ROW:
            continue
        runs = [qwen_tokenizer.decode(run.tolist()) for run in trained_runs(row["labels"])]
        assistants = assistant_messages(raw)
        assert len(runs) == len(assistants), (relative, raw.index)
        for text, message in zip(runs, assistants):
            assert text.endswith("<|im_end|>"), (relative, raw.index, text[-40:])
            if message.get("tool_calls"):
                for call in message["tool_calls"]:
                    assert call["function"]["name"] in text
            else:
                assert text == message["content"] + "<|im_end|>", (relative, raw.index)
        # labels equal input_ids on trained positions, -100 elsewhere; never the default system prompt
        trained = row["labels"] != IGNORE_INDEX
        assert np.array_equal(row["labels"][trained], row["input_ids"][trained])
        assert row["num_loss_tokens"] == int(trained.sum())
        assert row["length"] == len(row["input_ids"])
        checked += 1
    assert checked >= len(raws) * 0.9


@pytest.mark.parametrize("where,relative,limit", REAL_FILES)
def test_generation_markers_equal_tokenizer_assistant_mask(qwen_tokenizer, qwen_generation_tokenizer, where, relative,
                                                           limit):
    raws = load_raws(where, relative, limit)
    with_markers = build_rows(qwen_generation_tokenizer, raws)
    without_markers = build_rows(qwen_tokenizer, raws)
    for raw, (kind, row), (kind2, row2) in zip(raws, with_markers, without_markers):
        assert kind == kind2
        if kind != ROW:
            continue
        conversation = to_conversation(raw.value, FormatOptions())
        reference = qwen_generation_tokenizer.apply_chat_template(
            list(conversation.messages), tools=list(conversation.tools) if conversation.tools else None,
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        )
        assert row["input_ids"].tolist() == reference["input_ids"]
        expected = np.where(np.asarray(reference["assistant_masks"], bool), reference["input_ids"], IGNORE_INDEX)
        assert row["labels"].tolist() == expected.tolist(), (relative, raw.index)
        # two independent span methods (generation blocks vs prefix diff) agree token for token
        assert row["labels"].tolist() == row2["labels"].tolist(), (relative, raw.index)
        assert row["input_ids"].tolist() == row2["input_ids"].tolist()


def test_reasoning_and_tool_call_records_equal_apply_chat_template_mask(tmp_path_factory):
    """Real records with reasoning parts, parallel tool calls, tool results and several user turns (LLaMA-Factory
    v1 content parts, read by the job's own parser) under TRL's ``qwen3_training`` template: every record is one
    row whose ids and labels equal ``apply_chat_template(return_assistant_tokens_mask=True)``, and its trained
    text holds each turn's reasoning and tool calls."""
    import template_families as tf

    family = tf.BY_NAME["qwen3_training"]
    tokenizer = tf.load_family_tokenizer(tf.family_tokenizer(family, tmp_path_factory.mktemp("qwen3_training")))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    raws = load_raws("sample", REASONING_TOOLS)
    results = build_rows(tokenizer, raws)
    calls = reasoning = 0
    for raw, (kind, row) in zip(raws, results):
        assert kind == ROW, (raw.index, row.get("reason"), row.get("detail"))
        conversation = to_conversation(raw.value, FormatOptions())
        reference = tokenizer.apply_chat_template(
            list(conversation.messages), tools=list(conversation.tools) if conversation.tools else None,
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        )
        assert row["input_ids"].tolist() == reference["input_ids"], raw.index
        # The template's generation blocks end with the "\n" after <|im_end|>: the contract trains a block up to
        # its stop token, never the whitespace after it (README: "less ... trailing whitespace").
        expected = np.where(np.asarray(reference["assistant_masks"], bool), reference["input_ids"], IGNORE_INDEX)
        for run_start, run_end in mask_runs(expected):
            stops = [j for j in range(run_start, run_end) if expected[j] == im_end]
            assert stops, (raw.index, "a generation block without <|im_end|>")
            assert tokenizer.decode(expected[stops[-1] + 1:run_end].tolist()).strip() == ""
            expected[stops[-1] + 1:run_end] = IGNORE_INDEX
        assert row["labels"].tolist() == expected.tolist(), raw.index
        trained = "".join(tokenizer.decode(run.tolist()) for run in trained_runs(row["labels"]))
        for message in conversation.messages:
            if message["role"] != "assistant":
                continue
            if message.get("reasoning_content"):
                assert message["reasoning_content"].strip() in trained, raw.index
                reasoning += 1
            for call in message.get("tool_calls") or []:
                assert f'"name": "{call["function"]["name"]}"' in trained, raw.index
                calls += 1
        assert row["reasoning_tokens"] > 0
    assert reasoning >= 10 and calls >= 5, (reasoning, calls)


@pytest.mark.parametrize("where,relative,limit", HEADER_STYLE_FILES)
def test_header_style_template_bos_once_and_eot_trained(llama3_style_tokenizer, where, relative, limit):
    tokenizer = llama3_style_tokenizer
    bos_id = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    raws = load_raws(where, relative, limit)
    for raw, (kind, row) in zip(raws, build_rows(tokenizer, raws)):
        assert kind == ROW
        ids = row["input_ids"]
        assert ids[0] == bos_id and int((ids == bos_id).sum()) == 1, "exactly one BOS (no double BOS)"
        assert row["labels"][0] == IGNORE_INDEX
        runs = [tokenizer.decode(run.tolist()) for run in trained_runs(row["labels"])]
        expected = [m["content"].strip() + "<|eot_id|>" for m in assistant_messages(raw)]
        assert runs == expected, (relative, raw.index)


def test_default_system_prompt_is_rendered_but_never_trained(qwen_tokenizer):
    raws = load_raws("sample", "sharegpt/fastchat_dummy_conversation.json", 5)
    for _kind, row in build_rows(qwen_tokenizer, raws):
        text = qwen_tokenizer.decode(row["input_ids"].tolist())
        assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
        trained_text = "".join(qwen_tokenizer.decode(r.tolist()) for r in trained_runs(row["labels"]))
        assert "Alibaba" not in trained_text and "<|im_start|>" not in trained_text
        assert "assistant\n" not in trained_text


def test_pad_equal_to_eos_keeps_eos_trained_and_masks_padding_by_position(qwen_tokenizer):
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # the classic pad == eos case
    raws = load_raws("sample", "sharegpt/fastchat_dummy_conversation.json", 20)
    results = build_rows(tokenizer, raws, max_length=256, pad_to="max_length")
    eos = tokenizer.eos_token_id
    for raw, (kind, row) in zip(raws, results):
        assert kind == ROW
        n = row["length"]
        assert len(row["input_ids"]) == 256 and row["attention_mask"].tolist() == [1] * n + [0] * (256 - n)
        assert (row["input_ids"][n:] == eos).all() and (row["labels"][n:] == IGNORE_INDEX).all()
        trained_eos = int(((row["labels"][:n] == eos)).sum())
        assert trained_eos == len(assistant_messages(raw)) >= 1


def test_loss_modes_all_and_last(qwen_tokenizer):
    raws = load_raws("sample", "sharegpt/fastchat_dummy_conversation.json", 30)
    multi = [r for r in raws if len(assistant_messages(r)) >= 2][:5]
    assert multi
    for _raw, (_, row) in zip(multi, build_rows(qwen_tokenizer, multi, loss="all")):
        assert (row["labels"] == row["input_ids"]).all()
    for raw, (_, row) in zip(multi, build_rows(qwen_tokenizer, multi, loss="last")):
        runs = [qwen_tokenizer.decode(r.tolist()) for r in trained_runs(row["labels"])]
        assert runs == [assistant_messages(raw)[-1]["content"] + "<|im_end|>"]
        assert row["num_trained_turns"] == 1


def test_truncation_modes(qwen_tokenizer):
    raws = [r for r in load_raws("sample", "sharegpt/fastchat_dummy_conversation.json", 60)
            if len(assistant_messages(r)) == 3][:3]
    full = [row for _, row in build_rows(qwen_tokenizer, raws)]
    for raw, base in zip(raws, full):
        limit = base["length"] - 10
        (_, right), = build_rows(qwen_tokenizer, [raw], max_length=limit, truncation="right")
        assert right["input_ids"].tolist() == base["input_ids"][:limit].tolist()
        assert right["labels"].tolist() == base["labels"][:limit].tolist()
        assert right["truncated"] and right["truncated_tokens"] == 10
        (_, left), = build_rows(qwen_tokenizer, [raw], max_length=limit, truncation="left")
        assert left["input_ids"].tolist() == base["input_ids"][10:].tolist()
        (kind, dropped), = build_rows(qwen_tokenizer, [raw], max_length=limit, truncation="drop")
        assert kind == "rejected" and dropped["reason"] == "too_long"
        (_, turns), = build_rows(qwen_tokenizer, [raw], max_length=limit, truncation="turns")
        text = qwen_tokenizer.decode(turns["input_ids"].tolist())
        first_user = to_conversation(raw.value, FormatOptions()).messages[0]["content"]
        assert turns["length"] <= limit and turns["truncated"]
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n"), "whole turns dropped"
        assert first_user not in text or text.count("<|im_start|>user") < 3
        assert turns["num_turns"] < len(to_conversation(raw.value, FormatOptions()).messages)


def test_truncation_that_removes_all_trained_tokens_is_rejected(qwen_tokenizer):
    raws = load_raws("sample", "sharegpt/fastchat_dummy_conversation.json", 3)
    for kind, item in build_rows(qwen_tokenizer, raws, max_length=20, truncation="right"):
        assert kind == "rejected" and item["reason"] == "no_loss_tokens"
        assert json.dumps(item["record"])  # the original record travels with the rejection


def test_build_records_returns_kind_and_item_for_every_record(qwen_tokenizer):
    from transforms.reading import RawRecord

    raws = [RawRecord(source="mem", index=0, value=None, raw="{oops", error="bad json"),
            RawRecord(source="mem", index=1, value={"messages": [{"role": "user", "content": "Hi"},
                                                                 {"role": "assistant", "content": "Hello"}]}),
            RawRecord(source="mem", index=2, value={"weird": 1})]
    kinds = [(kind, item.get("reason")) for kind, item in build_rows(qwen_tokenizer, raws)]
    assert kinds == [("rejected", "invalid_json"), ("row", None), ("rejected", "unknown_format")]
