"""Preference records -> examples (tokenizer-free): :class:`PreferencePair` (DPO and relatives) and
:class:`KtoExample` (unpaired feedback).

Pair layouts (``--format``; ``auto`` decides per record from its fields, after ``--field-map``):

* ``trl``: TRL's standard formats. Explicit prompt ``{"prompt", "chosen", "rejected"}``, each a message
  list or a string; implicit prompt ``{"chosen", "rejected"}`` (two whole conversations: the prompt is
  their longest common run of messages). A string prompt with message-list completions whose first
  message is not the assistant's (UltraFeedback's layout: the prompt repeated as text) reads the
  completions as whole conversations, as TRL's ``maybe_extract_prompt`` does. All three strings: a
  plain-text pair (no chat template; see :class:`PreferencePair`).
* ``ranking``: LLaMA-Factory's ShareGPT ranking layout ``{"conversations": [...], "chosen": {message},
  "rejected": {message}}`` (``messages`` instead of ``conversations`` too), with its ``system`` and
  ``tools`` fields.
* ``alpaca_ranking``: LLaMA-Factory's Alpaca ranking layout ``{"instruction", "input", "chosen",
  "rejected"}`` (strings; ``system``, ``history``).
* ``chosen_messages``: LLaMA-Factory v1 ``{"chosen_messages": [...], "rejected_messages": [...]}`` (whole
  conversations; content as typed parts; the prompt is their common run of messages).
* ``openai``: OpenAI's preference fine-tuning JSONL ``{"input": {"messages", "tools"},
  "preferred_output": [...], "non_preferred_output": [...]}``.

KTO layouts: ``trl`` (``{"prompt", "completion", "label"}``, strings or message lists, TRL's unpaired
format) and ``conversation`` (``{"messages"|"conversations": [...], "label"|"kto_tag": bool}``: the
completion is the conversation's trailing assistant message(s), LLaMA-Factory's ``kto_tag``).

Messages go through the chat formats' :class:`~transforms.formats.messages.MessageReader` (roles,
``from``/``value``, typed parts, reasoning, tool calls, ``--role-map``); ``tools`` and a record's
``chat_template_kwargs`` work as for chat records, ``--system-prompt`` fills records without a system
message. Checks (a :class:`~transforms.errors.RecordRejected` each): a completion starts and ends with an
assistant message (``no_assistant_turn``), has no empty assistant turn (``empty_turn``), chosen and
rejected are not the same (``identical_pair``), two whole conversations part at an assistant message
(``invalid_content``: two conversations that part at a user message are two prompts, not a pair).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats.convert import record_template_kwargs
from transforms.formats.messages import MessageReader, optional_str, record_tools
from transforms.formats.options import FormatOptions
from transforms.formats.text import turn_text
from transforms.reading.record import json_type_name
from transforms.shard_format import canonical_json

TRL, RANKING, ALPACA_RANKING, CHOSEN_MESSAGES, OPENAI = "trl", "ranking", "alpaca_ranking", "chosen_messages", "openai"
PAIR_FORMATS = ("auto", TRL, RANKING, ALPACA_RANKING, CHOSEN_MESSAGES, OPENAI)
CONVERSATION = "conversation"
KTO_FORMATS = ("auto", TRL, CONVERSATION)
#: canonical top-level fields (``--field-map canonical=field``); message fields (role, content, from, value)
#: are renamed for the message reader
PAIR_FIELDS = ("prompt", "chosen", "rejected", "messages", "conversations", "instruction", "input", "history",
               "chosen_messages", "rejected_messages", "preferred_output", "non_preferred_output", "system", "tools")
KTO_FIELDS = ("prompt", "completion", "messages", "conversations", "label", "kto_tag", "system", "tools")
MESSAGE_FIELDS = ("role", "content", "from", "value")


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair.

    Attributes:
        prompt: canonical messages before the completions (``role``/``content`` plus tool and reasoning fields).
        chosen, rejected: the completions: message lists that start and end with an assistant message.
        tools: tool schemas of the record, or ``None``.
        template_kwargs: the record's ``chat_template_kwargs``.
        format: the layout read (one of ``PAIR_FORMATS`` but ``auto``).
        texts: ``(prompt, chosen, rejected)`` of a plain-text pair (TRL's non-conversational format: no chat
            template; the EOS token is appended to completions without it), else ``None`` (messages empty).
    """

    prompt: tuple[dict, ...]
    chosen: tuple[dict, ...]
    rejected: tuple[dict, ...]
    tools: tuple[dict, ...] | None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    format: str = TRL
    texts: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class KtoExample:
    """One unpaired example: ``prompt`` and ``completion`` messages (or ``texts = (prompt, completion)`` for a
    plain-text record), the record's tools and template variables, and ``label`` (desirable or not)."""

    prompt: tuple[dict, ...]
    completion: tuple[dict, ...]
    label: bool
    tools: tuple[dict, ...] | None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    format: str = TRL
    texts: tuple[str, str] | None = None


