"""Tests for transforms.formats: format detection, normalization, validation, real data."""
from __future__ import annotations

import collections
import dataclasses
import json
import pickle

import pytest

from chatshards_testing import SHARED_DATA, TEST_DATA
from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats import (
    FORMATS,
    Conversation,
    FormatOptions,
    detect_format,
    parse_mapping_option,
    to_conversation,
)
from transforms.reading import iter_raw_records_from_path

# Real files: the committed subsets in tests/data (every run) and, where ../shared/data exists, the whole
# public files (the larger matrix; not collected without it). Counts are per data root.
DATA_ROOTS = {"sample": TEST_DATA, **({"shared": SHARED_DATA} if SHARED_DATA.is_dir() else {})}


def conv(record, **opts) -> Conversation:
    return to_conversation(record, FormatOptions(**opts))


def rejected(record, **opts) -> RecordRejected:
    with pytest.raises(RecordRejected) as info:
        conv(record, **opts)
    return info.value


U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


# --------------------------------------------------------------------------------------------
# openai


def test_openai_basic():
    c = conv({"messages": [{"role": "system", "content": "be nice"}, U, A]})
    assert c.messages == ({"role": "system", "content": "be nice"}, U, A)
    assert c.format == "openai" and c.tools is None and c.trainable == (True, True, True)


def test_openai_whitespace_preserved_exactly():
    msgs = [{"role": "user", "content": "  lead\n\ttab  \r\n"}, {"role": "assistant",
                                                                  "content": "\n x \n"}]
    assert list(conv({"messages": msgs}).messages) == msgs


def test_openai_bare_list_record():
    c = conv([{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}])
    assert c.format == "openai"
    assert c.messages == ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})


def test_openai_content_parts_text_and_value():
    c = conv({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "x"}, {"type": "text",
                                                                           "value": "y"}]}]})
    assert [m["content"] for m in c.messages] == ["a b", "xy"]


def test_openai_reasoning_and_tool_call_parts():
    c = conv({"messages": [U, {"role": "assistant", "content": [
        {"type": "reasoning", "value": "think"},
        {"type": "text", "value": "ok"},
        {"type": "tool_call", "value": '{"name": "f", "arguments": {"x": 1}}'}]}]})
    m = c.messages[1]
    assert m["content"] == "ok" and m["reasoning_content"] == "think"
    assert m["tool_calls"] == [{"type": "function", "function": {"name": "f",
                                                                 "arguments": {"x": 1}}}]


def test_openai_image_part_rejected():
    e = rejected({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x.png"}}, {"type": "text", "text": "?"}]}, A]})
    assert e.reason == errors.INVALID_CONTENT and "vision pipeline" in e.detail


def test_media_field_rejected():
    e = rejected({"messages": [U, A], "images": ["a.jpg"]})
    assert e.reason == errors.INVALID_CONTENT and "vision pipeline" in e.detail
    assert conv({"messages": [U, A], "images": []}).messages == (U, A)


def test_openai_unknown_part_type_rejected():
    e = rejected({"messages": [{"role": "user", "content": [{"type": "weird"}]}, A]})
    assert e.reason == errors.INVALID_CONTENT and "weird" in e.detail


def test_openai_tool_calls_and_tool_messages():
    tools = [{"type": "function", "function": {"name": "get", "parameters": {}}}]
    rec = {"tools": tools, "messages": [
        U,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get",
                                                          "arguments": '{"q": "x"}'}},
            {"type": "function", "function": {"name": "get", "arguments": {"q": "y"}}}]},
        {"role": "tool", "content": "result", "tool_call_id": "c1", "name": "get"},
        {"role": "assistant", "content": "done"}]}
    c = conv(rec)
    assert c.tools == tuple(tools)
    assert c.messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get", "arguments": {"q": "x"}}, "id": "c1"},
        {"type": "function", "function": {"name": "get", "arguments": {"q": "y"}}}]}
    assert c.messages[2] == {"role": "tool", "content": "result", "tool_call_id": "c1",
                             "name": "get"}


