"""Text checks shared by the formats: lone surrogates, short value display, inline reasoning."""
from __future__ import annotations

import json
import re
from typing import Any

from transforms.errors import INVALID_CONTENT, RecordRejected
from transforms.reading import json_type_name

_SURROGATE = re.compile("[\ud800-\udfff]")
_INLINE_REASONING = re.compile(r"\A\s*<think>(.*?)</think>\s*", re.DOTALL)
_MAX_SHOWN = 60


def show(value: Any) -> str:
    """``repr(value)``, cut to a readable length (rejection details)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def split_inline_reasoning(content: str) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of an assistant text that starts with ``<think>...</think>``, else
    ``(None, content)``. Newlines around the reasoning and whitespace before the answer are dropped (what
    reasoning templates do when they render the two parts)."""
    match = _INLINE_REASONING.match(content) if "<think>" in content else None
    if match is None:
        return None, content
    return match.group(1).strip("\n"), content[match.end():]


def check_text(text: str, where: str) -> str:
    if _SURROGATE.search(text):
        raise RecordRejected(INVALID_CONTENT, f"{where} contains a lone surrogate (not valid Unicode)")
    return text


def turn_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordRejected(INVALID_CONTENT, f"{where} must be a string, got a {json_type_name(value)}")
    return check_text(value, where)


def json_text(text: str, detail: str) -> Any:
    """``text`` decoded as JSON; a record whose field holds text that is not JSON (or nests too deep) is
    rejected as ``invalid_content`` with ``detail``."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise RecordRejected(INVALID_CONTENT, detail) from None
