"""Turn one parsed raw record into a canonical :class:`Conversation` (Beam-free).

Supported input formats (``FormatOptions.format``; ``auto`` decides per record from its keys,
after applying ``field_map``):

* ``openai``: ``{"messages": [{"role", "content"}, ...], "tools": [...]}``, or a bare list of
  messages (xtuner). ``content`` is a string, ``null``, or a list of typed parts.
* ``sharegpt``: ``{"conversations": [{"from", "value"}, ...], "system": str, "tools": str|list}``.
* ``alpaca``: ``instruction`` / ``input`` / ``output`` (+ ``system``, ``history``).
* ``prompt_completion``: ``prompt`` / ``completion``, each a string or a list of messages.

Any message list accepts items written either as ``role``/``content`` or ``from``/``value``.
``auto`` detection order: bare list -> openai; ``messages`` -> openai; ``conversations`` ->
sharegpt; ``prompt`` and ``completion`` -> prompt_completion; ``instruction`` or ``output`` ->
alpaca; otherwise ``unknown_format``.

Decisions on ambiguous input (all rejections raise :class:`RecordRejected`):

* Roles are looked up in ``role_map`` (exact), then in the defaults (exact, then lower-cased):
  ``human/user -> user``, ``gpt/assistant/chatgpt/bard/bing/model -> assistant``,
  ``system -> system``, ``tool/observation/function -> tool``, ``function_call`` -> an assistant
  message whose text is a JSON tool call (``{"name", "arguments"}`` or a list of them) turned into
  ``tool_calls`` with content ``""``. ``role_map`` values must be ``system``, ``user``,
  ``assistant``, ``tool`` or ``function_call`` (that last one: "this source role carries a JSON
  tool call"). ``developer`` is not mapped by default (use ``--role-map developer=system``).
* Content parts: ``text`` parts (``text`` or LLaMA-Factory ``value`` key; plain strings too) are
  joined with ``""``; LLaMA-Factory v1 ``reasoning`` parts go to ``reasoning_content`` and
  ``tool_call`` parts (JSON ``{"name","arguments"}``) to ``tool_calls``; image/video/audio parts
  are rejected (``invalid_content``: they need the vision pipeline), and so is a record with a
  non-empty top-level ``images``/``image``/``videos``/``video``/``audios``/``audio`` field (its
  ``<image>`` placeholders must not be trained as literal text); other part types are rejected.
* Tool-call ``arguments`` given as a JSON string are decoded into an object when they decode to
  one, also when double-encoded (a JSON string holding a JSON object); otherwise the string is
  kept as is. ``id`` of a tool call is kept when it is a string.
* ``tools``: a list of schemas, or a JSON string of one ("", "[]", "null" mean none); a single
  schema object is wrapped in a list; schemas are passed through unchanged. Empty -> ``None``.
* A record-level ``system`` field (any format) becomes the first message. If the conversation
  already starts with a system message the two must agree (identical text is kept once),
  otherwise the record is rejected as ambiguous. ``FormatOptions.system_prompt`` is inserted
  only when the record has no system message at all.
* Validation: no messages -> ``empty_conversation``; no assistant message -> ``no_assistant_turn``;
  a user/assistant message whose text is empty or whitespace and has no tool calls ->
  ``empty_turn`` (naming the message index in the source list); system/tool messages may be
  empty. ``null`` content is ``""``. Content that is not a string / parts list, or a string with
  lone surrogates, -> ``invalid_content``. Text is never stripped or otherwise altered. A
  conversation may end with a user message. Role order is not checked here (templates do that).
* ``trainable[i]`` is ``False`` for an assistant message marked ``loss_weight: 0``,
  ``weight: 0`` or ``train: false`` and, for ``prompt_completion``, for assistant messages inside
  the prompt (only the completion is a training target); ``True`` otherwise.
* Alpaca: user text = ``instruction + "\\n" + input`` when both are non-blank, otherwise
  whichever is non-blank; ``history`` is a list of ``[prompt, response]`` pairs placed before.

Images (only with ``FormatOptions(images=True)``, i.e. a vision job; without it everything above
is unchanged and image parts / image fields are rejected as described):

* Image parts ``{"type": "image", "image": REF}``, ``{"type": "image_url", "image_url": {"url": REF}}``
  (or a plain string), LLaMA-Factory v1 ``{"type": "image_url", "value": REF}``,
  ``{"type": "input_image", "image_url": REF}`` put the image at their position in the text.
  A part without a reference (``{"type": "image"}``, TRL style) stands for the next entry of the
  record's image list, like an ``<image>`` tag.
* ``images`` (LLaMA-Factory, a list) or ``image`` (LLaVA, one reference or a list) hold the
  references that the ``<image>`` tags in the text stand for, in order (never both fields).
  Tags anywhere in any message; when the text has no tag at all, the images go before the
  first user message's text as ``<image>...<image>\\n``. Any other count difference ->
  ``image_count_mismatch``. ``video``/``audio`` parts and fields stay ``invalid_content``.
* In the resulting :class:`Conversation` every image position is the text ``<image>`` and
  ``Conversation.images`` lists the references in the same order (paths, data URIs, or
  ``{"bytes", "path"}`` objects; :mod:`transforms.images` resolves them).
* ``vqa``: ``{"image": REF, "question": str, "answer": str}`` -> one user turn (the image
  before the question) and one assistant turn; ``auto`` picks it for records with ``question``
  and ``answer`` (vision jobs only). torchtune's ``{"input", "output", "image"}`` is Alpaca with an
  image (``auto``) or ``--format vqa --field-map question=input,answer=output``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

from transforms.errors import (
    EMPTY_CONVERSATION,
    EMPTY_TURN,
    IMAGE_COUNT_MISMATCH,
    INVALID_CONTENT,
    INVALID_ROLE,
    NO_ASSISTANT_TURN,
    UNKNOWN_FORMAT,
    RecordRejected,
)
from transforms.reading import json_type_name

__all__ = [
    "FORMATS", "VISION_FORMATS", "ALL_FORMATS", "VISION_FIELDS", "IMAGE_TAG", "ROLES", "TOP_LEVEL_FIELDS", "MESSAGE_FIELDS", "DEFAULT_ROLE_MAP",
    "Conversation", "FormatOptions", "detect_format", "to_conversation", "parse_mapping_option",
]

FORMATS = ("auto", "openai", "sharegpt", "alpaca", "prompt_completion")
VISION_FORMATS = ("vqa",)  # image-QA triples (vision jobs)
ALL_FORMATS = FORMATS + VISION_FORMATS
ROLES = ("system", "user", "assistant", "tool")
_FUNCTION_CALL = "function_call"  # pseudo-role: assistant message whose text is a JSON tool call
TOP_LEVEL_FIELDS = ("messages", "conversations", "instruction", "input", "output", "system",
                    "history", "prompt", "completion", "tools")
MESSAGE_FIELDS = ("role", "content", "from", "value")
VISION_FIELDS = ("images", "image", "question", "answer")  # read only by vision jobs / --format vqa
IMAGE_TAG = "<image>"

DEFAULT_ROLE_MAP: Mapping[str, str] = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system",
    "tool": "tool", "observation": "tool", "function": "tool",
    "function_call": _FUNCTION_CALL,
}

_NON_TEXT_PARTS = frozenset({"image", "image_url", "input_image", "video", "video_url",
                             "audio", "audio_url", "input_audio", "file", "input_file"})
_MEDIA_FIELDS = ("images", "image", "videos", "video", "audios", "audio")
_IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})
_TYPED_IMAGE = "\x00chatshards-image\x00"  # internal marker of a typed image part while parsing
_IMAGE_MARKERS = re.compile(re.escape(IMAGE_TAG) + "|" + re.escape(_TYPED_IMAGE))
# References of typed image parts met while converting one record (vision jobs only).
_TYPED_REFS: ContextVar[list | None] = ContextVar("chatshards_typed_image_refs", default=None)
_SURROGATE = re.compile("[\ud800-\udfff]")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # message fields holding a turn's reasoning
_INLINE_REASONING = re.compile(r"\A\s*<think>(.*?)</think>\s*", re.DOTALL)
TEMPLATE_KWARGS_FIELD = "chat_template_kwargs"
_RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt"})
_MAX_SHOWN = 60


# --------------------------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class Conversation:
    """A canonical chat: messages, optional tool schemas, the detected format, trainable flags."""

    messages: tuple[dict, ...]
    tools: tuple[dict, ...] | None
    format: str
    trainable: tuple[bool, ...]
    images: tuple = ()
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)


class FrozenMap(Mapping):
    """A small immutable, hashable and picklable str -> str mapping (sorted by key)."""

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = tuple(sorted((k, v) for k, v in pairs))
        self._dict = dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._dict!r})"

    def __reduce__(self):
        return (FrozenMap, (self._items,))


def _as_frozen_map(value: Any, option: str) -> FrozenMap:
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, str):
        raise ValueError(f"{option} must be a mapping; parse CLI text with parse_mapping_option()")
    try:
        pairs = list(value.items()) if isinstance(value, Mapping) else [tuple(p) for p in value]
    except TypeError:
        raise ValueError(f"{option} must be a mapping of str to str, got {type(value).__name__}")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
            raise ValueError(f"{option}: every key and value must be a non-empty string, got {pair!r}")
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{option}: duplicate keys in {pairs!r}")
    return FrozenMap(pairs)


@dataclass(frozen=True, kw_only=True)
class FormatOptions:
    """How to read records; validated on construction (``ValueError`` on bad configuration).

    ``field_map``: canonical field name -> the name used in the dataset (top-level fields
    ``messages, conversations, instruction, input, output, system, history, prompt, completion,
    tools`` and message fields ``role, content, from, value``).
    ``role_map``: source role -> canonical role (extends/overrides :data:`DEFAULT_ROLE_MAP`).
    ``system_prompt``: system message for records that have none.
    ``images``: accept images (a vision job); ``field_map`` may then also rename ``images, image,
    question, answer``.
    """

    format: str = "auto"
    field_map: Mapping[str, str] = field(default_factory=FrozenMap)
    role_map: Mapping[str, str] = field(default_factory=FrozenMap)
    system_prompt: str | None = None
    images: bool = False

    def __post_init__(self) -> None:
        if self.format not in ALL_FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {', '.join(ALL_FORMATS)}")
        fmap = _as_frozen_map(self.field_map, "field_map")
        for key in fmap:
            if key not in TOP_LEVEL_FIELDS and key not in MESSAGE_FIELDS and key not in VISION_FIELDS:
                raise ValueError(
                    f"field_map: unknown field {key!r}; known fields: "
                    f"{', '.join(TOP_LEVEL_FIELDS + MESSAGE_FIELDS + VISION_FIELDS)}")
        for group in (TOP_LEVEL_FIELDS, MESSAGE_FIELDS, VISION_FIELDS):
            used: dict[str, str] = {}
            for canon in group:
                src = fmap.get(canon, canon)
                if src in used:
                    raise ValueError(f"field_map: {used[src]!r} and {canon!r} would both read "
                                     f"the dataset field {src!r}")
                used[src] = canon
        rmap = _as_frozen_map(self.role_map, "role_map")
        for src, dst in rmap.items():
            if dst not in ROLES and dst != _FUNCTION_CALL:
                raise ValueError(f"role_map: {src!r} -> {dst!r}: target must be one of "
                                 f"{', '.join(ROLES + (_FUNCTION_CALL,))}")
        if self.system_prompt is not None and (
                not isinstance(self.system_prompt, str) or not self.system_prompt.strip()):
            raise ValueError("system_prompt must be a non-empty string or None")
        object.__setattr__(self, "field_map", fmap)
        object.__setattr__(self, "role_map", rmap)

    def key(self, canonical: str) -> str:
        """The dataset's name for a canonical field."""
        return self.field_map.get(canonical, canonical)

    def to_json(self) -> dict:
        data = {
            "format": self.format,
            "field_map": dict(self.field_map),
            "role_map": dict(self.role_map),
            "system_prompt": self.system_prompt,
        }
        if self.images:  # only vision jobs carry the key (text-only fingerprints are unchanged)
            data["images"] = True
        return data


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


