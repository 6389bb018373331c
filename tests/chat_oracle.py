"""The label oracle for issue 10: the rows a record must become under a chat template, token by token.

Independent of the job's label code (it never imports ``transforms.chat_render``, ``template_check``,
``transforms.rows`` or ``transforms.formats``): records are converted by :func:`canonical_messages` below,
templates are rendered with ``tokenizer.apply_chat_template`` exactly as transformers does, and trained spans follow the
contract of issue 10 (notes/spec10.md):

* P_i = render(messages[:i], add_generation_prompt=True) for a supervised assistant message i;
* G_i = what the model generates after P_i: render(messages[:i+1]) minus P_i, cut after the last of the
  family's end-of-turn tokens (whitespace and an end-of-conversation eos after it are not trained);
  DeepSeek-R1 style (P_i ends with ``<think>\\n`` and the rendered turn drops the reasoning):
  G_i = reasoning + ``\\n</think>\\n\\n`` + the rendered answer and end of turn;
* one row (turn -1, text = full render) when every P_i + G_i is a prefix of the full render at its place,
  else one row per supervised turn (text = P_i + G_i);
* a token is trained when it overlaps a trained character span.

Every G_i is checked against the record (``verify_turn``): it holds the message content, the reasoning, the
tool-call names and arguments, ends with an end-of-turn token, and holds no role header, no user/system/tool
text. Where the template drops what the record says (a tool call, a system message, the reasoning), the
oracle expects a rejection with the contract's reason code instead of a row.

Second, independent source for templates with a TRL ``*_training`` variant: :func:`training_mask` renders
with the variant and ``return_assistant_tokens_mask=True`` and normalises that mask to the contract.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

#: date the job pins ``strftime_now`` to, unless the manifest records another (``template_date``)
DEFAULT_DATE = _dt.date(2024, 7, 26)

# ----------------------------------------------------------------------------------------------------------
# records -> canonical messages (the conversion rules of the README's "Record formats" table, written again)
# ----------------------------------------------------------------------------------------------------------
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                   "observation": "tool", "function": "tool", "tool": "tool", "function_call": "function_call"}
THINK_RE = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


def _decode_args(args: Any) -> Any:
    for _ in range(2):  # JSON strings, also double-encoded ones
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return args
    return args


def _call(call: dict) -> dict:
    fn = call.get("function", call)
    out = {"type": "function", "function": {"name": fn["name"],
                                            "arguments": _decode_args(fn.get("arguments", fn.get("parameters", {})))}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", p.get("value", "")) for p in content if p.get("type", "text") == "text")
    return "" if content is None else content


def _split_reasoning(message: dict) -> dict:
    """``reasoning_content`` / ``thinking`` / ``reasoning`` fields and a leading ``<think>...</think>`` in content
    become ``reasoning_content`` + clean content (spec10: "Reasoning")."""
    reasoning = next((message[k] for k in ("reasoning_content", "thinking", "reasoning")
                      if isinstance(message.get(k), str) and message[k]), None)
    out = {k: v for k, v in message.items() if k not in ("reasoning_content", "thinking", "reasoning")}
    content = out.get("content")
    if isinstance(content, str):
        match = THINK_RE.match(content)
        if match and reasoning is None:
            reasoning, out["content"] = match.group(1).strip("\n"), content[match.end():]
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    return out


def canonical_messages(record: Any) -> tuple[list[dict], list | None, dict]:
    """``(messages, tools, chat_template_kwargs)`` of an openai / sharegpt / bare-list record.

    Assistant tool-call messages get ``content`` None when they carry no text (the OpenAI convention).
    """
    kwargs = dict(record.get("chat_template_kwargs") or {}) if isinstance(record, dict) else {}
    tools = record.get("tools") if isinstance(record, dict) else None
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    tools = tools or None
    messages: list[dict] = []
    if isinstance(record, list) or "messages" in record:
        for m in (record if isinstance(record, list) else record["messages"]):
            msg = {"role": m["role"], "content": _text(m.get("content"))}
            for key in ("reasoning_content", "thinking", "reasoning"):
                if key in m:
                    msg[key] = m[key]
            if m.get("tool_calls"):
                msg["tool_calls"] = [_call(c) for c in m["tool_calls"]]
                if not msg["content"]:
                    msg["content"] = None
            if m["role"] == "tool" and "tool_call_id" in m:
                msg["tool_call_id"] = m["tool_call_id"]
            messages.append(msg)
    else:
        if record.get("system"):
            messages.append({"role": "system", "content": record["system"]})
        for turn in record["conversations"]:
            role = _SHAREGPT_ROLES[turn["from"]]
            if role == "function_call":
                payload = json.loads(turn["value"])
                calls = payload if isinstance(payload, list) else [payload]
                messages.append({"role": "assistant", "content": None, "tool_calls": [_call(c) for c in calls]})
            else:
                messages.append({"role": role, "content": turn["value"]})
    return [_split_reasoning(m) if m["role"] == "assistant" else m for m in messages], tools, kwargs


# ----------------------------------------------------------------------------------------------------------
# expectations
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """An expected row: ``turn`` -1 for the whole conversation, else the supervised message index."""

    turn: int
    text: str
    spans: list[tuple[int, int]]
    reasoning_spans: list[tuple[int, int]] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    reasoning_tokens: int = 0


@dataclass
class Expected:
    """What the job must do with one record: ``rows`` (in turn order), or a rejection with a code in ``reject``.
    ``why`` says what the oracle found."""

    rows: list[Row] | None = None
    reject: frozenset[str] = frozenset()
    why: str = ""


class _Reject(Exception):
    def __init__(self, codes, why):
        super().__init__(why)
        self.codes, self.why = frozenset([codes] if isinstance(codes, str) else codes), why


@contextlib.contextmanager
def pinned_date(date):
    """Pin transformers' ``strftime_now`` template global to ``date`` (the job pins it too; spec10)."""
    import transformers.utils.chat_template_utils as ctu

    real = ctu.datetime

    class _Pinned(real):
        @classmethod
        def now(cls, tz=None):
            return real.combine(date, _dt.time(), tzinfo=tz)

    ctu.datetime = _Pinned
    try:
        yield
    finally:
        ctu.datetime = real