@pytest.mark.parametrize("args,expected", [
    ('{"a": 1}', {"a": 1}),
    (json.dumps(json.dumps({"a": 1})), {"a": 1}),  # double-encoded
    ("not json", "not json"),
    ("[1, 2]", "[1, 2]"),
    ('"just a string"', '"just a string"'),
    (None, {}),
    ({"b": [1]}, {"b": [1]}),
])
def test_tool_call_arguments_decoding(args, expected):
    rec = {"messages": [U, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": args}}]}]}
    assert conv(rec).messages[1]["tool_calls"][0]["function"]["arguments"] == expected


def test_tool_call_without_name_rejected():
    e = rejected({"messages": [U, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"arguments": "{}"}}]}]})
    assert e.reason == errors.INVALID_CONTENT


def test_tools_as_json_string_and_empty():
    assert conv({"messages": [U, A], "tools": '[{"name": "f"}]'}).tools == ({"name": "f"},)
    for empty in ("", "[]", "null", [], None, "  "):
        assert conv({"messages": [U, A], "tools": empty}).tools is None
    e = rejected({"messages": [U, A], "tools": "[{bad"})
    assert e.reason == errors.INVALID_CONTENT


def test_reasoning_content_passes_through():
    c = conv({"messages": [U, {"role": "assistant", "content": "x", "reasoning_content": "r"}]})
    assert c.messages[1] == {"role": "assistant", "content": "x", "reasoning_content": "r"}


def test_trainable_flags():
    rec = {"messages": [
        {"role": "user", "content": "a", "loss_weight": 0.0},
        {"role": "assistant", "content": "b", "loss_weight": 0.0},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d", "train": False},
        {"role": "user", "content": "e"},
        {"role": "assistant", "content": "f", "weight": 0},
        {"role": "user", "content": "g"},
        {"role": "assistant", "content": "h", "loss_weight": 1.0, "train": True, "weight": 1},
    ]}
    c = conv(rec)
    assert c.trainable == (True, False, True, False, True, False, True, True)
    assert all(set(m) == {"role", "content"} for m in c.messages)


def test_conversation_ending_with_user_allowed():
    c = conv({"messages": [U, A, {"role": "user", "content": "more?"}]})
    assert [m["role"] for m in c.messages] == ["user", "assistant", "user"]


# --------------------------------------------------------------------------------------------
# validation


def test_empty_conversation():
    assert rejected({"messages": []}).reason == errors.EMPTY_CONVERSATION
    assert rejected({"conversations": []}).reason == errors.EMPTY_CONVERSATION
    assert rejected([]).reason == errors.EMPTY_CONVERSATION


def test_no_assistant_turn():
    assert rejected({"messages": [U]}).reason == errors.NO_ASSISTANT_TURN
    assert rejected({"instruction": "x"}).reason == errors.NO_ASSISTANT_TURN


@pytest.mark.parametrize("content", ["", "   \n\t", None, []])
def test_empty_turn_names_index(content):
    e = rejected({"messages": [U, A, {"role": "user", "content": "x"},
                               {"role": "assistant", "content": content}]})
    assert e.reason == errors.EMPTY_TURN and "message 3" in e.detail


def test_empty_user_turn():
    e = rejected({"messages": [{"role": "user", "content": " "}, A]})
    assert e.reason == errors.EMPTY_TURN and "message 0" in e.detail


def test_empty_system_and_tool_allowed():
    c = conv({"messages": [{"role": "system", "content": ""}, U, A,
                           {"role": "tool", "content": ""}, A]})
    assert c.messages[0]["content"] == "" and c.messages[3]["content"] == ""


@pytest.mark.parametrize("content", [5, 1.5, {"text": "x"}, True])
def test_wrong_content_type(content):
    e = rejected({"messages": [{"role": "user", "content": content}, A]})
    assert e.reason == errors.INVALID_CONTENT and "message 0" in e.detail


def test_lone_surrogate_rejected():
    e = rejected({"messages": [{"role": "user", "content": "bad \ud800"}, A]})
    assert e.reason == errors.INVALID_CONTENT


def test_invalid_roles():
    e = rejected({"messages": [{"role": "narrator", "content": "x"}, A]})
    assert e.reason == errors.INVALID_ROLE and "narrator" in e.detail and "--role-map" in e.detail
    assert rejected({"messages": [{"role": 3, "content": "x"}, A]}).reason == errors.INVALID_ROLE
    assert rejected({"messages": [{"content": "x"}, A]}).reason == errors.INVALID_ROLE