# --------------------------------------------------------------------------------------------
# detection


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


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
        if options.format in ("openai", "sharegpt"):
            return options.format
        raise RecordRejected(UNKNOWN_FORMAT, f"record is a list (bare messages) but the format "
                                             f"is {options.format!r}")
    if not isinstance(record, dict):
        raise RecordRejected(UNKNOWN_FORMAT, f"record is a {json_type_name(record)}, expected a JSON "
                                             f"object or a list of messages")
    if options.format != "auto":
        return options.format
    k = options.key
    if k("messages") in record:
        return "openai"
    if k("conversations") in record:
        return "sharegpt"
    if k("prompt") in record and k("completion") in record:
        return "prompt_completion"
    if k("instruction") in record or k("output") in record:
        return "alpaca"
    if options.images and k("question") in record and k("answer") in record:
        return "vqa"
    keys = sorted(map(str, record))
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    vqa = ", question+answer" if options.images else ""
    raise RecordRejected(UNKNOWN_FORMAT, f"cannot tell the format from the keys [{shown}]; expected "
                                         f"messages, conversations, prompt+completion{vqa} or "
                                         f"instruction/output (see --format and --field-map)")


# --------------------------------------------------------------------------------------------
# message normalization


class _Msg:
    """A message being built: canonical dict, trainable flag, source index."""

    __slots__ = ("message", "trainable", "index")

    def __init__(self, message: dict, trainable: bool, index: int):
        self.message = message
        self.trainable = trainable
        self.index = index


