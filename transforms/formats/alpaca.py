"""The ``alpaca`` format: ``instruction`` / ``input`` / ``output`` (+ ``system``, ``history``)."""
from __future__ import annotations

from typing import Any

from transforms.errors import INVALID_CONTENT, RecordRejected
from transforms.formats.messages import MessageDraft, MessageReader
from transforms.formats.record_format import RecordFormat
from transforms.formats.text import turn_text


def convert(record: Any, reader: MessageReader) -> list[MessageDraft]:
    """User text = ``instruction + "\\n" + input`` (or whichever is non-blank); ``history`` pairs go before."""
    k = reader.options.key
    instruction = turn_text(record.get(k("instruction")), repr(k("instruction")))
    extra = turn_text(record.get(k("input")), repr(k("input")))
    parts = [t for t in (instruction, extra) if t.strip()]
    prompt = "\n".join(parts) if parts else instruction + extra
    msgs: list[MessageDraft] = []
    history = record.get(k("history"))
    if history is not None:
        if not isinstance(history, list):
            raise RecordRejected(INVALID_CONTENT, f"{k('history')!r} must be a list of [prompt, "
                                                  f"response] pairs")
        for j, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RecordRejected(INVALID_CONTENT, f"{k('history')!r} item {j} must be a "
                                                      f"[prompt, response] pair")
            where = f"{k('history')!r} item {j}"
            msgs.append(MessageDraft({"role": "user", "content": turn_text(pair[0], where)}, True,
                             len(msgs)))
            msgs.append(MessageDraft({"role": "assistant", "content": turn_text(pair[1], where)}, True,
                             len(msgs)))
    msgs.append(MessageDraft({"role": "user", "content": prompt}, True, len(msgs)))
    if k("output") in record:
        output = record[k("output")]
        if isinstance(output, list):
            raise RecordRejected(INVALID_CONTENT, f"{k('output')!r} must be a string, got a list "
                                                  f"(ranking/preference data is not SFT data)")
        msgs.append(MessageDraft({"role": "assistant",
                          "content": turn_text(output, repr(k("output")))}, True, len(msgs)))
    return msgs


def matches(record: dict, options) -> bool:
    """``auto`` picks this format for a record with ``instruction`` or ``output``."""
    return options.key("instruction") in record or options.key("output") in record


FORMAT = RecordFormat(name='alpaca', convert=convert, matches=matches)