def test_message_not_an_object():
    assert rejected({"messages": ["hi", A]}).reason == errors.INVALID_CONTENT
    assert rejected({"messages": "nope"}).reason == errors.INVALID_CONTENT


@pytest.mark.parametrize("record", [None, 3, "text", True, 2.5])
def test_not_a_record(record):
    assert rejected(record).reason == errors.UNKNOWN_FORMAT


def test_unknown_keys():
    e = rejected({"question": "q", "answer": "a"})
    assert e.reason == errors.UNKNOWN_FORMAT and "question" in e.detail and "--field-map" in e.detail


# --------------------------------------------------------------------------------------------
# sharegpt


def test_sharegpt_basic_with_system_field():
    c = conv({"system": "sys", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    assert c.format == "sharegpt"
    assert c.messages == ({"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"})


@pytest.mark.parametrize("src,dst", [
    ("human", "user"), ("user", "user"), ("gpt", "assistant"), ("assistant", "assistant"),
    ("chatgpt", "assistant"), ("bard", "assistant"), ("bing", "assistant"), ("system", "system"),
    ("tool", "tool"), ("observation", "tool"), ("function", "tool"), ("Human", "user"),
    ("GPT", "assistant"),
])
def test_sharegpt_default_roles(src, dst):
    c = conv({"conversations": [{"from": src, "value": "x"}, {"from": "gpt", "value": "y"}]})
    assert c.messages[0] == {"role": dst, "content": "x"}


def test_sharegpt_function_call_and_observation():
    rec = {"tools": '[{"name": "f", "parameters": {}}]', "conversations": [
        {"from": "human", "value": "q"},
        {"from": "function_call", "value": '{"name": "f", "arguments": {"x": 1}}'},
        {"from": "observation", "value": '{"r": 2}'},
        {"from": "gpt", "value": "two"}]}
    c = conv(rec)
    assert c.tools == ({"name": "f", "parameters": {}},)
    assert c.messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}
    assert c.messages[2] == {"role": "tool", "content": '{"r": 2}'}


def test_sharegpt_parallel_function_calls():
    rec = {"conversations": [
        {"from": "human", "value": "q"},
        {"from": "function_call", "value": '[{"name": "f", "arguments": "{\\"a\\": 1}"}, '
                                           '{"name": "g", "arguments": {}}]'},
        {"from": "observation", "value": "r"}, {"from": "gpt", "value": "x"}]}
    calls = conv(rec).messages[1]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("f", {"a": 1}), ("g", {})]


@pytest.mark.parametrize("value", ["not json", '{"arguments": {}}', "[]", "7"])
def test_sharegpt_bad_function_call(value):
    e = rejected({"conversations": [{"from": "human", "value": "q"},
                                    {"from": "function_call", "value": value},
                                    {"from": "gpt", "value": "x"}]})
    assert e.reason == errors.INVALID_CONTENT and "message 1" in e.detail


def test_sharegpt_unknown_role():
    e = rejected({"conversations": [{"from": "alien", "value": "q"}, {"from": "gpt", "value": "a"}]})
    assert e.reason == errors.INVALID_ROLE and "'alien'" in e.detail and "--role-map" in e.detail


def test_sharegpt_role_content_items_and_weight():
    c = conv({"conversations": [{"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a", "weight": 0},
                                {"role": "user", "content": "q2"},
                                {"role": "assistant", "content": "a2"}]})
    assert [m["content"] for m in c.messages] == ["q", "a", "q2", "a2"]
    assert c.trainable == (True, False, True, True)


def test_system_field_conflicts():
    same = conv({"system": "s", "messages": [{"role": "system", "content": "s"}, U, A]})
    assert [m["role"] for m in same.messages] == ["system", "user", "assistant"]
    e = rejected({"system": "s", "messages": [{"role": "system", "content": "other"}, U, A]})
    assert e.reason == errors.INVALID_CONTENT
    assert conv({"system": "", "messages": [U, A]}).messages == (U, A)


# --------------------------------------------------------------------------------------------
# alpaca


def test_alpaca_input_joined_with_newline():
    c = conv({"instruction": "Do it.", "input": "data", "output": "done"})
    assert c.format == "alpaca"
    assert c.messages == ({"role": "user", "content": "Do it.\ndata"},
                          {"role": "assistant", "content": "done"})


