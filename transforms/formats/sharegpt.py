"""The ``sharegpt`` format: ``{"conversations": [{"from", "value"}, ...], "system": str, "tools": str|list}``."""
from __future__ import annotations

from typing import Any

from transforms.formats.messages import MessageDraft, MessageReader, messages_field
from transforms.formats.record_format import RecordFormat


def convert(record: Any, reader: MessageReader) -> list[MessageDraft]:
    """The record's messages."""
    return messages_field(record, reader, "conversations", "sharegpt")


def matches(record: dict, options) -> bool:
    """``auto`` picks this format for a record with a ``conversations`` field."""
    return options.key("conversations") in record


FORMAT = RecordFormat(name='sharegpt', convert=convert, matches=matches, accepts_list=True)
