"""Tool calls in messages: ``tool_calls`` lists, JSON function-call text, and their ``arguments``."""
from __future__ import annotations

import json
from typing import Any

from transforms.errors import INVALID_CONTENT, RecordRejected
from transforms.formats.text import check_text, json_text, show
from transforms.reading import json_type_name


def decode_arguments(args: Any, where: str) -> dict | str:
    if args is None:
        return {}
    if isinstance(args, dict):
        return args
    if isinstance(args, str):
        value: Any = args
        for _ in range(2):  # plain JSON, or JSON double-encoded as a JSON string
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                return check_text(args, where)
            if isinstance(value, dict):
                return value
            if not isinstance(value, str):
                break
        return check_text(args, where)
    raise RecordRejected(INVALID_CONTENT, f"{where}: tool call arguments must be an object or a "
                                          f"JSON string, got a {json_type_name(args)}")


def tool_call(call: Any, where: str) -> dict:
    if not isinstance(call, dict):
        raise RecordRejected(INVALID_CONTENT, f"{where}: a tool call must be an object, got a "
                                              f"{json_type_name(call)}")
    fn = call.get("function")
    if isinstance(fn, dict):
        name, args = fn.get("name"), fn.get("arguments")
    elif fn is None:
        name, args = call.get("name"), call.get("arguments", call.get("parameters"))
    else:
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool call 'function' must be an object")
    if not isinstance(name, str) or not name.strip():
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool call without a function name")
    out: dict[str, Any] = {"type": "function",
                           "function": {"name": check_text(name, where),
                                        "arguments": decode_arguments(args, where)}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tool_calls(value: Any, where: str) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool_calls must be a list, got a "
                                              f"{json_type_name(value)}")
    return [tool_call(c, where) for c in value]


def tool_calls_from_text(text: Any, where: str) -> list[dict]:
    if isinstance(text, (dict, list)):
        parsed = text
    else:
        if not isinstance(text, str):
            raise RecordRejected(INVALID_CONTENT, f"{where}: a function call must be JSON text, got a "
                                                  f"{json_type_name(text)}")
        parsed = json_text(text, f"{where}: function call is not valid JSON: {show(text)}")
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list) or not parsed:
        raise RecordRejected(INVALID_CONTENT, f"{where}: function call must be a JSON object "
                                              f"{{\"name\", \"arguments\"}} or a list of them")
    return [tool_call(c, where) for c in parsed]