def test_alpaca_empty_input_and_system_and_history():
    c = conv({"instruction": "now", "input": "", "output": "yes", "system": "sys",
              "history": [["h1", "r1"], ["h2", "r2"]]})
    assert [(m["role"], m["content"]) for m in c.messages] == [
        ("system", "sys"), ("user", "h1"), ("assistant", "r1"), ("user", "h2"),
        ("assistant", "r2"), ("user", "now"), ("assistant", "yes")]


def test_alpaca_invalid():
    assert rejected({"instruction": "x", "output": ["a", "b"]}).reason == errors.INVALID_CONTENT
    assert rejected({"instruction": "x", "output": 3}).reason == errors.INVALID_CONTENT
    assert rejected({"instruction": "x", "output": ""}).reason == errors.EMPTY_TURN
    assert rejected({"instruction": "", "input": "", "output": "y"}).reason == errors.EMPTY_TURN
    assert rejected({"instruction": "x", "output": "y", "history": [["a"]]}).reason == \
        errors.INVALID_CONTENT
    assert rejected({"instruction": "x", "output": "y", "history": "a"}).reason == \
        errors.INVALID_CONTENT
    assert conv({"instruction": "", "input": "only input", "output": "y"}).messages[0][
        "content"] == "only input"


# --------------------------------------------------------------------------------------------
# prompt_completion


def test_prompt_completion_strings():
    c = conv({"prompt": "p ", "completion": " c"})
    assert c.format == "prompt_completion"
    assert c.messages == ({"role": "user", "content": "p "}, {"role": "assistant", "content": " c"})
    assert c.trainable == (True, True)


def test_prompt_completion_message_lists():
    c = conv({"prompt": [{"role": "system", "content": "s"}, U, A, {"role": "user", "content": "2"}],
              "completion": [{"role": "assistant", "content": "final"}]})
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert c.trainable == (True, True, False, True, True)  # only the completion trains


def test_prompt_completion_invalid():
    assert rejected({"prompt": "p", "completion": 5}).reason == errors.INVALID_CONTENT
    assert rejected({"prompt": "p", "completion": ""}).reason == errors.EMPTY_TURN
    assert rejected({"prompt": "p", "completion": None}).reason == errors.NO_ASSISTANT_TURN


# --------------------------------------------------------------------------------------------
# detection, options


def test_detect_format_auto_and_forced():
    o = FormatOptions()
    assert detect_format({"messages": []}, o) == "openai"
    assert detect_format([], o) == "openai"
    assert detect_format([{"from": "human", "value": "x"}], o) == "sharegpt"
    assert detect_format({"conversations": []}, o) == "sharegpt"
    assert detect_format({"prompt": "", "completion": ""}, o) == "prompt_completion"
    assert detect_format({"instruction": "", "output": ""}, o) == "alpaca"
    assert detect_format({"x": 1}, FormatOptions(format="alpaca")) == "alpaca"
    with pytest.raises(RecordRejected) as info:
        detect_format([U], FormatOptions(format="alpaca"))
    assert info.value.reason == errors.UNKNOWN_FORMAT
    with pytest.raises(RecordRejected):
        detect_format({"prompt": "only"}, o)


def test_forced_format_missing_field():
    e = rejected({"conversations": []}, format="openai")
    assert e.reason == errors.UNKNOWN_FORMAT and "'messages'" in e.detail


def test_field_map_top_level_and_message_keys():
    rec = {"dialog": [{"speaker": "human", "text": "q"}, {"speaker": "gpt", "text": "a"}],
           "sys": "S", "funcs": '[{"name": "f"}]'}
    c = conv(rec, field_map={"messages": "dialog", "role": "speaker", "content": "text",
                             "system": "sys", "tools": "funcs"})
    assert c.format == "openai" and c.tools == ({"name": "f"},)
    assert c.messages == ({"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"})


def test_field_map_alpaca():
    c = conv({"question": "q", "ctx": "c", "answer": "a"},
             field_map={"instruction": "question", "input": "ctx", "output": "answer"})
    assert c.format == "alpaca" and c.messages[0]["content"] == "q\nc"