# ---------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------
def message_options(format_options: FormatOptions | None, field_map: Mapping[str, str]) -> FormatOptions:
    """The message reader's options: the job's role map and system prompt, the message fields of ``field_map``."""
    base = format_options or FormatOptions()
    renamed = {k: v for k, v in field_map.items() if k in MESSAGE_FIELDS}
    if not renamed:
        return base
    return FormatOptions(field_map=renamed, role_map=base.role_map, system_prompt=base.system_prompt)


class _Record:
    """One record's fields under the task's field map, read with one message reader."""

    def __init__(self, value: Any, key: Callable[[str], str], format_options: FormatOptions):
        if not isinstance(value, dict):
            raise RecordRejected(errors.UNKNOWN_FORMAT, f"record is a {json_type_name(value)}, expected a JSON object")
        self.value = value
        self.key = key
        self.reader = MessageReader(format_options)
        self.system_prompt = format_options.system_prompt

    def has(self, name: str) -> bool:
        return self.key(name) in self.value

    def get(self, name: str) -> Any:
        return self.value.get(self.key(name))

    def messages(self, name: str, value: Any = None) -> list[dict]:
        value = self.get(name) if value is None else value
        return [draft.message for draft in self.reader.message_list(value, self.key(name))]

    def message(self, name: str) -> dict:
        value = self.get(name)
        if isinstance(value, list) and len(value) == 1:  # a one-message list for a message object
            value = value[0]
        return self.reader.message(value, 0).message

    def text(self, name: str) -> str:
        return turn_text(self.get(name), repr(self.key(name)))

    def tools(self, value: Any = None) -> tuple[dict, ...] | None:
        return record_tools(self.get("tools") if value is None else value, self.key("tools"))

    def with_system(self, messages: list[dict]) -> list[dict]:
        """``messages`` with the record's ``system`` field (or ``--system-prompt``) first, as for chat records."""
        system = optional_str(self.value, "system", _KeyOptions(self.key))
        if system is not None and system.strip():
            if messages and messages[0]["role"] == "system":
                if messages[0]["content"] != system:
                    raise RecordRejected(errors.INVALID_CONTENT, f"record has both a {self.key('system')!r} field "
                                                                 "and a different system message; keep only one")
            else:
                messages = [{"role": "system", "content": system}, *messages]
        if self.system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return messages


class _KeyOptions:
    """The ``options.key`` view :func:`~transforms.formats.messages.optional_str` reads."""

    def __init__(self, key):
        self.key = key


def _check_completion(messages: list[dict], what: str) -> None:
    if not messages:
        raise RecordRejected(errors.NO_ASSISTANT_TURN, f"the {what} completion has no message")
    if messages[0]["role"] != "assistant":
        raise RecordRejected(errors.NO_ASSISTANT_TURN, f"the {what} completion starts with a {messages[0]['role']} "
                                                       "message, not the assistant's")
    if messages[-1]["role"] != "assistant":
        raise RecordRejected(errors.NO_ASSISTANT_TURN, f"the {what} completion ends with a {messages[-1]['role']} "
                                                       "message: nothing the model generates follows it")
    for k, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip() and not message.get("tool_calls") \
                and not message.get("reasoning_content"):
            raise RecordRejected(errors.EMPTY_TURN, f"the {what} completion's message {k} (assistant) is empty")


