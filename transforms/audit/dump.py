"""The exact bytes of ``stats.json``, and what of it two runs must agree on."""
from __future__ import annotations

import json
from typing import Any, Mapping


def _dump(value: Any, level: int) -> str:
    """JSON with sorted keys and 2-space indent, but lists of scalars (histogram buckets, probe ids)
    on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dump(value[k], level + 1)}"
                 for k in sorted(value, key=str)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def stats_json_bytes(stats: Mapping[str, Any]) -> bytes:
    """The exact bytes of ``stats.json``: sorted keys, 2-space indent (lists of scalars on one line),
    trailing newline. Valid JSON that ``json.load`` reads back to ``stats``."""
    return (_dump(stats, 0) + "\n").encode("utf-8")


def comparable(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` without the fields that legitimately differ between the job and the command."""
    return {key: value for key, value in stats.items() if key != "computed_by"}