def test_role_map_overrides_and_extends():
    rec = {"conversations": [{"from": "developer", "value": "d"}, {"from": "human", "value": "q"},
                             {"from": "bot", "value": "a"}]}
    c = conv(rec, role_map={"developer": "system", "bot": "assistant"})
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant"]
    c2 = conv({"messages": [{"role": "user", "content": "x"}, A]}, role_map={"user": "system"})
    assert c2.messages[0]["role"] == "system"


def test_role_map_function_call_target():
    rec = {"conversations": [{"from": "human", "value": "q"},
                             {"from": "call", "value": '{"name": "f", "arguments": {}}'},
                             {"from": "gpt", "value": "a"}]}
    c = conv(rec, role_map={"call": "function_call"})
    assert c.messages[1]["tool_calls"][0]["function"]["name"] == "f"


def test_system_prompt_inserted_only_when_missing():
    c = conv({"messages": [U, A]}, system_prompt="default")
    assert c.messages[0] == {"role": "system", "content": "default"}
    assert c.trainable == (True, True, True)
    c = conv({"messages": [{"role": "system", "content": "own"}, U, A]}, system_prompt="default")
    assert c.messages[0]["content"] == "own" and len(c.messages) == 3
    c = conv({"instruction": "i", "output": "o", "system": "rec"}, system_prompt="default")
    assert [m["content"] for m in c.messages] == ["rec", "i", "o"]


@pytest.mark.parametrize("kwargs", [
    {"format": "csv"},
    {"field_map": {"bogus": "x"}},
    {"field_map": {"messages": ""}},
    {"field_map": {"messages": "data", "conversations": "data"}},
    {"field_map": "messages=data"},
    {"role_map": {"bot": "robot"}},
    {"role_map": {"": "user"}},
    {"system_prompt": ""},
    {"system_prompt": 5},
])
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        FormatOptions(**kwargs)


def test_options_hashable_picklable_json():
    o = FormatOptions(format="sharegpt", field_map={"conversations": "c"},
                      role_map={"bot": "assistant"}, system_prompt="s")
    assert hash(o) == hash(FormatOptions(format="sharegpt", field_map={"conversations": "c"},
                                         role_map={"bot": "assistant"}, system_prompt="s"))
    assert pickle.loads(pickle.dumps(o)) == o
    assert o.field_map["conversations"] == "c" and dict(o.role_map) == {"bot": "assistant"}
    assert json.loads(json.dumps(o.to_json())) == {
        "format": "sharegpt", "field_map": {"conversations": "c"},
        "role_map": {"bot": "assistant"}, "system_prompt": "s"}
    assert FormatOptions().to_json() == {"format": "auto", "field_map": {}, "role_map": {},
                                         "system_prompt": None}
    with pytest.raises(TypeError):
        FormatOptions("openai")  # keyword-only
    assert set(FORMATS) == {"auto", "openai", "sharegpt", "alpaca", "prompt_completion"}


def test_parse_mapping_option():
    assert parse_mapping_option("a=b,c=d") == {"a": "b", "c": "d"}
    assert parse_mapping_option(" a = b , c=d=e ,") == {"a": "b", "c": "d=e"}
    assert parse_mapping_option('{"a": "b"}') == {"a": "b"}
    assert parse_mapping_option("") == {}
    for bad in ("a", "a=", "=b", "a=b,a=c", '{"a": 1}', '{"a": ', "[1]", '{"": "x"}'):
        with pytest.raises(ValueError):
            parse_mapping_option(bad)


