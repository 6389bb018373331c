"""The ``openai`` format: ``{"messages": [{"role", "content"}, ...], "tools": [...]}``, or a bare list
of messages (xtuner). ``content`` is a string, ``null``, or a list of typed parts."""
from __future__ import annotations

from typing import Any

from transforms.formats.messages import MessageDraft, MessageReader, messages_field
from transforms.formats.record_format import RecordFormat


def convert(record: Any, reader: MessageReader) -> list[MessageDraft]:
    """The record's messages."""
    return messages_field(record, reader, "messages", "openai")


def matches(record: dict, options) -> bool:
    """``auto`` picks this format for a record with a ``messages`` field (bare lists: see the registry)."""
    return options.key("messages") in record


FORMAT = RecordFormat(name='openai', convert=convert, matches=matches, accepts_list=True)