def render(tokenizer, messages, tools=None, *, generation=False, template=None, date=DEFAULT_DATE, **kwargs) -> str:
    """``apply_chat_template(tokenize=False)`` with ``strftime_now`` pinned to ``date``."""
    with pinned_date(date):
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation,
                                             chat_template=template, **kwargs)


def _cut_after_end_of_turn(tail: str, family) -> str | None:
    """``tail`` (one rendered turn, perhaps followed by an end-of-conversation suffix) up to and including its
    last end-of-turn token; None when no end-of-turn token closes it."""
    best = max((tail.rfind(t) + len(t) for t in family.end_of_turn if t in tail), default=-1)
    if best < 0:
        return None
    rest = tail[best:]
    suffix = rest.strip()
    if suffix and suffix != (family.eos or "\0"):
        return None
    return tail[:best]


def _template_error_codes(exc: Exception, messages) -> frozenset[str]:
    text = str(exc).lower()
    codes = {"template_error"}
    if "system" in text and any(m["role"] == "system" for m in messages):
        codes.add("system_not_supported")
    if any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        codes.add("tool_call_not_rendered")
    return frozenset(codes)


def _render_or_reject(tokenizer, messages, tools, kwargs, **kw) -> str:
    try:
        return render(tokenizer, messages, tools, **kwargs, **kw)
    except Exception as exc:  # noqa: BLE001 - any template failure is an expected rejection
        raise _Reject(_template_error_codes(exc, messages), f"template raised {type(exc).__name__}: {exc}") from exc


def _args_text(arguments) -> list[str]:
    """Strings that must appear in a rendered tool call: every scalar argument value."""
    values = []
    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            values.append(v)
        elif isinstance(v, bool) or v is None:
            return
        else:
            values.append(json.dumps(v))
    walk(_decode_args(arguments))
    return values


def _headers(family) -> list[str]:
    """Role headers that must never be trained (harmony's ``<|start|>assistant`` between channels is generated)."""
    if "<|start|>" in family.control_tokens:
        return ["<|start|>user", "<|start|>system", "<|start|>developer"]
    return [t for t in family.control_tokens if any(r in t.lower() for r in ("user", "system", "start_header",
                                                                             "inst]", "start_of_turn", "im_start",
                                                                             "<|start|>", "<|turn>"))]


