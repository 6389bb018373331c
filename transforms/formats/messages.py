"""Message normalisation shared by the formats: roles, content parts, tool calls, reasoning, weights.

:class:`MessageReader` reads the messages of **one** record with the job's options; in a vision
job it also collects the references of typed image parts in the order met (``typed_images``),
which :mod:`transforms.formats.image_positions` then places. A new reader per record.
"""
from __future__ import annotations

from typing import Any

from transforms.errors import INVALID_CONTENT, INVALID_ROLE, UNKNOWN_FORMAT, RecordRejected
from transforms.formats.conversation import IMAGE_TAG
from transforms.formats.fields import DEFAULT_ROLE_MAP, FUNCTION_CALL, REASONING_FIELDS, ROLES
from transforms.formats.image_positions import IMAGE_PARTS, NON_TEXT_PARTS, TYPED_IMAGE, image_part_ref
from transforms.formats.text import check_text, json_text, show, split_inline_reasoning
from transforms.formats.tool_calls import tool_calls, tool_calls_from_text
from transforms.reading import json_type_name


class MessageDraft:
    """A message being built: canonical dict, trainable flag, source index."""

    __slots__ = ("message", "trainable", "index")

    def __init__(self, message: dict, trainable: bool, index: int):
        self.message = message
        self.trainable = trainable
        self.index = index


def zero_weight(item: dict) -> bool:
    for key in ("loss_weight", "weight"):
        w = item.get(key)
        if isinstance(w, (int, float)) and not isinstance(w, bool) and w == 0:
            return True
        if w is False:
            return True
    return item.get("train") is False


def resolve_role(source_role: Any, options, index: int) -> str:
    if not isinstance(source_role, str):
        raise RecordRejected(INVALID_ROLE, f"message {index}: role must be a string, got "
                                           f"{show(source_role)}")
    role = options.role_map.get(source_role)
    if role is None:
        role = DEFAULT_ROLE_MAP.get(source_role)
    if role is None:
        role = DEFAULT_ROLE_MAP.get(source_role.strip().lower())
    if role is None:
        raise RecordRejected(INVALID_ROLE, f"message {index}: unknown role {show(source_role)}; "
                                           f"map it with --role-map {source_role}=<"
                                           f"{'|'.join(ROLES)}>")
    return role