def split_inline_reasoning(content: str) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of an assistant text that starts with ``<think>...</think>``, else
    ``(None, content)``. Newlines around the reasoning and whitespace before the answer are dropped (what
    reasoning templates do when they render the two parts)."""
    match = _INLINE_REASONING.match(content) if "<think>" in content else None
    if match is None:
        return None, content
    return match.group(1).strip("\n"), content[match.end():]


def _check_text(text: str, where: str) -> str:
    if _SURROGATE.search(text):
        raise RecordRejected(INVALID_CONTENT, f"{where} contains a lone surrogate (not valid Unicode)")
    return text


def _decode_arguments(args: Any, where: str) -> dict | str:
    if args is None:
        return {}
    if isinstance(args, dict):
        return args
    if isinstance(args, str):
        value: Any = args
        for _ in range(2):  # plain JSON, or JSON double-encoded as a JSON string
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                return _check_text(args, where)
            if isinstance(value, dict):
                return value
            if not isinstance(value, str):
                break
        return _check_text(args, where)
    raise RecordRejected(INVALID_CONTENT, f"{where}: tool call arguments must be an object or a "
                                          f"JSON string, got a {json_type_name(args)}")


def _tool_call(call: Any, where: str) -> dict:
    if not isinstance(call, dict):
        raise RecordRejected(INVALID_CONTENT, f"{where}: a tool call must be an object, got a "
                                              f"{json_type_name(call)}")
    fn = call.get("function")
    if isinstance(fn, dict):
        name, args = fn.get("name"), fn.get("arguments")
    elif fn is None:
        name, args = call.get("name"), call.get("arguments", call.get("parameters"))
    else:
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool call 'function' must be an object")
    if not isinstance(name, str) or not name.strip():
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool call without a function name")
    out: dict[str, Any] = {"type": "function",
                           "function": {"name": _check_text(name, where),
                                        "arguments": _decode_arguments(args, where)}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _tool_calls(value: Any, where: str) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordRejected(INVALID_CONTENT, f"{where}: tool_calls must be a list, got a "
                                              f"{json_type_name(value)}")
    return [_tool_call(c, where) for c in value]


def _tool_calls_from_text(text: Any, where: str) -> list[dict]:
    if isinstance(text, (dict, list)):
        parsed = text
    else:
        if not isinstance(text, str):
            raise RecordRejected(INVALID_CONTENT, f"{where}: a function call must be JSON text, got a "
                                                  f"{json_type_name(text)}")
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise RecordRejected(INVALID_CONTENT, f"{where}: function call is not valid JSON: "
                                                  f"{_show(text)}") from None
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list) or not parsed:
        raise RecordRejected(INVALID_CONTENT, f"{where}: function call must be a JSON object "
                                              f"{{\"name\", \"arguments\"}} or a list of them")
    return [_tool_call(c, where) for c in parsed]


def _content(value: Any, where: str) -> tuple[str, str | None, list[dict]]:
    """Normalize content -> (text, reasoning from parts or None, tool calls from parts)."""
    if value is None:
        return "", None, []
    if isinstance(value, str):
        return _check_text(value, where), None, []
    if not isinstance(value, list):
        raise RecordRejected(INVALID_CONTENT, f"{where}: content must be a string or a list of "
                                              f"parts, got a {json_type_name(value)}")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for j, part in enumerate(value):
        pwhere = f"{where} part {j}"
        if isinstance(part, str):
            texts.append(_check_text(part, pwhere))
            continue
        if not isinstance(part, dict):
            raise RecordRejected(INVALID_CONTENT, f"{pwhere} is a {json_type_name(part)}, expected an "
                                                  f"object with a 'type'")
        ptype = part.get("type", "text" if "text" in part else None)
        typed_refs = _TYPED_REFS.get()
        if ptype in _IMAGE_PARTS and typed_refs is not None:
            ref = _image_part_ref(part)
            if ref is None:  # TRL style: the image is the next entry of the record's image list
                texts.append(IMAGE_TAG)
            else:
                typed_refs.append(ref)
                texts.append(_TYPED_IMAGE)
            continue
        if ptype in _NON_TEXT_PARTS:
            raise RecordRejected(INVALID_CONTENT, f"{pwhere}: {ptype} parts need the vision "
                                                  f"pipeline, which this text pipeline does not run")
        if ptype not in ("text", "reasoning", "tool_call"):
            raise RecordRejected(INVALID_CONTENT, f"{pwhere}: unsupported content part type "
                                                  f"{_show(ptype)}")
        payload = part["text"] if "text" in part else part.get("value")
        if ptype == "tool_call":
            calls.extend(_tool_calls_from_text(payload, pwhere))
            continue
        if not isinstance(payload, str):
            raise RecordRejected(INVALID_CONTENT, f"{pwhere}: {ptype} part text must be a string, "
                                                  f"got a {json_type_name(payload)}")
        (texts if ptype == "text" else reasoning).append(_check_text(payload, pwhere))
    return "".join(texts), ("".join(reasoning) if reasoning else None), calls


def _image_part_ref(part: dict) -> Any:
    """The image reference of a typed image part, or ``None`` when it has none."""
    for key in ("image", "image_url", "url", "path", "value"):
        ref = part.get(key)
        if isinstance(ref, dict) and not ("bytes" in ref or "path" in ref):
            ref = ref.get("url")
        if ref not in (None, "", {}):
            return ref
    return None


def _zero_weight(item: dict) -> bool:
    for key in ("loss_weight", "weight"):
        w = item.get(key)
        if isinstance(w, (int, float)) and not isinstance(w, bool) and w == 0:
            return True
        if w is False:
            return True
    return item.get("train") is False


def _resolve_role(source_role: Any, options: FormatOptions, index: int) -> str:
    if not isinstance(source_role, str):
        raise RecordRejected(INVALID_ROLE, f"message {index}: role must be a string, got "
                                           f"{_show(source_role)}")
    role = options.role_map.get(source_role)
    if role is None:
        role = DEFAULT_ROLE_MAP.get(source_role)
    if role is None:
        role = DEFAULT_ROLE_MAP.get(source_role.strip().lower())
    if role is None:
        raise RecordRejected(INVALID_ROLE, f"message {index}: unknown role {_show(source_role)}; "
                                           f"map it with --role-map {source_role}=<"
                                           f"{'|'.join(ROLES)}>")
    return role


def _message(item: Any, index: int, options: FormatOptions) -> _Msg:
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
    role = _resolve_role(source_role, options, index)
    where = f"message {index} ({role if role != _FUNCTION_CALL else source_role})"
    msg: dict[str, Any] = {}
    if role == _FUNCTION_CALL:
        role = "assistant"
        calls = _tool_calls_from_text(content, where)
        text, reasoning = "", None
    else:
        text, reasoning, calls = _content(content, where)
        calls = calls + _tool_calls(item.get("tool_calls"), where)
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
            raise RecordRejected(INVALID_CONTENT, f"{where}: {key!r} must be a string, got a {json_type_name(value)}")
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
        msg["reasoning_content"] = _check_text(reasoning, where)
    trainable = not (role == "assistant" and _zero_weight(item))
    return _Msg(msg, trainable, index)


def _message_list(value: Any, options: FormatOptions, field_name: str) -> list[_Msg]:
    if isinstance(value, str):  # a JSON-encoded list (some exports store it that way)
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise RecordRejected(INVALID_CONTENT, f"{field_name!r} is a string that is not a JSON "
                                                  f"list of messages") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordRejected(INVALID_CONTENT, f"{field_name!r} must be a list of messages, got a "
                                              f"{json_type_name(value)}")
    return [_message(item, i, options) for i, item in enumerate(value)]


def _tools(value: Any, field_name: str) -> tuple[dict, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise RecordRejected(INVALID_CONTENT, f"{field_name!r} is not valid JSON: "
                                                  f"{_show(value)}") from None
        if value is None:
            return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RecordRejected(INVALID_CONTENT, f"{field_name!r} must be a list of tool schema "
                                              f"objects")
    return tuple(value) if value else None


def _optional_str(record: dict, name: str, options: FormatOptions) -> str | None:
    value = record.get(options.key(name))
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordRejected(INVALID_CONTENT, f"{options.key(name)!r} must be a string, got a "
                                              f"{json_type_name(value)}")
    return _check_text(value, repr(options.key(name)))


# --------------------------------------------------------------------------------------------
# per-format builders


def _messages_field(record: Any, options: FormatOptions, field_name: str, format_name: str) -> list[_Msg]:
    """The message list of a record: the record itself when it is a bare list, else ``field_name``."""
    if isinstance(record, list):
        return _message_list(record, options, "record")
    key = options.key(field_name)
    if key not in record:
        raise RecordRejected(UNKNOWN_FORMAT, f"no {key!r} field for the {format_name} format (see "
                                             f"--field-map)")
    return _message_list(record[key], options, key)


def _openai(record: Any, options: FormatOptions) -> list[_Msg]:
    return _messages_field(record, options, "messages", "openai")


def _sharegpt(record: Any, options: FormatOptions) -> list[_Msg]:
    return _messages_field(record, options, "conversations", "sharegpt")


def _turn_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordRejected(INVALID_CONTENT, f"{where} must be a string, got a {json_type_name(value)}")
    return _check_text(value, where)


def _alpaca(record: Any, options: FormatOptions) -> list[_Msg]:
    k = options.key
    instruction = _turn_text(record.get(k("instruction")), repr(k("instruction")))
    extra = _turn_text(record.get(k("input")), repr(k("input")))
    parts = [t for t in (instruction, extra) if t.strip()]
    prompt = "\n".join(parts) if parts else instruction + extra
    msgs: list[_Msg] = []
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
            msgs.append(_Msg({"role": "user", "content": _turn_text(pair[0], where)}, True,
                             len(msgs)))
            msgs.append(_Msg({"role": "assistant", "content": _turn_text(pair[1], where)}, True,
                             len(msgs)))
    msgs.append(_Msg({"role": "user", "content": prompt}, True, len(msgs)))
    if k("output") in record:
        output = record[k("output")]
        if isinstance(output, list):
            raise RecordRejected(INVALID_CONTENT, f"{k('output')!r} must be a string, got a list "
                                                  f"(ranking/preference data is not SFT data)")
        msgs.append(_Msg({"role": "assistant",
                          "content": _turn_text(output, repr(k("output")))}, True, len(msgs)))
    return msgs


def _prompt_completion(record: Any, options: FormatOptions) -> list[_Msg]:
    k = options.key
    msgs: list[_Msg] = []
    prompt = record.get(k("prompt"))
    if isinstance(prompt, str):
        msgs.append(_Msg({"role": "user", "content": _check_text(prompt, repr(k("prompt")))},
                         True, 0))
    elif isinstance(prompt, list):
        msgs.extend(_message_list(prompt, options, k("prompt")))
        for m in msgs:  # only the completion is a training target
            if m.message["role"] == "assistant":
                m.trainable = False
    elif prompt is not None:
        raise RecordRejected(INVALID_CONTENT, f"{k('prompt')!r} must be a string or a list of "
                                              f"messages, got a {json_type_name(prompt)}")
    completion = record.get(k("completion"))
    if isinstance(completion, str):
        msgs.append(_Msg({"role": "assistant",
                          "content": _check_text(completion, repr(k("completion")))},
                         True, len(msgs)))
    elif isinstance(completion, list):
        offset = len(msgs)
        for m in _message_list(completion, options, k("completion")):
            m.index += offset
            msgs.append(m)
    elif completion is not None:
        raise RecordRejected(INVALID_CONTENT, f"{k('completion')!r} must be a string or a list of "
                                              f"messages, got a {json_type_name(completion)}")
    return msgs


def _vqa(record: Any, options: FormatOptions) -> list[_Msg]:
    k = options.key
    if not isinstance(record, dict):
        raise RecordRejected(UNKNOWN_FORMAT, "a vqa record must be a JSON object")
    for name in ("question", "answer"):
        if k(name) not in record:
            raise RecordRejected(UNKNOWN_FORMAT, f"no {k(name)!r} field for the vqa format (see --field-map)")
    answer = record[k("answer")]
    if isinstance(answer, list):
        raise RecordRejected(INVALID_CONTENT, f"{k('answer')!r} must be a string, got a list (pick one "
                                              f"answer per record)")
    return [_Msg({"role": "user", "content": _turn_text(record[k("question")], repr(k("question")))}, True, 0),
            _Msg({"role": "assistant", "content": _turn_text(answer, repr(k("answer")))}, True, 1)]


_BUILDERS = {
    "openai": _openai,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "vqa": _vqa,
}


def _record_images(record: Any, options: FormatOptions) -> list:
    """The references of the record's ``images``/``image`` field (vision jobs)."""
    if not isinstance(record, dict):
        return []
    found = []
    for name in ("images", "image"):
        value = record.get(options.key(name))
        if value in (None, "", [], {}):
            continue
        found.append((options.key(name), value if isinstance(value, list) else [value]))
    if len(found) > 1:
        raise RecordRejected(INVALID_CONTENT, f"record has both {found[0][0]!r} and {found[1][0]!r}; "
                                              f"keep one image list")
    return list(found[0][1]) if found else []