def verify_turn(generated: str, message: dict, family, context: list[dict], *, reasoning_expected: bool) -> None:
    """Check a trained part against the record's assistant message; raise ``_Reject`` when the template dropped
    something of it, AssertionError when the oracle's own derivation is inconsistent."""
    if message.get("tool_calls"):
        for call in message["tool_calls"]:
            fn = call["function"]
            if fn["name"] not in generated or any(v not in generated for v in _args_text(fn["arguments"])):
                raise _Reject("tool_call_not_rendered", f"tool call {fn['name']} not rendered in the turn")
    content = (message.get("content") or "").strip()
    if content and content not in generated:
        raise _Reject("ambiguous_span", f"content not found verbatim in the trained part: {generated[:80]!r}")
    reasoning = (message.get("reasoning_content") or "").strip()
    if reasoning and reasoning_expected and reasoning not in generated:
        raise _Reject("reasoning_not_rendered", "the template drops the reasoning of the supervised turn")
    if not any(generated.endswith(t) for t in family.end_of_turn):
        raise _Reject("no_stop_token", f"turn not closed by {family.end_of_turn}: {generated[-40:]!r}")
    for header in _headers(family):
        assert header not in generated, f"role header {header!r} inside the trained part {generated[:200]!r}"
    for other in context:
        text = (other.get("content") or "").strip() if isinstance(other.get("content"), str) else ""
        if other["role"] != "assistant" and len(text) >= 24 and text not in content:
            assert text not in generated, f"{other['role']} text inside the trained part"


def expected_rows(tokenizer, family, record: Any, *, date=DEFAULT_DATE) -> Expected:
    """The rows (or rejection) the contract prescribes for ``record`` under ``family``'s template.

    Tool-call messages without text are given to the template with ``content`` None (the OpenAI convention);
    when the template raises on that or drops the call, ``content`` ``""`` is tried (older Qwen3 templates
    need a string)."""
    messages, tools, kwargs = canonical_messages(record)
    kwargs = {**kwargs, "date": date}
    try:
        return _expected(tokenizer, family, messages, tools, kwargs)
    except _Reject as rejection:
        if not any(m.get("tool_calls") and m.get("content") is None for m in messages):
            return Expected(reject=rejection.codes, why=rejection.why)
        first = rejection
    retry = [{**m, "content": ""} if m.get("tool_calls") and m.get("content") is None else m for m in messages]
    try:
        return _expected(tokenizer, family, retry, tools, kwargs)
    except _Reject as rejection:
        return Expected(reject=first.codes | rejection.codes, why=f"{first.why} / with content '': {rejection.why}")


def _tail_after(prompt: str, rendered: str) -> str | None:
    """The turn rendering when ``rendered`` does not start with ``prompt`` (Mistral v0.3 moves the system text):
    what follows the longest tail of ``prompt`` (at least its last message and header) found in ``rendered``."""
    for k in range(len(prompt), 0, -1):
        position = rendered.rfind(prompt[-k:])
        if position >= 0:
            return rendered[position + k:] if k >= 8 else None
    return None


def _expected(tokenizer, family, messages, tools, kwargs) -> Expected:
    supervised = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not supervised:
        raise _Reject("no_assistant_turn", "no assistant message")
    full = _render_or_reject(tokenizer, messages, tools, kwargs)
    system = next((m["content"].strip() for m in messages if m["role"] == "system" and m.get("content")), "")
    turns = []
    for i in supervised:
        prompt = _render_or_reject(tokenizer, messages[:i], tools, kwargs, generation=True)
        upto = _render_or_reject(tokenizer, messages[: i + 1], tools, kwargs)
        message = messages[i]
        if system and system not in prompt:
            raise _Reject("system_not_supported", f"the template drops the system message (turn {i} prompt)")
        for m in messages[:i]:  # tool calls of history turns must be rendered too
            for call in m.get("tool_calls") or ():
                if call["function"]["name"] not in prompt:
                    raise _Reject("tool_call_not_rendered", f"history tool call {call['function']['name']} dropped")
        reasoning = message.get("reasoning_content") or ""
        if upto.startswith(prompt):
            generated = _cut_after_end_of_turn(upto[len(prompt):], family)
            if generated is None:
                raise _Reject("no_stop_token", f"turn {i} not closed by {family.end_of_turn}")
            verify_turn(generated, message, family, messages[:i], reasoning_expected=True)
            r_start = generated.find(reasoning.strip()) if reasoning.strip() else -1
        elif prompt.endswith("<think>\n"):  # DeepSeek-R1 style: the prompt opens the reasoning block
            before = _render_or_reject(tokenizer, messages[:i], tools, kwargs)
            cue = prompt[len(before):-len("<think>\n")]
            if not (prompt.startswith(before) and upto.startswith(before + cue)):
                raise _Reject("ambiguous_span", f"turn {i}: prompt and rendered turn disagree before the answer")
            answer = _cut_after_end_of_turn(upto[len(before) + len(cue):], family)
            if answer is None:
                raise _Reject("no_stop_token", f"turn {i} not closed by {family.end_of_turn}")
            generated = reasoning + "\n</think>\n\n" + answer
            verify_turn(generated, message, family, messages[:i], reasoning_expected=True)
            r_start = 0 if reasoning else -1
        elif (tail := _tail_after(prompt, upto)) is not None:  # the history renders differently once answered
            generated = _cut_after_end_of_turn(tail, family)
            if generated is None:
                raise _Reject("no_stop_token", f"turn {i} not closed by {family.end_of_turn}")
            verify_turn(generated, message, family, messages[:i], reasoning_expected=True)
            r_start = generated.find(reasoning.strip()) if reasoning.strip() else -1
        else:
            raise _Reject(("ambiguous_span", "template_error"), f"turn {i}: render(messages[:{i + 1}]) does not "
                                                                 "start with the inference prompt")
        r_span = (len(prompt) + r_start, len(prompt) + r_start + len(reasoning.strip())) if r_start >= 0 else None
        turns.append((i, prompt, generated, r_span))
    single = all(full.startswith(prompt + generated) for _, prompt, generated, _ in turns)
    if single:
        row = Row(turn=-1, text=full, spans=[(len(p), len(p) + len(g)) for _, p, g, _ in turns],
                  reasoning_spans=[r for *_, r in turns if r])
        rows = [row]
    else:
        rows = [Row(turn=i, text=p + g, spans=[(len(p), len(p) + len(g))], reasoning_spans=[r] if r else [])
                for i, p, g, r in turns]
    for row in rows:
        _tokenize(tokenizer, row)
    return Expected(rows=rows, why="single row" if single else "one row per supervised turn")


