"""The ``vqa`` format (vision jobs): ``{"image": REF, "question": str, "answer": str}`` -> one user turn
(the image before the question) and one assistant turn."""
from __future__ import annotations

from typing import Any

from transforms.errors import INVALID_CONTENT, UNKNOWN_FORMAT, RecordRejected
from transforms.formats.messages import MessageDraft, MessageReader
from transforms.formats.record_format import RecordFormat
from transforms.formats.text import turn_text


def convert(record: Any, reader: MessageReader) -> list[MessageDraft]:
    """One user turn (the question) and one assistant turn (the answer)."""
    k = reader.options.key
    if not isinstance(record, dict):
        raise RecordRejected(UNKNOWN_FORMAT, "a vqa record must be a JSON object")
    for name in ("question", "answer"):
        if k(name) not in record:
            raise RecordRejected(UNKNOWN_FORMAT, f"no {k(name)!r} field for the vqa format (see --field-map)")
    answer = record[k("answer")]
    if isinstance(answer, list):
        raise RecordRejected(INVALID_CONTENT, f"{k('answer')!r} must be a string, got a list (pick one "
                                              f"answer per record)")
    return [MessageDraft({"role": "user", "content": turn_text(record[k("question")], repr(k("question")))}, True, 0),
            MessageDraft({"role": "assistant", "content": turn_text(answer, repr(k("answer")))}, True, 1)]


def matches(record: dict, options) -> bool:
    """``auto`` picks this format in vision jobs for a record with ``question`` and ``answer``."""
    return options.images and options.key("question") in record and options.key("answer") in record


FORMAT = RecordFormat(name='vqa', convert=convert, matches=matches, vision_only=True)