def _common_run(a: list[dict], b: list[dict]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def split_conversations(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """``(prompt, chosen completion, rejected completion)`` of two whole conversations: the prompt is their
    longest common run of messages (never more: TRL's ``extract_prompt`` took one message less when one
    conversation was a prefix of the other). They must part at an assistant message."""
    n = _common_run(chosen, rejected)
    if n == len(chosen) and n == len(rejected):
        raise RecordRejected(errors.IDENTICAL_PAIR, "the chosen and rejected conversations are the same")
    for what, messages in (("chosen", chosen), ("rejected", rejected)):
        if n < len(messages) and messages[n]["role"] != "assistant":
            raise RecordRejected(errors.INVALID_CONTENT, f"the chosen and rejected conversations part at message {n}, "
                                                         f"a {messages[n]['role']} message in the {what} one: a "
                                                         "completion starts with the assistant's turn")
    return chosen[:n], chosen[n:], rejected[n:]


def _pair(record: _Record, prompt: list[dict], chosen: list[dict], rejected: list[dict], fmt: str,
          tools=None) -> PreferencePair:
    _check_completion(chosen, "chosen")
    _check_completion(rejected, "rejected")
    if chosen == rejected:
        raise RecordRejected(errors.IDENTICAL_PAIR, "the chosen and rejected completions are the same")
    return PreferencePair(prompt=tuple(record.with_system(prompt)), chosen=tuple(chosen), rejected=tuple(rejected),
                          tools=record.tools() if tools is None else tools,
                          template_kwargs=record_template_kwargs(record.value), format=fmt)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value) and bool(value)


# ---------------------------------------------------------------------------------------------------------
# pairs
# ---------------------------------------------------------------------------------------------------------
def pair_format(value: Any, key: Callable[[str], str], fmt: str = "auto") -> str:
    """The layout of a pair record (``fmt`` unless it is ``auto``)."""
    if not isinstance(value, dict):
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record is a {json_type_name(value)}, expected a JSON object")
    if fmt != "auto":
        return fmt
    has = lambda name: key(name) in value  # noqa: E731
    if has("preferred_output") and has("non_preferred_output"):
        return OPENAI
    if has("chosen_messages") and has("rejected_messages"):
        return CHOSEN_MESSAGES
    if has("chosen") and has("rejected"):
        chosen = value[key("chosen")]
        if (has("conversations") or has("messages")) and isinstance(chosen, dict):
            return RANKING
        if has("instruction"):
            return ALPACA_RANKING
        return TRL
    keys = sorted(map(str, value))
    raise RecordRejected(errors.UNKNOWN_FORMAT, f"cannot tell the preference layout from the keys "
                                                f"[{', '.join(keys[:12])}]; expected prompt/chosen/rejected, "
                                                "conversations + chosen/rejected, chosen_messages/rejected_messages "
                                                "or input/preferred_output/non_preferred_output (see --field-map)")


def _trl_pair(record: _Record) -> PreferencePair:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    prompt = record.get("prompt") if record.has("prompt") else None
    if isinstance(chosen, str) and isinstance(rejected, str) and (prompt is None or isinstance(prompt, str)):
        texts = (record.text("prompt") if prompt is not None else "", record.text("chosen"), record.text("rejected"))
        if prompt is None:  # implicit prompt in text: the longest common prefix (ending before a space)
            n = 0
            while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
                n += 1
            if n and chosen[n - 1] == " ":
                n -= 1
            texts = (chosen[:n], chosen[n:], rejected[n:])
        if texts[1] == texts[2]:
            raise RecordRejected(errors.IDENTICAL_PAIR, "the chosen and rejected texts are the same")
        if not texts[1].strip() or not texts[2].strip():
            raise RecordRejected(errors.EMPTY_TURN, "a completion text is empty")
        return PreferencePair(prompt=(), chosen=(), rejected=(), tools=None, format=TRL, texts=texts)
    chosen_m = record.messages("chosen") if not isinstance(chosen, str) else \
        [{"role": "assistant", "content": record.text("chosen")}]
    rejected_m = record.messages("rejected") if not isinstance(rejected, str) else \
        [{"role": "assistant", "content": record.text("rejected")}]
    whole = chosen_m and rejected_m and chosen_m[0]["role"] != "assistant" and rejected_m[0]["role"] != "assistant"
    if prompt is None or (isinstance(prompt, str) and whole):
        prompt_m, chosen_m, rejected_m = split_conversations(chosen_m, rejected_m)
    elif isinstance(prompt, str):
        prompt_m = [{"role": "user", "content": record.text("prompt")}]
    else:
        prompt_m = record.messages("prompt")
    return _pair(record, prompt_m, chosen_m, rejected_m, TRL)


def _ranking_pair(record: _Record) -> PreferencePair:
    name = "conversations" if record.has("conversations") else "messages"
    prompt = record.messages(name)
    return _pair(record, prompt, [record.message("chosen")], [record.message("rejected")], RANKING)


def _alpaca_ranking_pair(record: _Record) -> PreferencePair:
    instruction, extra = record.text("instruction"), record.text("input")
    parts = [t for t in (instruction, extra) if t.strip()]
    prompt: list[dict] = []
    history = record.get("history")
    if history is not None:
        if not isinstance(history, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in history):
            raise RecordRejected(errors.INVALID_CONTENT, f"{record.key('history')!r} must be a list of [prompt, "
                                                         "response] pairs")
        for j, (question, answer) in enumerate(history):
            where = f"{record.key('history')!r} item {j}"
            prompt += [{"role": "user", "content": turn_text(question, where)},
                       {"role": "assistant", "content": turn_text(answer, where)}]
    prompt.append({"role": "user", "content": "\n".join(parts) if parts else instruction + extra})
    return _pair(record, prompt, [{"role": "assistant", "content": record.text("chosen")}],
                 [{"role": "assistant", "content": record.text("rejected")}], ALPACA_RANKING)


def _chosen_messages_pair(record: _Record) -> PreferencePair:
    prompt, chosen, rejected = split_conversations(record.messages("chosen_messages"),
                                                   record.messages("rejected_messages"))
    return _pair(record, prompt, chosen, rejected, CHOSEN_MESSAGES)


def _openai_pair(record: _Record) -> PreferencePair:
    inputs = record.get("input")
    if not isinstance(inputs, dict):
        raise RecordRejected(errors.INVALID_CONTENT, f"{record.key('input')!r} must be an object with 'messages', "
                                                     f"got a {json_type_name(inputs)}")
    prompt = record.messages("input", inputs.get("messages"))
    tools = record.tools(inputs.get("tools")) if inputs.get("tools") is not None else record.tools()
    return _pair(record, prompt, record.messages("preferred_output"), record.messages("non_preferred_output"), OPENAI,
                 tools=tools)


_PAIR_READERS = {TRL: _trl_pair, RANKING: _ranking_pair, ALPACA_RANKING: _alpaca_ranking_pair,
                 CHOSEN_MESSAGES: _chosen_messages_pair, OPENAI: _openai_pair}


def parse_pair(value: Any, key: Callable[[str], str], fmt: str, format_options: FormatOptions) -> PreferencePair:
    """One pair record -> :class:`PreferencePair` (raises :class:`RecordRejected`)."""
    layout = pair_format(value, key, fmt)
    return _PAIR_READERS[layout](_Record(value, key, format_options))


# ---------------------------------------------------------------------------------------------------------
# unpaired (KTO)
# ---------------------------------------------------------------------------------------------------------
def kto_format(value: Any, key: Callable[[str], str], fmt: str = "auto") -> str:
    """The layout of an unpaired record (``fmt`` unless it is ``auto``)."""
    if not isinstance(value, dict):
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record is a {json_type_name(value)}, expected a JSON object")
    if fmt != "auto":
        return fmt
    if key("prompt") in value and key("completion") in value:
        return TRL
    if key("messages") in value or key("conversations") in value:
        return CONVERSATION
    keys = sorted(map(str, value))
    raise RecordRejected(errors.UNKNOWN_FORMAT, f"cannot tell the KTO layout from the keys [{', '.join(keys[:12])}]; "
                                                "expected prompt/completion/label or messages|conversations + "
                                                "label|kto_tag (see --field-map)")


def _label(record: _Record) -> bool:
    name = "label" if record.has("label") else "kto_tag"
    if not record.has(name):
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record has no {record.key('label')!r} or "
                                                    f"{record.key('kto_tag')!r} field (the desirability label)")
    value = record.get(name)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RecordRejected(errors.INVALID_CONTENT, f"{record.key(name)!r} must be true or false, got "
                                                 f"{json_type_name(value)} {value!r}"[:200])