def _overlaps(start, end, spans) -> bool:
    return any(start < e and end > s for s, e in spans)


def _tokenize(tokenizer, row: Row) -> None:
    encoding = tokenizer(row.text, add_special_tokens=False, return_offsets_mapping=True)
    row.input_ids = list(encoding["input_ids"])
    row.labels = [tid if _overlaps(s, e, row.spans) else -100
                  for tid, (s, e) in zip(row.input_ids, encoding["offset_mapping"])]
    row.reasoning_tokens = sum(1 for tid, (s, e) in zip(row.input_ids, encoding["offset_mapping"])
                               if _overlaps(s, e, row.spans) and _overlaps(s, e, row.reasoning_spans))


def trained_text(tokenizer, input_ids, labels) -> list[str]:
    """Decoded maximal runs of trained tokens."""
    runs, current = [], []
    for tid, label in zip(input_ids, labels):
        if label != -100:
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


# ----------------------------------------------------------------------------------------------------------
# second source: TRL *_training variants and return_assistant_tokens_mask
# ----------------------------------------------------------------------------------------------------------
def training_mask(tokenizer, family, record: Any, *, date=DEFAULT_DATE) -> tuple[list[int], list[int]] | str:
    """``(input_ids, labels)`` from the family's TRL training variant, normalised to the contract, or a string
    saying why it does not apply (the variant renders other text than the original, or raises).

    Normalisation: tokens that end inside the inference prompt P_i of their turn are dropped, and so is
    everything after the last end-of-turn token of each generation run (whitespace, Phi-3's eos)."""
    messages, tools, kwargs = canonical_messages(record)
    kwargs = {**kwargs}
    try:
        original = render(tokenizer, messages, tools, date=date, **kwargs)
        variant = render(tokenizer, messages, tools, template=family.training_template(), date=date, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return f"raises: {type(exc).__name__}: {exc}"
    if original != variant:
        return "training variant renders other text than the original"
    with pinned_date(date):
        out = tokenizer.apply_chat_template(messages, tools=tools, chat_template=family.training_template(),
                                            tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                            **kwargs)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    encoding = tokenizer(original, add_special_tokens=False, return_offsets_mapping=True)
    assert list(encoding["input_ids"]) == ids
    offsets = encoding["offset_mapping"]
    prompt_ends = [len(render(tokenizer, messages[:i], tools, generation=True, date=date, **kwargs))
                   for i, m in enumerate(messages) if m["role"] == "assistant"]
    eot_ids = {tokenizer.convert_tokens_to_ids(t) for t in family.end_of_turn}
    labels = [-100] * len(ids)
    k = 0
    while k < len(ids):
        if not mask[k]:
            k += 1
            continue
        run_end = k
        while run_end < len(ids) and mask[run_end]:
            run_end += 1
        run_chars = (offsets[k][0], offsets[run_end - 1][1])
        cut = max((p for p in prompt_ends if run_chars[0] < p <= run_chars[1]), default=run_chars[0])
        closing = max((j for j in range(k, run_end) if ids[j] in eot_ids), default=run_end - 1)
        for j in range(k, closing + 1):
            if offsets[j][1] > cut:
                labels[j] = ids[j]
        k = run_end
    return ids, labels