def _place_images(msgs: list[_Msg], listed: list, typed: list) -> tuple:
    """Resolve image positions: tags consume ``listed`` in order, typed parts carry their own refs.

    Every position becomes the text ``<image>``; returns the references in text order.
    """
    tags = sum(m.message["content"].count(IMAGE_TAG) for m in msgs)
    if tags == 0 and listed:
        first_user = next((m for m in msgs if m.message["role"] == "user"), None)
        if first_user is None:
            raise RecordRejected(IMAGE_COUNT_MISMATCH, f"{len(listed)} image(s) but no user message to put "
                                                       f"them in")
        first_user.message["content"] = IMAGE_TAG * len(listed) + "\n" + first_user.message["content"]
        tags = len(listed)
    if tags != len(listed):
        raise RecordRejected(IMAGE_COUNT_MISMATCH, f"{tags} {IMAGE_TAG} tag(s) in the text but {len(listed)} "
                                                   f"image(s) in the record's image list")
    pending_listed = iter(listed)
    pending_typed = iter(typed)
    ordered: list = []

    def take(match: re.Match) -> str:
        ordered.append(next(pending_listed) if match.group(0) == IMAGE_TAG else next(pending_typed))
        return IMAGE_TAG

    for m in msgs:
        content = m.message["content"]
        if IMAGE_TAG in content or _TYPED_IMAGE in content:
            m.message["content"] = _IMAGE_MARKERS.sub(take, content)
    return tuple(ordered)