def parse_kto(value: Any, key: Callable[[str], str], fmt: str, format_options: FormatOptions) -> KtoExample:
    """One unpaired record -> :class:`KtoExample` (raises :class:`RecordRejected`)."""
    layout = kto_format(value, key, fmt)
    record = _Record(value, key, format_options)
    label = _label(record)
    kwargs = record_template_kwargs(record.value)
    if layout == TRL:
        prompt, completion = record.get("prompt"), record.get("completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            texts = (record.text("prompt"), record.text("completion"))
            if not texts[1].strip():
                raise RecordRejected(errors.EMPTY_TURN, "the completion text is empty")
            return KtoExample(prompt=(), completion=(), label=label, tools=None, format=TRL, texts=texts)
        prompt_m = [{"role": "user", "content": record.text("prompt")}] if isinstance(prompt, str) else \
            record.messages("prompt")
        completion_m = [{"role": "assistant", "content": record.text("completion")}] \
            if isinstance(completion, str) else record.messages("completion")
    else:
        messages = record.messages("conversations" if record.has("conversations") else "messages")
        cut = len(messages)
        while cut and messages[cut - 1]["role"] == "assistant":
            cut -= 1
        prompt_m, completion_m = messages[:cut], messages[cut:]
    _check_completion(completion_m, "KTO")
    return KtoExample(prompt=tuple(record.with_system(prompt_m)), completion=tuple(completion_m), label=label,
                      tools=record.tools(), template_kwargs=kwargs, format=layout)


# ---------------------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------------------
def _normalized(messages) -> list:
    out = []
    for message in messages:
        item = {"role": message.get("role"), "content": " ".join(str(message.get("content", "")).split())}
        for name in ("tool_calls", "reasoning_content"):
            if message.get(name):
                item[name] = message[name]
        out.append(item)
    return out


def prompt_key(example: PreferencePair | KtoExample) -> str:
    """The canonical text of an example's prompt (messages whitespace-collapsed, tools, template variables):
    what ``prompt_hash`` digests, so pairs of one prompt share it."""
    if example.texts is not None:
        return canonical_json({"text": " ".join(example.texts[0].split())})
    return canonical_json({"messages": _normalized(example.prompt), "tools": list(example.tools or []),
                           "kwargs": dict(example.template_kwargs)})


def pair_key(pair: PreferencePair) -> Any:
    """What ``content_hash`` (and ``--dedup``) compares: the prompt and both completions, whitespace-collapsed."""
    if pair.texts is not None:
        return [" ".join(t.split()) for t in pair.texts]
    return [prompt_key(pair), _normalized(pair.chosen), _normalized(pair.rejected)]


def kto_key(example: KtoExample) -> Any:
    """What ``content_hash`` (and ``--dedup``) compares for KTO: prompt, completion and label."""
    completion = [" ".join(example.texts[1].split())] if example.texts is not None else _normalized(example.completion)
    return [prompt_key(example), completion, example.label]
