"""Command-line text for format options: ``--field-map`` / ``--role-map`` mappings."""
from __future__ import annotations

import json


def parse_mapping_option(text: str) -> dict[str, str]:
    """Parse a CLI mapping: ``"a=b,c=d"`` or a JSON object ``'{"a": "b"}'``.

    Whitespace around keys and values is ignored; empty items (``"a=b,"``) are skipped.
    Raises ``ValueError`` on malformed text, empty keys/values or a repeated key.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON mapping {text!r}: {exc.msg}") from None
        if not isinstance(obj, dict) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip()
                for k, v in obj.items()):
            raise ValueError(f"JSON mapping must map non-empty strings to non-empty strings: {text!r}")
        return {k.strip(): v.strip() for k, v in obj.items()}
    result: dict[str, str] = {}
    for item in stripped.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"malformed mapping item {item.strip()!r} in {text!r}: expected key=value")
        key, value = (x.strip() for x in item.split("=", 1))
        if not key or not value:
            raise ValueError(f"malformed mapping item {item.strip()!r} in {text!r}: empty key or value")
        if key in result:
            raise ValueError(f"key {key!r} given twice in {text!r}")
        result[key] = value
    return result