def to_conversation(record: Any, options: FormatOptions | None = None) -> Conversation:
    """Normalize one parsed record; raises :class:`RecordRejected` when it cannot be used."""
    options = options or FormatOptions()
    fmt = detect_format(record, options)
    if fmt == "vqa" and not options.images:
        raise RecordRejected(INVALID_CONTENT, "vqa records carry images and need a vision job (--processor)")
    if isinstance(record, dict):
        for media in _MEDIA_FIELDS[2:] if options.images else _MEDIA_FIELDS:
            if record.get(media) not in (None, "", [], {}):
                what = "video/audio is not supported" if options.images else (
                    "images/video/audio need the vision pipeline, which this text pipeline does not run")
                raise RecordRejected(INVALID_CONTENT, f"record has {media!r}: {what}")
    images: tuple = ()
    if options.images:
        listed = _record_images(record, options)
        typed: list = []
        token = _TYPED_REFS.set(typed)
        try:
            msgs = _BUILDERS[fmt](record, options)
        finally:
            _TYPED_REFS.reset(token)
        images = _place_images(msgs, listed, typed)
    else:
        msgs = _BUILDERS[fmt](record, options)

    tools = None
    system = None
    if isinstance(record, dict):
        tools = _tools(record.get(options.key("tools")), options.key("tools"))
        system = _optional_str(record, "system", options)
    if system is not None and system.strip():
        if msgs and msgs[0].message["role"] == "system":
            if msgs[0].message["content"] != system:
                raise RecordRejected(
                    INVALID_CONTENT, f"record has both a {options.key('system')!r} field and a "
                                     f"different system message; keep only one")
        else:
            msgs.insert(0, _Msg({"role": "system", "content": system}, True, -1))
    if options.system_prompt is not None and not any(
            m.message["role"] == "system" for m in msgs):
        msgs.insert(0, _Msg({"role": "system", "content": options.system_prompt}, True, -1))

    template_kwargs: dict[str, Any] = {}
    if isinstance(record, dict) and record.get(TEMPLATE_KWARGS_FIELD) is not None:
        value = record[TEMPLATE_KWARGS_FIELD]
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise RecordRejected(INVALID_CONTENT, f"{TEMPLATE_KWARGS_FIELD!r} must be an object with string keys")
        reserved = sorted(_RESERVED_TEMPLATE_KWARGS & set(value))
        if reserved:
            raise RecordRejected(INVALID_CONTENT, f"{TEMPLATE_KWARGS_FIELD!r} may not set {', '.join(reserved)}")
        template_kwargs = dict(value)

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