def test_conversation_is_immutable():
    c = conv({"messages": [U, A]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.format = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# real data (tests/data subsets; ../shared/data whole files where present)


def _records(root: str, rel: str) -> list:
    path = DATA_ROOTS[root] / rel
    if not path.exists():
        pytest.fail(f"{rel} missing from {DATA_ROOTS[root]}")
    return [r.value for r in iter_raw_records_from_path(str(path))]


def _raw_json(root: str, rel: str):
    return json.loads((DATA_ROOTS[root] / rel).read_text())


# expected outcome per file: Counter of "ok:<format>" / reject reason
EXPECTED = {
    "shared": {
        "alpaca/llamafactory_alpaca_en_demo.json": {"ok:alpaca": 999},
        "alpaca/llamafactory_identity.json": {"ok:alpaca": 91},
        "alpaca/axolotl_alpaca.json": {"ok:alpaca": 2},
        "sharegpt/fastchat_dummy_conversation.json": {"ok:sharegpt": 500},
        "sharegpt/axolotl_conversation.json": {"ok:sharegpt": 1},
        "openai/openai_cookbook_toy_chat_fine_tuning.jsonl": {"ok:openai": 5},
        "openai/llamafactory_v1_sft_demo.jsonl": {"ok:openai": 500},
        "tool_calling/llamafactory_glaive_toolcall_en_demo.json": {"ok:sharegpt": 300},
        "tool_calling/openai_cookbook_drone_training_first5.jsonl": {"ok:openai": 5},
        "edge_cases/axolotl_conversation.missingturns.json": {errors.EMPTY_TURN: 1},
        "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl": {"ok:openai": 11},
        # LLaVA-style records with an "image" field need the vision pipeline
        "edge_cases/qwen3vl_single_images_trailing_comma.json": {errors.INVALID_CONTENT: 3},
        "edge_cases/xtuner_openai_sft_bare_lists.jsonl": {"ok:openai": 128},
        # files of other tasks (--task kto / preference / text), read here as chat records: a KTO record is a
        # plain conversation (its label unused); a DPO record's `conversations` is the prompt, whose last turn is
        # the user's (no assistant turn) unless earlier turns hold one; web text is no chat format
        "preference/llamafactory_kto_en_demo.first150.json": {"ok:openai": 150},
        "preference/llamafactory_dpo_en_demo.first150.json": {errors.NO_ASSISTANT_TURN: 96, "ok:sharegpt": 54},
        "text/llamafactory_c4_demo.first150.jsonl": {errors.UNKNOWN_FORMAT: 150},
    },
    "sample": {
        "alpaca/llamafactory_alpaca_en_demo.json": {"ok:alpaca": 30},
        "alpaca/llamafactory_identity.json": {"ok:alpaca": 20},
        "alpaca/axolotl_alpaca.json": {"ok:alpaca": 2},
        "sharegpt/fastchat_dummy_conversation.json": {"ok:sharegpt": 36},
        "sharegpt/axolotl_conversation.json": {"ok:sharegpt": 1},
        "openai/openai_cookbook_toy_chat_fine_tuning.jsonl": {"ok:openai": 5},
        "openai/llamafactory_v1_sft_demo.jsonl": {"ok:openai": 30},
        "tool_calling/llamafactory_glaive_toolcall_en_demo.json": {"ok:sharegpt": 12},
        "tool_calling/openai_cookbook_drone_training_first3.jsonl": {"ok:openai": 3},
        "tool_calling/llamafactory_reason_tool_use_demo.jsonl": {"ok:openai": 6},
        "edge_cases/axolotl_conversation.missingturns.json": {errors.EMPTY_TURN: 1},
        "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl": {"ok:openai": 3},
        "edge_cases/qwen3vl_single_images_trailing_comma.json": {errors.INVALID_CONTENT: 3},
        "edge_cases/xtuner_openai_sft_bare_lists.jsonl": {"ok:openai": 30},
    },
}
DRONE = {"shared": "tool_calling/openai_cookbook_drone_training_first5.jsonl",
         "sample": "tool_calling/openai_cookbook_drone_training_first3.jsonl"}
#: facts of each root's files, counted by hand from the files (not by the parser)
FACTS = {
    "shared": {"fastchat_turns": {2: 167, 4: 166, 6: 167}, "alpaca_empty_input": 587, "glaive_without_tools": 109,
               "glaive_records_with_calls": 153},
    "sample": {"fastchat_turns": {2: 12, 4: 12, 6: 12}, "alpaca_empty_input": 21, "glaive_without_tools": 7,
               "glaive_records_with_calls": 5},
}
ROOTS = list(DATA_ROOTS)


#: tests/data's folders of chat records (its other files are the inputs of the other tasks' tests, and vlm/ the
#: vision tests'); every JSON file of ../shared/data outside vlm/
CHAT_FOLDERS = {"alpaca", "sharegpt", "openai", "tool_calling", "edge_cases"}


def test_every_data_file_is_covered():
    for root in ROOTS:
        folder = DATA_ROOTS[root]
        files = {str(p.relative_to(folder)) for p in folder.rglob("*.json*")
                 if (p.relative_to(folder).parts[0] in CHAT_FOLDERS if root == "sample"
                     else p.relative_to(folder).parts[0] != "vlm")}
        assert files == set(EXPECTED[root]), root


@pytest.mark.parametrize("root,rel", [(root, rel) for root in ROOTS for rel in sorted(EXPECTED[root])])
def test_real_file_outcomes(root, rel):
    outcome = collections.Counter()
    for record in _records(root, rel):
        try:
            c = to_conversation(record, FormatOptions())
        except RecordRejected as e:  # anything else fails the test
            outcome[e.reason] += 1
            continue
        outcome["ok:" + c.format] += 1
        assert len(c.trainable) == len(c.messages)
        assert all(m["role"] in ("system", "user", "assistant", "tool") for m in c.messages)
        assert all(isinstance(m["content"], str) for m in c.messages)
    assert dict(outcome) == EXPECTED[root][rel]


@pytest.mark.parametrize("root", ROOTS)
def test_missing_turns_detail(root):
    (record,) = _records(root, "edge_cases/axolotl_conversation.missingturns.json")
    assert record["conversations"][1] == {"from": "gpt", "value": ""}
    e = rejected(record)
    assert e.reason == errors.EMPTY_TURN and "message 1" in e.detail


@pytest.mark.parametrize("root", ROOTS)
def test_fastchat_exact_messages(root):
    raw = _raw_json(root, "sharegpt/fastchat_dummy_conversation.json")
    recs = _records(root, "sharegpt/fastchat_dummy_conversation.json")
    role = {"human": "user", "gpt": "assistant"}
    for rec, src in zip(recs, raw):
        c = to_conversation(rec)
        assert list(c.messages) == [{"role": role[t["from"]], "content": t["value"]}
                                    for t in src["conversations"]]
    first = to_conversation(recs[0])
    assert first.messages[0] == {"role": "user", "content": "Who are you?"}
    counts = collections.Counter(len(to_conversation(r).messages) for r in recs)
    assert counts == FACTS[root]["fastchat_turns"]


@pytest.mark.parametrize("root", ROOTS)
def test_toy_cookbook_records(root):
    recs = _records(root, "openai/openai_cookbook_toy_chat_fine_tuning.jsonl")
    c3 = to_conversation(recs[2])
    assert c3.messages == ({"role": "user", "content": "I lost my book today."},
                           {"role": "assistant", "content": recs[2]["messages"][1]["content"]})
    c4 = to_conversation(recs[3])  # system + assistant, no user: allowed here
    assert [m["role"] for m in c4.messages] == ["system", "assistant"]
    c5 = to_conversation(recs[4])
    assert c5.messages[2]["content"] == "Eat a banana!" * 2000


@pytest.mark.parametrize("root", ROOTS)
def test_alpaca_exact_messages(root):
    raw = _raw_json(root, "alpaca/axolotl_alpaca.json")
    c = to_conversation(_records(root, "alpaca/axolotl_alpaca.json")[0])
    assert c.messages == ({"role": "user", "content": raw[0]["instruction"] + "\n" + raw[0]["input"]},
                          {"role": "assistant", "content": raw[0]["output"]})
    demo = _raw_json(root, "alpaca/llamafactory_alpaca_en_demo.json")
    convs = [to_conversation(r) for r in _records(root, "alpaca/llamafactory_alpaca_en_demo.json")]
    assert sum(1 for d in demo if d["input"] == "") == FACTS[root]["alpaca_empty_input"]
    for c, d in zip(convs, demo):
        expected = d["instruction"] + ("\n" + d["input"] if d["input"] else "")
        assert c.messages == ({"role": "user", "content": expected},
                              {"role": "assistant", "content": d["output"]})


@pytest.mark.parametrize("root", ROOTS)
def test_glaive_tool_calls(root):
    raw = _raw_json(root, "tool_calling/llamafactory_glaive_toolcall_en_demo.json")
    convs = [to_conversation(r) for r in
             _records(root, "tool_calling/llamafactory_glaive_toolcall_en_demo.json")]
    assert sum(c.tools is None for c in convs) == sum(r["tools"] in ("", "[]") for r in raw) == \
        FACTS[root]["glaive_without_tools"]
    n_calls = sum(1 for r in raw for t in r["conversations"] if t["from"] == "function_call")
    assert sum(1 for c in convs for m in c.messages if m.get("tool_calls")) == n_calls
    assert sum(1 for c in convs if any(m.get("tool_calls") for m in c.messages)) == \
        FACTS[root]["glaive_records_with_calls"]
    c0 = convs[0]
    assert c0.tools[0]["name"] == "search_recipes"
    assert c0.messages[3] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "search_recipes", "arguments": {
            "ingredients": ["chicken", "bell peppers", "rice"]}}}]}
    assert c0.messages[4]["role"] == "tool"
    assert c0.messages[4]["content"] == raw[0]["conversations"][4]["value"]


