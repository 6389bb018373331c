"""Raw record -> :class:`~transforms.formats.conversation.Conversation`: detection, conversion by the
format's module, then the checks and fields every format shares (system field and prompt, tools,
template variables, images, validation). See :mod:`transforms.formats` for the decisions."""
from __future__ import annotations

from typing import Any

from transforms.errors import (
    EMPTY_CONVERSATION,
    EMPTY_TURN,
    INVALID_CONTENT,
    NO_ASSISTANT_TURN,
    UNKNOWN_FORMAT,
    RecordRejected,
)
from transforms.formats.conversation import Conversation
from transforms.formats.fields import TEMPLATE_KWARGS_FIELD
from transforms.formats.image_positions import MEDIA_FIELDS, place_images, record_images
from transforms.formats.messages import MessageDraft, MessageReader, optional_str, record_tools
from transforms.formats.options import FormatOptions
from transforms.formats.registry import DETECTION_ORDER, REGISTRY
from transforms.reading import json_type_name

_RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


def detect_format(record: Any, options: FormatOptions | None = None) -> str:
    """The concrete format of ``record`` (``options.format`` unless it is ``auto``)."""
    options = options or FormatOptions()
    if isinstance(record, list):
        if options.format == "auto":
            first = record[0] if record else None
            if isinstance(first, dict) and options.key("role") not in first \
                    and options.key("from") in first:
                return "sharegpt"  # a bare list written with from/value
            return "openai"
        if REGISTRY[options.format].accepts_list:
            return options.format
        raise RecordRejected(UNKNOWN_FORMAT, f"record is a list (bare messages) but the format "
                                             f"is {options.format!r}")
    if not isinstance(record, dict):
        raise RecordRejected(UNKNOWN_FORMAT, f"record is a {json_type_name(record)}, expected a JSON "
                                             f"object or a list of messages")
    if options.format != "auto":
        return options.format
    for name in DETECTION_ORDER:
        if REGISTRY[name].matches(record, options):
            return name
    keys = sorted(map(str, record))
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    vqa = ", question+answer" if options.images else ""
    raise RecordRejected(UNKNOWN_FORMAT, f"cannot tell the format from the keys [{shown}]; expected "
                                         f"messages, conversations, prompt+completion{vqa} or "
                                         f"instruction/output (see --format and --field-map)")


def record_template_kwargs(record: Any) -> dict[str, Any]:
    """The record's own template variables (its ``chat_template_kwargs`` object; ``{}`` without one)."""
    if not isinstance(record, dict) or record.get(TEMPLATE_KWARGS_FIELD) is None:
        return {}
    value = record[TEMPLATE_KWARGS_FIELD]
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise RecordRejected(INVALID_CONTENT, f"{TEMPLATE_KWARGS_FIELD!r} must be an object with string keys")
    reserved = sorted(_RESERVED_TEMPLATE_KWARGS & set(value))
    if reserved:
        raise RecordRejected(INVALID_CONTENT, f"{TEMPLATE_KWARGS_FIELD!r} may not set {', '.join(reserved)}")
    return dict(value)


def to_conversation(record: Any, options: FormatOptions | None = None) -> Conversation:
    """Normalize one parsed record; raises :class:`RecordRejected` when it cannot be used."""
    options = options or FormatOptions()
    fmt = detect_format(record, options)
    record_format = REGISTRY[fmt]
    if record_format.vision_only and not options.images:
        raise RecordRejected(INVALID_CONTENT, f"{fmt} records carry images and need a vision job (--processor)")
    if isinstance(record, dict):
        for media in MEDIA_FIELDS[2:] if options.images else MEDIA_FIELDS:
            if record.get(media) not in (None, "", [], {}):
                what = "video/audio is not supported" if options.images else (
                    "images/video/audio need the vision pipeline, which this text pipeline does not run")
                raise RecordRejected(INVALID_CONTENT, f"record has {media!r}: {what}")
    images: tuple = ()
    reader = MessageReader(options)
    if options.images:
        listed = record_images(record, options)
        msgs = record_format.convert(record, reader)
        images = place_images(msgs, listed, reader.typed_images)
    else:
        msgs = record_format.convert(record, reader)

    tools = None
    system = None
    if isinstance(record, dict):
        tools = record_tools(record.get(options.key("tools")), options.key("tools"))
        system = optional_str(record, "system", options)
    if system is not None and system.strip():
        if msgs and msgs[0].message["role"] == "system":
            if msgs[0].message["content"] != system:
                raise RecordRejected(
                    INVALID_CONTENT, f"record has both a {options.key('system')!r} field and a "
                                     f"different system message; keep only one")
        else:
            msgs.insert(0, MessageDraft({"role": "system", "content": system}, True, -1))
    if options.system_prompt is not None and not any(
            m.message["role"] == "system" for m in msgs):
        msgs.insert(0, MessageDraft({"role": "system", "content": options.system_prompt}, True, -1))

    template_kwargs = record_template_kwargs(record)

    if not msgs:
        raise RecordRejected(EMPTY_CONVERSATION, "the record has no messages")
    if not any(m.message["role"] == "assistant" for m in msgs):
        raise RecordRejected(NO_ASSISTANT_TURN, "the record has no assistant message")
    for m in msgs:
        role = m.message["role"]
        if role in ("user", "assistant") and not m.message["content"].strip() \
                and not m.message.get("tool_calls"):
            raise RecordRejected(EMPTY_TURN, f"message {m.index} ({role}) is empty")
    return Conversation(
        messages=tuple(m.message for m in msgs),
        tools=tools,
        format=fmt,
        trainable=tuple(m.trainable for m in msgs),
        images=images,
        template_kwargs=template_kwargs,
    )