class MessageReader:
    """Reads one record's messages with ``options`` (a :class:`~transforms.formats.FormatOptions`).

    Attributes:
        options: the format options.
        typed_images: vision jobs: references of typed image parts met so far, in order (each
            part's text position holds a private marker until the positions are placed); ``None``
            in text jobs, where image parts are rejected.
    """

    def __init__(self, options):
        self.options = options
        self.typed_images: list | None = [] if options.images else None

    def content(self, value: Any, where: str) -> tuple[str, str | None, list[dict]]:
        """Normalize content -> (text, reasoning from parts or None, tool calls from parts)."""
        if value is None:
            return "", None, []
        if isinstance(value, str):
            return check_text(value, where), None, []
        if not isinstance(value, list):
            raise RecordRejected(INVALID_CONTENT, f"{where}: content must be a string or a list of "
                                                  f"parts, got a {json_type_name(value)}")
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict] = []
        for j, part in enumerate(value):
            pwhere = f"{where} part {j}"
            if isinstance(part, str):
                texts.append(check_text(part, pwhere))
                continue
            if not isinstance(part, dict):
                raise RecordRejected(INVALID_CONTENT, f"{pwhere} is a {json_type_name(part)}, expected an "
                                                      f"object with a 'type'")
            ptype = part.get("type", "text" if "text" in part else None)
            typed_refs = self.typed_images
            if ptype in IMAGE_PARTS and typed_refs is not None:
                ref = image_part_ref(part)
                if ref is None:  # TRL style: the image is the next entry of the record's image list
                    texts.append(IMAGE_TAG)
                else:
                    typed_refs.append(ref)
                    texts.append(TYPED_IMAGE)
                continue
            if ptype in NON_TEXT_PARTS:
                raise RecordRejected(INVALID_CONTENT, f"{pwhere}: {ptype} parts need the vision "
                                                      f"pipeline, which this text pipeline does not run")
            if ptype not in ("text", "reasoning", "tool_call"):
                raise RecordRejected(INVALID_CONTENT, f"{pwhere}: unsupported content part type "
                                                      f"{show(ptype)}")
            payload = part["text"] if "text" in part else part.get("value")
            if ptype == "tool_call":
                calls.extend(tool_calls_from_text(payload, pwhere))
                continue
            if not isinstance(payload, str):
                raise RecordRejected(INVALID_CONTENT, f"{pwhere}: {ptype} part text must be a string, "
                                                      f"got a {json_type_name(payload)}")
            (texts if ptype == "text" else reasoning).append(check_text(payload, pwhere))
        return "".join(texts), ("".join(reasoning) if reasoning else None), calls

    def message(self, item: Any, index: int) -> MessageDraft:
        """One message of the record, normalised (raises :class:`RecordRejected`)."""
        options = self.options
        if not isinstance(item, dict):
            raise RecordRejected(INVALID_CONTENT, f"message {index} is a {json_type_name(item)}, expected "
                                                  f"an object")
        k = options.key
        if k("role") in item:
            source_role, content = item[k("role")], item.get(k("content"))
        elif k("from") in item:
            source_role, content = item[k("from")], item.get(k("value"))
        else:
            raise RecordRejected(INVALID_ROLE, f"message {index} has no {k('role')!r} or {k('from')!r} "
                                               f"field (see --field-map)")
        role = resolve_role(source_role, options, index)
        where = f"message {index} ({role if role != FUNCTION_CALL else source_role})"
        msg: dict[str, Any] = {}
        if role == FUNCTION_CALL:
            role = "assistant"
            calls = tool_calls_from_text(content, where)
            text, reasoning = "", None
        else:
            text, reasoning, calls = self.content(content, where)
            calls = calls + tool_calls(item.get("tool_calls"), where)
        msg["role"] = role
        msg["content"] = text
        if calls:
            if role != "assistant":
                raise RecordRejected(INVALID_CONTENT, f"{where}: only assistant messages can carry "
                                                      f"tool calls")
            msg["tool_calls"] = calls
        for key in ("name", "tool_call_id"):
            if isinstance(item.get(key), str) and item[key]:
                msg[key] = item[key]
        for key in REASONING_FIELDS:
            value = item.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise RecordRejected(INVALID_CONTENT,
                                     f"{where}: {key!r} must be a string, got a {json_type_name(value)}")
            if reasoning is not None and reasoning != value:
                raise RecordRejected(INVALID_CONTENT, f"{where}: two different reasonings ({key!r} and another "
                                                      f"reasoning field or part); keep one")
            reasoning = value
        if role == "assistant":
            inline, answer = split_inline_reasoning(msg["content"])
            if inline is not None:
                if reasoning is not None:
                    raise RecordRejected(INVALID_CONTENT, f"{where}: reasoning given both as a field and as "
                                                          f"<think>...</think> in the content; keep one")
                reasoning, msg["content"] = inline, answer
        if reasoning is not None and reasoning.strip():
            if role != "assistant":
                raise RecordRejected(INVALID_CONTENT, f"{where}: only assistant messages can carry reasoning")
            msg["reasoning_content"] = check_text(reasoning, where)
        trainable = not (role == "assistant" and zero_weight(item))
        return MessageDraft(msg, trainable, index)

    def message_list(self, value: Any, field_name: str) -> list[MessageDraft]:
        """A list of messages (or a JSON string of one); ``None`` is empty."""
        if isinstance(value, str):  # a JSON-encoded list (some exports store it that way)
            value = json_text(value, f"{field_name!r} is a string that is not a JSON list of messages")
        if value is None:
            return []
        if not isinstance(value, list):
            raise RecordRejected(INVALID_CONTENT, f"{field_name!r} must be a list of messages, got a "
                                                  f"{json_type_name(value)}")
        return [self.message(item, i) for i, item in enumerate(value)]


def record_tools(value: Any, field_name: str) -> tuple[dict, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        value = json_text(value, f"{field_name!r} is not valid JSON: {show(value)}")
        if value is None:
            return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RecordRejected(INVALID_CONTENT, f"{field_name!r} must be a list of tool schema "
                                              f"objects")
    return tuple(value) if value else None


def optional_str(record: dict, name: str, options) -> str | None:
    value = record.get(options.key(name))
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordRejected(INVALID_CONTENT, f"{options.key(name)!r} must be a string, got a "
                                              f"{json_type_name(value)}")
    return check_text(value, repr(options.key(name)))


def messages_field(record: Any, reader: MessageReader, field_name: str, format_name: str) -> list[MessageDraft]:
    """The message list of a record: the record itself when it is a bare list, else ``field_name``."""
    if isinstance(record, list):
        return reader.message_list(record, "record")
    key = reader.options.key(field_name)
    if key not in record:
        raise RecordRejected(UNKNOWN_FORMAT, f"no {key!r} field for the {format_name} format (see "
                                             f"--field-map)")
    return reader.message_list(record[key], key)
