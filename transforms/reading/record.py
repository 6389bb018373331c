"""What the reader yields: :class:`RawRecord`, and the counter that numbers a file's records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transforms.errors import INVALID_JSON


@dataclass(frozen=True)
class RawRecord:
    """One record of an input file, parsed or not.

    ``value`` is the parsed JSON object/array, or ``None`` when the record could not be parsed,
    in which case ``raw`` is its text and ``error`` the parse error detail. ``reason`` is the reject
    code to use for an unparseable record when it is not ``invalid_json`` (``truncated_input``,
    ``unreadable_input``, ``invalid_content``); ``None`` means ``invalid_json``.
    """

    source: str
    index: int
    value: Any
    raw: str | None = None
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class RecordCounter:
    """Hands out consecutive record indexes of one file."""

    __slots__ = ("source", "next")

    def __init__(self, source: str):
        self.source = source
        self.next = 0

    def good(self, value: Any) -> RawRecord:
        """A parsed record."""
        rec = RawRecord(self.source, self.next, value, None, None)
        self.next += 1
        return rec

    def bad(self, raw: str, error: str, reason: str | None = None) -> RawRecord:
        """An unparseable record: its text, the error, and its reject code (``None``: ``invalid_json``)."""
        rec = RawRecord(self.source, self.next, None, raw, error, None if reason == INVALID_JSON else reason)
        self.next += 1
        return rec


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed value's type (``null``, ``boolean``, ``number``, ``string``,
    ``list``, ``object``), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
