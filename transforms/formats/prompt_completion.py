"""The ``prompt_completion`` format: ``prompt`` / ``completion``, each a string or a list of messages;
only the completion is trained."""
from __future__ import annotations

from typing import Any

from transforms.errors import INVALID_CONTENT, RecordRejected
from transforms.formats.messages import MessageDraft, MessageReader
from transforms.formats.record_format import RecordFormat
from transforms.formats.text import check_text
from transforms.reading import json_type_name


def convert(record: Any, reader: MessageReader) -> list[MessageDraft]:
    """Prompt messages (assistant ones untrained) then the completion."""
    k = reader.options.key
    msgs: list[MessageDraft] = []
    prompt = record.get(k("prompt"))
    if isinstance(prompt, str):
        msgs.append(MessageDraft({"role": "user", "content": check_text(prompt, repr(k("prompt")))},
                         True, 0))
    elif isinstance(prompt, list):
        msgs.extend(reader.message_list(prompt, k("prompt")))
        for m in msgs:  # only the completion is a training target
            if m.message["role"] == "assistant":
                m.trainable = False
    elif prompt is not None:
        raise RecordRejected(INVALID_CONTENT, f"{k('prompt')!r} must be a string or a list of "
                                              f"messages, got a {json_type_name(prompt)}")
    completion = record.get(k("completion"))
    if isinstance(completion, str):
        msgs.append(MessageDraft({"role": "assistant",
                          "content": check_text(completion, repr(k("completion")))},
                         True, len(msgs)))
    elif isinstance(completion, list):
        offset = len(msgs)
        for m in reader.message_list(completion, k("completion")):
            m.index += offset
            msgs.append(m)
    elif completion is not None:
        raise RecordRejected(INVALID_CONTENT, f"{k('completion')!r} must be a string or a list of "
                                              f"messages, got a {json_type_name(completion)}")
    return msgs


def matches(record: dict, options) -> bool:
    """``auto`` picks this format for a record with both ``prompt`` and ``completion``."""
    return options.key("prompt") in record and options.key("completion") in record


FORMAT = RecordFormat(name='prompt_completion', convert=convert, matches=matches)