@pytest.mark.parametrize("root", ROOTS)
def test_drone_double_encoded_arguments(root):
    recs = _records(root, DRONE[root])
    convs = [to_conversation(r) for r in recs]
    assert isinstance(recs[2]["messages"][2]["tool_calls"][0]["function"]["arguments"], str)
    assert json.loads(recs[2]["messages"][2]["tool_calls"][0]["function"]["arguments"]) == \
        '{"location": "current"}'  # really double-encoded in the file
    last = [c.messages[-1]["tool_calls"][0]["function"] for c in convs]
    assert last == [
        {"name": "takeoff_drone", "arguments": {"altitude": 100}},
        {"name": "takeoff_drone", "arguments": {"altitude": 100}},
        {"name": "land_drone", "arguments": {"location": "current"}},
        {"name": "land_drone", "arguments": {"location": "current"}},
        {"name": "land_drone", "arguments": {"location": "home_base"}},
    ][:len(recs)]
    assert all(c.tools == tuple(r["tools"]) for c, r in zip(convs, recs))
    assert all(c.messages[-1]["content"] == "" for c in convs)


@pytest.mark.parametrize("root", ROOTS)
def test_llamafactory_v1_parts_and_loss_weight(root):
    recs = _records(root, "openai/llamafactory_v1_sft_demo.jsonl")
    c = to_conversation(recs[0])
    assert c.messages == ({"role": "user", "content": "hi"}, {"role": "assistant", "content": (
        "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you "
        "today?")})
    assert c.trainable == (True, True)  # loss_weight 0 only affects assistant messages
    for rec in recs:
        c = to_conversation(rec)
        assert [m["content"] for m in c.messages] == [
            "".join(p["value"] for p in m["content"]) for m in rec["messages"]]


