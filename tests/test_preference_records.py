"""Preference record layouts (tokenizer-free): one logical pair written in every input layout reads back as the
same pair; implicit prompts are extracted without TRL's off-by-one; bad pairs are rejected with a reason."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats import FormatOptions
from transforms.preference.records import (
    ALPACA_RANKING,
    CHOSEN_MESSAGES,
    CONVERSATION,
    OPENAI,
    RANKING,
    TRL,
    pair_format,
    parse_kto,
    split_conversations,
)
from transforms.tasks.preference import KtoOptions, KtoTask, PreferenceOptions, PreferenceTask

DATA = Path(__file__).resolve().parent / "data"
SYSTEM = "You are terse."
QUESTION = "What is the capital of France?"
GOOD, BAD = "Paris.", "Lyon, I think."
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def parse(record, fmt="auto", **options):
    opts = PreferenceOptions(format=fmt, **options)
    return PreferenceTask.parse(record, opts, FormatOptions())


def msg(role, content):
    return {"role": role, "content": content}


def every_layout() -> dict[str, dict]:
    """The same pair (system, question, good/bad answer, tools, template variables) in every layout."""
    prompt = [msg("system", SYSTEM), msg("user", QUESTION)]
    kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    return {
        "trl_explicit": {"prompt": prompt, "chosen": [msg("assistant", GOOD)], "rejected": [msg("assistant", BAD)],
                         "tools": TOOLS, **kwargs},
        "trl_explicit_strings": {"prompt": prompt, "chosen": GOOD, "rejected": BAD, "tools": json.dumps(TOOLS),
                                 **kwargs},
        "trl_implicit": {"chosen": prompt + [msg("assistant", GOOD)], "rejected": prompt + [msg("assistant", BAD)],
                         "tools": TOOLS, **kwargs},
        "ultrafeedback": {"prompt": QUESTION, "chosen": prompt + [msg("assistant", GOOD)],
                          "rejected": prompt + [msg("assistant", BAD)], "tools": TOOLS, **kwargs},
        "ranking_sharegpt": {"conversations": [{"from": "human", "value": QUESTION}], "system": SYSTEM,
                             "chosen": {"from": "gpt", "value": GOOD}, "rejected": {"from": "gpt", "value": BAD},
                             "tools": json.dumps(TOOLS), **kwargs},
        "ranking_messages": {"messages": prompt, "chosen": msg("assistant", GOOD), "rejected": msg("assistant", BAD),
                             "tools": TOOLS, **kwargs},
        "alpaca_ranking": {"instruction": QUESTION, "input": "", "system": SYSTEM, "chosen": GOOD, "rejected": BAD,
                           "tools": TOOLS, **kwargs},
        "chosen_messages": {
            "chosen_messages": [{"role": m["role"], "content": [{"type": "text", "value": m["content"]}],
                                 "loss_weight": 0.0} for m in prompt]
            + [{"role": "assistant", "content": [{"type": "text", "value": GOOD}], "loss_weight": 1.0}],
            "rejected_messages": [{"role": m["role"], "content": [{"type": "text", "value": m["content"]}],
                                   "loss_weight": 0.0} for m in prompt]
            + [{"role": "assistant", "content": [{"type": "text", "value": BAD}], "loss_weight": 1.0}],
            "tools": TOOLS, **kwargs},
        "openai": {"input": {"messages": prompt, "tools": TOOLS}, "preferred_output": [msg("assistant", GOOD)],
                   "non_preferred_output": [msg("assistant", BAD)], **kwargs},
    }


EXPECTED_FORMAT = {"trl_explicit": TRL, "trl_explicit_strings": TRL, "trl_implicit": TRL, "ultrafeedback": TRL,
                   "ranking_sharegpt": RANKING, "ranking_messages": RANKING, "alpaca_ranking": ALPACA_RANKING,
                   "chosen_messages": CHOSEN_MESSAGES, "openai": OPENAI}


@pytest.mark.parametrize("layout", sorted(EXPECTED_FORMAT))
def test_every_layout_reads_as_the_same_pair(layout):
    record = every_layout()[layout]
    pair = parse(record)
    assert pair.format == EXPECTED_FORMAT[layout]
    assert list(pair.prompt) == [msg("system", SYSTEM), msg("user", QUESTION)]
    assert list(pair.chosen) == [msg("assistant", GOOD)] and list(pair.rejected) == [msg("assistant", BAD)]
    assert list(pair.tools) == TOOLS and dict(pair.template_kwargs) == {"enable_thinking": False}
    assert pair.texts is None
    # and the dedup key does not depend on the layout
    assert PreferenceTask.content_key(pair, None) == PreferenceTask.content_key(parse(every_layout()["openai"]), None)


def test_plain_text_pairs_follow_trl():
    pair = parse({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."})
    assert pair.texts == ("The sky is", " blue.", " green.") and not pair.prompt
    implicit = parse({"chosen": "The sky is blue.", "rejected": "The sky is green."})
    assert implicit.texts == ("The sky is", " blue.", " green.")  # the space goes with the completions (TRL)


def test_implicit_prompt_is_the_whole_common_run():
    u1, a1, u2 = msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2")
    prompt, chosen, rejected = split_conversations([u1, a1, u2, msg("assistant", "good")],
                                                   [u1, a1, u2, msg("assistant", "bad")])
    assert prompt == [u1, a1, u2] and chosen == [msg("assistant", "good")] and rejected == [msg("assistant", "bad")]
    # TRL's extract_prompt (TRL 1.16) takes one message less when one conversation continues the other; here the
    # pair is never cut wrong: it parts at a user message, which no completion starts with
    with pytest.raises(RecordRejected) as raised:
        parse({"chosen": [u1, a1], "rejected": [u1, a1, u2, msg("assistant", "more")]})
    assert raised.value.reason == errors.INVALID_CONTENT  # nothing after the shared part, then a user message
    with pytest.raises(RecordRejected) as raised:
        parse({"chosen": [u1, msg("assistant", "x"), u2], "rejected": [u1, msg("assistant", "y")]})
    assert raised.value.reason == errors.NO_ASSISTANT_TURN  # a completion that ends with a user message
    with pytest.raises(RecordRejected) as raised:
        parse({"chosen": [u1, a1, u2, msg("assistant", "a")], "rejected": [u1, a1, msg("user", "other")]})
    assert raised.value.reason == errors.INVALID_CONTENT and "user message" in raised.value.detail


def test_trl_extract_prompt_off_by_one_is_not_reproduced():
    trl = pytest.importorskip("trl.data_utils")
    u, a = msg("user", "q"), msg("assistant", "a")
    longer = [u, a, msg("user", "q2"), msg("assistant", "b")]
    extracted = trl.extract_prompt({"chosen": [u, a], "rejected": longer})
    assert extracted["prompt"] == [u]  # TRL: the shared assistant turn moved into both completions
    with pytest.raises(RecordRejected):  # here: the chosen conversation has nothing after the shared part
        parse({"chosen": [u, a], "rejected": longer})


@pytest.mark.parametrize("record,reason", [
    ({"prompt": [msg("user", "q")], "chosen": [msg("assistant", "same")], "rejected": [msg("assistant", "same")]},
     errors.IDENTICAL_PAIR),
    ({"prompt": "p", "chosen": " x", "rejected": " x"}, errors.IDENTICAL_PAIR),
    ({"chosen": [msg("user", "q"), msg("assistant", "a")], "rejected": [msg("user", "q"), msg("assistant", "a")]},
     errors.IDENTICAL_PAIR),
    ({"prompt": [msg("user", "q")], "chosen": [msg("user", "not an answer")], "rejected": [msg("assistant", "b")]},
     errors.NO_ASSISTANT_TURN),
    ({"prompt": [msg("user", "q")], "chosen": [msg("assistant", "  ")], "rejected": [msg("assistant", "b")]},
     errors.EMPTY_TURN),
    ({"question": "q", "answer": "a"}, errors.UNKNOWN_FORMAT),
    (["not", "an", "object"], errors.UNKNOWN_FORMAT),
    ({"input": "text", "preferred_output": [], "non_preferred_output": []}, errors.INVALID_CONTENT),
    ({"prompt": [msg("wizard", "q")], "chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]},
     errors.INVALID_ROLE),
])
def test_bad_pairs_are_rejected_with_a_reason(record, reason):
    with pytest.raises(RecordRejected) as raised:
        parse(record)
    assert raised.value.reason == reason


def test_field_map_role_map_and_system_prompt():
    record = {"question": [{"speaker": "asker", "text": QUESTION}], "good": [{"speaker": "bot", "text": GOOD}],
              "bad": [{"speaker": "bot", "text": BAD}]}
    options = PreferenceOptions(field_map={"prompt": "question", "chosen": "good", "rejected": "bad",
                                           "role": "speaker", "content": "text"})
    pair = PreferenceTask.parse(record, options, FormatOptions(role_map={"asker": "user", "bot": "assistant"},
                                                               system_prompt=SYSTEM))
    assert list(pair.prompt) == [msg("system", SYSTEM), msg("user", QUESTION)]
    assert list(pair.chosen) == [msg("assistant", GOOD)]
    with pytest.raises(ValueError):
        PreferenceOptions(field_map={"nonsense": "x"})


def test_detection_and_forced_format():
    layouts = every_layout()
    assert pair_format(layouts["openai"], str) == OPENAI
    with pytest.raises(RecordRejected):
        parse(layouts["openai"], fmt="ranking")


def test_kto_layouts_and_labels():
    options = KtoOptions()
    for record in ({"prompt": [msg("user", "q")], "completion": [msg("assistant", "a")], "label": True},
                   {"prompt": "q", "completion": "a", "label": False},
                   {"messages": [msg("user", "q"), msg("assistant", "a")], "label": True},
                   {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "kto_tag": 0}):
        example = KtoTask.parse(record, options, FormatOptions())
        assert example.label == bool(record.get("label", record.get("kto_tag")))
        if example.texts is None:
            assert [m["role"] for m in example.prompt] == ["user"]
            assert list(example.completion) == [msg("assistant", "a")]
            assert example.format == (TRL if "prompt" in record else CONVERSATION)
        else:
            assert example.texts == ("q", "a")
    for bad, reason in (({"messages": [msg("user", "q"), msg("assistant", "a")]}, errors.UNKNOWN_FORMAT),
                        ({"messages": [msg("user", "q"), msg("assistant", "a")], "label": "yes"},
                         errors.INVALID_CONTENT),
                        ({"messages": [msg("user", "q")], "label": True}, errors.NO_ASSISTANT_TURN)):
        with pytest.raises(RecordRejected) as raised:
            parse_kto(bad, str, "auto", FormatOptions())
        assert raised.value.reason == reason
    # the conversation layout: the trailing assistant turn is the completion, the rest the prompt
    example = parse_kto({"messages": [msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2"),
                                      msg("assistant", "a2")], "label": True}, str, "auto", FormatOptions())
    assert len(example.prompt) == 3 and list(example.completion) == [msg("assistant", "a2")]


def test_the_real_llamafactory_files_parse():
    dpo = json.loads((DATA / "llamafactory_dpo_en_demo_12.json").read_text(encoding="utf-8"))
    pairs = [parse(r) for r in dpo]
    assert {p.format for p in pairs} == {RANKING}
    assert sum(1 for p in pairs if p.prompt[0]["role"] == "system") == 3  # the records with a system message
    lines = (DATA / "llamafactory_v1_dpo_demo.jsonl").read_text(encoding="utf-8").splitlines()
    v1 = [json.loads(line) for line in lines]
    pairs = [parse(r) for r in v1]
    assert {p.format for p in pairs} == {CHOSEN_MESSAGES}
    assert all(p.chosen[0]["role"] == "assistant" and p.prompt[-1]["role"] == "user" for p in pairs)
    kto = json.loads((DATA / "llamafactory_kto_en_demo_16.json").read_text(encoding="utf-8"))
    examples = [parse_kto(r, str, "auto", FormatOptions()) for r in kto]
    assert [e.label for e in examples] == [r["label"] for r in kto]
    assert all(e.completion[-1]["content"] == r["messages"][-1]["content"] for e, r in zip(examples, kto))
