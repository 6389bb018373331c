"""Record formats: turn one parsed raw record into a canonical :class:`Conversation` (Beam-free).

Package map: :mod:`~transforms.formats.registry` (the formats by name, ``auto`` detection order), one
module per format (:mod:`~transforms.formats.openai`, :mod:`~transforms.formats.sharegpt`,
:mod:`~transforms.formats.alpaca`, :mod:`~transforms.formats.prompt_completion`,
:mod:`~transforms.formats.vqa`), :mod:`~transforms.formats.options` (``FormatOptions``),
:mod:`~transforms.formats.cli_text` (``--field-map``/``--role-map`` text),
:mod:`~transforms.formats.messages` (roles, content parts, reasoning, weights),
:mod:`~transforms.formats.tool_calls`, :mod:`~transforms.formats.image_positions` (vision jobs) and
:mod:`~transforms.formats.convert` (:func:`to_conversation`, the checks all formats share).

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

from transforms.formats.cli_text import parse_mapping_option
from transforms.formats.conversation import IMAGE_TAG, Conversation
from transforms.formats.convert import detect_format, to_conversation
from transforms.formats.fields import DEFAULT_ROLE_MAP, MESSAGE_FIELDS, ROLES, TOP_LEVEL_FIELDS, VISION_FIELDS
from transforms.formats.options import FormatOptions
from transforms.formats.registry import ALL_FORMATS, FORMATS, VISION_FORMATS

__all__ = [
    "FORMATS", "VISION_FORMATS", "ALL_FORMATS", "VISION_FIELDS", "IMAGE_TAG", "ROLES", "TOP_LEVEL_FIELDS",
    "MESSAGE_FIELDS", "DEFAULT_ROLE_MAP", "Conversation", "FormatOptions", "detect_format", "to_conversation",
    "parse_mapping_option",
]