def test_llamafactory_reasoning_and_tool_call_parts():
    """LLaMA-Factory's reasoning + tool-use demo (v1 parts): reasoning parts become ``reasoning_content``, tool-call
    parts ``tool_calls`` (arguments decoded), the JSON-text tool list the record's tools."""
    recs = _records("sample", "tool_calling/llamafactory_reason_tool_use_demo.jsonl")
    calls = 0
    for rec in recs:
        c = to_conversation(rec)
        assert c.tools and c.tools == tuple(json.loads(rec["tools"]))
        for message, source in zip(c.messages, rec["messages"]):
            parts = {p["type"]: [q["value"] for q in source["content"] if q["type"] == p["type"]]
                     for p in source["content"]}
            assert message["content"] == "".join(parts.get("text", []))
            if "reasoning" in parts:
                assert message["reasoning_content"] == "".join(parts["reasoning"])
            wanted = [json.loads(v) for v in parts.get("tool_call", [])]
            got = [call["function"] for call in message.get("tool_calls") or []]
            assert got == wanted
            calls += len(got)
    assert calls == sum(p["type"] == "tool_call" for rec in recs for m in rec["messages"] for p in m["content"]) > 0


@pytest.mark.parametrize("root", ROOTS)
def test_xtuner_bare_lists(root):
    recs = _records(root, "edge_cases/xtuner_openai_sft_bare_lists.jsonl")
    c = to_conversation(recs[0])
    assert c.format == "openai"
    assert c.messages[0] == {"role": "user", "content": "Give three tips for staying healthy.\n"}
    assert c.messages[1]["content"].startswith("1.Eat a balanced diet")


@pytest.mark.parametrize("root", ROOTS)
def test_multiline_cookbook_keeps_raw_tab(root):
    convs = [to_conversation(r) for r in
             _records(root, "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl")]
    assert all([m["role"] for m in c.messages] == ["system", "user", "assistant"] for c in convs)
    assert sum("\t" in c.messages[2]["content"] for c in convs) == 1
