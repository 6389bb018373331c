"""Render a conversation with the tokenizer's own chat template and find the trained character spans.

What is trained, whatever the template: for a supervised assistant message ``i``, the model at
inference sees the **prompt** ``P_i`` = the template's rendering of ``messages[:i]`` with the generation
prompt, and must generate the **turn** ``G_i``: its reasoning (where the template renders it), its
content, its tool calls as the template renders them, and the end-of-turn token(s) that close it. The
trained characters are exactly ``G_i``; never text of ``P_i`` (role headers, the newline after a header,
a template-injected default system prompt), never user/system/tool text, never whitespace after the
end-of-turn token or an end-of-conversation suffix (Phi-3's trailing eos).

Three strategies find ``G_i`` (:class:`ChatRenderer` picks one per template and record):

* **generation markers** (``{% generation %}`` blocks, e.g. TRL's ``*_training`` templates): the spans
  are the blocks, less the part the generation prompt already wrote and trailing whitespace, when each
  block is exactly the turn generated at inference after ``P_i`` (checked: ``P_i`` is rendered for each
  supervised turn); otherwise the record takes the paths below;
* **one row** (templates without markers): ``P_i`` is rendered; the turn is what the template renders
  for ``messages[:i+1]`` after ``P_i``, cut where the conversation's continuation departs from it (so an
  end-of-conversation suffix is not trained) and without trailing whitespace. When every supervised
  turn appears in the whole conversation's rendering exactly so (``P_i`` a prefix, ``G_i`` right after
  it), the record is **one row**;
* **per-turn split**: otherwise (Qwen3 and DeepSeek-R1 drop earlier reasoning, Mistral v0.3 moves the
  system prompt into the last user turn, GPT-OSS closes a final answer differently...) each supervised
  turn becomes its own row, ``P_i + G_i``: exactly the text the model sees at inference
  (``--multi-turn auto``; ``split`` always splits, ``single`` rejects instead).

Each record is rendered once; the renderings of its prefixes (``P_i``, ``messages[:i+1]``) are taken from
that rendering where the template's prefix plan and the record's trace prove them
(:mod:`transforms.template_trace`), so labels cost time linear in the number of turns; other prefixes are
rendered (``ChatRenderer(implied_prefixes=False)`` renders them all: the reference the tests compare with).

Templates whose generation prompt opens a reasoning block that the rendered turn lacks (DeepSeek-R1 and
its distills: the prompt ends with ``<think>\\n`` and the template strips reasoning from every turn): the
turn is what the model generates after that prompt: the reasoning, ``\\n</think>\\n\\n``, then what the
template renders for the answer and the end of turn.

The prompt-mismatch rule (``--prompt-mismatch diverge``, the default; docs/labels.md): a turn whose rendering
does not continue its generation prompt (axolotl's Qwen3 template: ``P_i`` ends ``<think>\n\n``, the rendered
turn starts ``<think>\nreasoning``) is trained from the first character ``P_i`` and the rendered turn do not
share (the row is the rendered turn; characters map to tokens by overlap, so training starts at a token
boundary), provided the history and the role header are shared; a record the template writes no generation
prompt for (a Granite-style template after a system message only) takes the template's generation prompt for a
conversation that has one as the end of its prompt, so the role header is never trained
(``no_generation_prompt`` where the rendered turn does not start with it). Each such turn is recorded as a
:class:`PromptMismatch` on its row; ``reject`` rejects such records (``ambiguous_span``, ``no_generation_prompt``).

Never a guess: a record whose trained part cannot be determined exactly is rejected with a reason
(``ambiguous_span``, ``tool_call_not_rendered``, ``reasoning_not_rendered``, ``content_not_rendered``,
``system_not_supported``, ``no_stop_token``, ``not_prefix_preserving``, ``template_limit``,
``template_error``, ``no_generation_prompt``), and the job goes on.

Loss modes: ``assistant`` (every trainable assistant turn), ``last`` (the last assistant turn only, if
trainable), ``all`` (the whole rendered text, one row).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

from transforms import errors
from transforms.errors import RecordRejected
from transforms.template_env import (
    DEFAULT_RENDER_SECONDS,
    ChatTemplate,
    RenderBudget,
    TemplateLimitExceeded,
    template_messages,
)

LOSS_MODES = ("assistant", "all", "last")
MULTI_TURN_MODES = ("auto", "split", "single")
SYSTEM_MODES = ("reject", "fold")
PROMPT_MISMATCH_MODES = ("diverge", "reject")
DIVERGED = "diverged"  # the rendered turn departs from the generation prompt: trained from where they diverge
HEADER_FROM_GENERATION_PROMPT = "header_from_generation_prompt"  # no generation prompt: the template's is taken
MISMATCH_EXCERPT = 40  # characters of each side kept in a :class:`PromptMismatch`
WHOLE_CONVERSATION = -1  # ``turn`` of a row that holds the whole conversation

_OPEN_REASONING = re.compile(r"<(think|thinking|reasoning)>[ \t]*\n?\Z")
_PROBE_USER = "chatshards probe question"
_PROBE_REASONING = "chatshards probe reasoning"
_PROBE_ANSWER = "chatshards probe answer"
_PROBE_SYSTEM = "chatshards probe system"


@dataclass(frozen=True)
class PromptMismatch:
    """A supervised turn whose rendering does not continue its generation prompt (``--prompt-mismatch``).

    Attributes:
        turn: the index (in the conversation's messages) of the assistant message.
        kind: ``diverged`` (the rendered turn departs from the generation prompt ``P_i``: trained from the
            first character they do not share) or ``header_from_generation_prompt`` (the template writes no
            generation prompt for this record: the role header it writes for a conversation that has one is
            taken as the prompt's end, never trained).
        shared: the last characters of the context the generation prompt and the rendered turn share.
        generation_prompt: what ``P_i`` holds after the shared context (``""`` when it ends there).
        rendered: what the rendered turn holds after the shared context (its first characters, trained).
    """

    turn: int
    kind: str
    shared: str
    generation_prompt: str
    rendered: str

    def to_json(self) -> dict[str, Any]:
        return {"turn": self.turn, "kind": self.kind, "shared": self.shared,
                "generation_prompt": self.generation_prompt, "rendered": self.rendered}


@dataclass(frozen=True)
class RenderedConversation:
    """One row's text and its trained character spans.

    Attributes:
        text: the text to tokenize (may hold control-token markers, see ``transforms.control_tokens``).
        trained_spans: sorted, non-overlapping ``(start, end)`` character spans of ``text`` to train.
        turn_spans: one ``(start, end)`` span per supervised assistant turn in this row, in order (counts
            trained turns after truncation).
        turn: ``-1`` when the row holds the whole conversation, else the index (in the conversation's
            messages) of the assistant message this row supervises.
        reasoning_spans: the parts of ``turn_spans`` that are the turns' reasoning (trained or not).
        reasoning_trained: whether the reasoning spans are inside ``trained_spans``.
        prompt_mismatches: the row's turns trained by the prompt-mismatch rule (``--prompt-mismatch diverge``).
    """

    text: str
    trained_spans: tuple[tuple[int, int], ...]
    turn_spans: tuple[tuple[int, int], ...]
    turn: int = WHOLE_CONVERSATION
    reasoning_spans: tuple[tuple[int, int], ...] = ()
    reasoning_trained: bool = True
    prompt_mismatches: tuple[PromptMismatch, ...] = ()


@dataclass(frozen=True)
class TemplateProfile:
    """What a template does with the structures that trouble labels (found by rendering probes).

    Attributes:
        supports_system: renders a system message (does not raise on it, does not drop its text).
        renders_reasoning: renders a final assistant turn's ``reasoning_content``, or its generation
            prompt opens a reasoning block (``<think>``).
        end_suffix: after the last message the template writes something that a continued conversation
            does not have there (e.g. Phi-3's eos), so the last turn's end is found by a continuation render.
        generation_prompt: what the generation prompt adds after a user message (e.g. ``<|im_start|>assistant\n``;
            ``""`` when it adds nothing or the probe fails).
    """

    supports_system: bool = True
    renders_reasoning: bool = False
    end_suffix: bool = False
    notes: tuple[str, ...] = field(default=())
    generation_prompt: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"supports_system": self.supports_system, "renders_reasoning": self.renders_reasoning,
                "end_suffix": self.end_suffix, "notes": list(self.notes), "generation_prompt": self.generation_prompt}


def _reject(reason: str, detail: str):
    raise RecordRejected(reason, detail)


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class ChatRenderer:
    """Renders conversations with one chat template and finds trained spans; picklable.

    Args:
        chat_template: the template text, or a :class:`~transforms.template_env.ChatTemplate`.
        template_variables: what ``apply_chat_template`` passes besides the messages: the tokenizer's
            ``special_tokens_map`` (see ``tokenizer_loading.special_tokens_for_template``).
        loss: one of ``LOSS_MODES``.
        multi_turn: one of ``MULTI_TURN_MODES`` (see the module docstring).
        train_reasoning: train the supervised turns' reasoning (default) or keep it untrained.
        system_mode: ``reject`` or ``fold`` a system message the template does not support.
        control_tokens: the control-token strings of the tokenizer (a turn must end with one).
        render_seconds: time budget for all renders of one record.
        implied_prefixes: take the renderings of a conversation's prefixes from its whole rendering where the
            template's prefix plan proves them (:mod:`transforms.template_trace`; linear time in the number of
            turns); ``False`` renders every prefix (quadratic; the reference the tests compare with).
        prompt_mismatch: one of ``PROMPT_MISMATCH_MODES``: a turn whose rendering does not continue its
            generation prompt is trained from where they diverge (``diverge``) or rejected (``reject``); see
            the module docstring.
    """

    def __init__(self, *, chat_template: str | ChatTemplate, template_variables: Mapping[str, Any],
                 loss: str = "assistant", multi_turn: str = "auto", train_reasoning: bool = True,
                 system_mode: str = "reject", control_tokens: Sequence[str] = (),
                 render_seconds: float = DEFAULT_RENDER_SECONDS, profile: TemplateProfile | None = None,
                 template_date: str | None = None, implied_prefixes: bool = True, prompt_mismatch: str = "diverge"):
        if loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {loss!r}")
        if multi_turn not in MULTI_TURN_MODES:
            raise ValueError(f"multi_turn must be one of {MULTI_TURN_MODES}, got {multi_turn!r}")
        if system_mode not in SYSTEM_MODES:
            raise ValueError(f"system_mode must be one of {SYSTEM_MODES}, got {system_mode!r}")
        if prompt_mismatch not in PROMPT_MISMATCH_MODES:
            raise ValueError(f"prompt_mismatch must be one of {PROMPT_MISMATCH_MODES}, got {prompt_mismatch!r}")
        self.template = chat_template if isinstance(chat_template, ChatTemplate) \
            else ChatTemplate(chat_template, template_date=template_date)
        self.chat_template = self.template.source
        self.template_variables = dict(template_variables)
        self.loss = loss
        self.multi_turn = multi_turn
        self.train_reasoning = train_reasoning
        self.system_mode = system_mode
        self.control_tokens = tuple(control_tokens)
        self._control_pattern = re.compile("|".join(map(re.escape, self.control_tokens))) \
            if self.control_tokens else None
        self.render_seconds = render_seconds
        self.implied_prefixes = implied_prefixes
        self.prompt_mismatch = prompt_mismatch
        self.uses_generation_markers = self.template.uses_generation_markers
        self._profile = profile

    # -- the template's behaviour -----------------------------------------------------------------
    @property
    def profile(self) -> TemplateProfile:
        if self._profile is None:
            self._profile = profile_template(self.template, self.template_variables)
        return self._profile

    # -- rendering -------------------------------------------------------------------------------
    def _variables(self, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**self.template_variables, **kwargs} if kwargs else self.template_variables

    def render_text(self, messages: Sequence[Mapping], *, tools=None, add_generation_prompt: bool = False,
                    template_kwargs: Mapping[str, Any] | None = None, budget: RenderBudget | None = None) -> str:
        """Render ``messages`` exactly as ``tokenizer.apply_chat_template(tokenize=False)`` would."""
        budget = budget or RenderBudget(self.render_seconds)
        with budget.running():
            return self.template.render(messages=messages, tools=tools,
                                        add_generation_prompt=add_generation_prompt,
                                        variables=self._variables(template_kwargs))

    def render(self, messages: Sequence[Mapping], *, tools=None, trainable: Sequence[bool] | None = None,
               template_kwargs: Mapping[str, Any] | None = None) -> RenderedConversation:
        """One row for the whole conversation (``--multi-turn single``), or a rejection."""
        rows = self.render_rows(messages, tools=tools, trainable=trainable, template_kwargs=template_kwargs,
                                multi_turn="single")
        return rows[0]

    def render_rows(self, messages: Sequence[Mapping], *, tools=None, trainable: Sequence[bool] | None = None,
                    template_kwargs: Mapping[str, Any] | None = None,
                    multi_turn: str | None = None) -> list[RenderedConversation]:
        """The rows of one conversation (one, or one per supervised turn) with their trained spans.

        Args:
            messages: canonical messages (``role``/``content`` plus tool and reasoning fields).
            tools: tool schemas passed to the template, or ``None``.
            trainable: per message, whether an assistant message may be trained (default: all).
            template_kwargs: extra template variables of this record (e.g. ``enable_thinking``).
            multi_turn: overrides the renderer's mode for this call.

        Raises:
            RecordRejected: see the module docstring for the reasons.
        """
        messages = [m if type(m) is dict else dict(m) for m in messages]  # never modified: no copy of a dict
        trainable = list(trainable) if trainable is not None else [True] * len(messages)
        _ = self.profile  # probed once per renderer, outside the records' time budgets
        budget = RenderBudget(self.render_seconds)
        try:
            with budget.running():  # one watchdog arm for all the record's renders
                return self._rows_or_retry(messages, tools, trainable, template_kwargs, multi_turn, budget)
        except TemplateLimitExceeded as exc:  # the budget ran out outside a render (between two)
            raise RecordRejected(errors.TEMPLATE_LIMIT, str(exc)) from None

    def _rows_or_retry(self, messages, tools, trainable, template_kwargs, multi_turn, budget):
        try:
            return self._rows(messages, tools, trainable, template_kwargs, multi_turn, budget, None)
        except RecordRejected as first:
            # Tool-call messages without text go to the template with content None (the OpenAI convention,
            # what apply_chat_template gets from such data). Templates that need a string there (they raise,
            # or drop the call) get "" instead; either way the checks prove the rendering holds the call.
            if first.reason not in _TOOL_CONTENT_RETRY or not any(map(_textless_tool_call, messages)):
                raise
            try:
                return self._rows(messages, tools, trainable, template_kwargs, multi_turn, budget, "")
            except RecordRejected as second:
                if first.reason == errors.TEMPLATE_ERROR and second.reason != errors.TEMPLATE_ERROR:
                    # the template raised on content null; with "" it says more (e.g. it drops the call)
                    raise RecordRejected(second.reason, f"{second.detail} (with content null the template "
                                                        f"raised: {first.detail})") from None
                raise first from None

    def _rows(self, messages, tools, trainable, template_kwargs, multi_turn, budget, tool_call_content):
        messages = _with_tool_call_content(messages, tool_call_content)
        state = _Record(self, messages, tools, template_kwargs, budget)
        try:
            messages = state.prepare_system(messages, trainable)
            trainable = state.trainable
            if messages is not state.messages:  # a system message folded into the first user turn
                state.use(messages)
            if self.loss == "all":
                text = state.prefix(len(messages))
                state.check_system(text)
                return [RenderedConversation(text=text, trained_spans=((0, len(text)),) if text else (),
                                             turn_spans=((0, len(text)),) if text else ())]
            assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
            supervised = [i for i in assistants if trainable[i]]
            if self.loss == "last":
                supervised = [i for i in supervised if i == assistants[-1]]
            if self.uses_generation_markers:
                return state.marker_rows(assistants, supervised, multi_turn or self.multi_turn)
            return state.diff_rows(supervised, multi_turn or self.multi_turn)
        except RecordRejected:
            raise
        except TemplateLimitExceeded as exc:
            raise RecordRejected(errors.TEMPLATE_LIMIT, str(exc)) from None
        except RecursionError:
            raise RecordRejected(errors.TEMPLATE_LIMIT, "the template recursed too deeply on this record") from None
        except Exception as exc:  # noqa: BLE001 - the template is user code; any failure is per record
            detail = f"chat template failed: {type(exc).__name__}: {exc}"
            if state.has_system and "system" in str(exc).lower():
                raise RecordRejected(errors.SYSTEM_NOT_SUPPORTED, detail) from exc
            raise RecordRejected(errors.TEMPLATE_ERROR, detail) from exc

    # -- helpers shared with the record state --------------------------------------------------------
    def control_token_end(self, text: str) -> bool:
        """True when ``text`` ends with a control token (or no control tokens are known)."""
        return not self.control_tokens or text.endswith(self.control_tokens)

    def atomic_cut(self, text: str, length: int) -> int:
        """``length`` moved back so ``text[:length]`` does not end inside a control-token string."""
        if self._control_pattern is None or length >= len(text):
            return length
        for match in self._control_pattern.finditer(text, max(0, length - 64), length + 64):
            if match.start() < length < match.end():
                return match.start()
        return length


_TOOL_CONTENT_RETRY = (errors.TEMPLATE_ERROR, errors.TOOL_CALL_NOT_RENDERED)


def _textless_tool_call(message: Mapping) -> bool:
    """An assistant message that only calls tools (no text)."""
    return message.get("role") == "assistant" and bool(message.get("tool_calls")) and not message.get("content")


def _with_tool_call_content(messages: Sequence[Mapping], content: str | None) -> list[Mapping]:
    """``messages`` with ``content`` = ``content`` on assistant tool-call messages without text (``None``: as
    OpenAI data has it, null, which the template sees as no ``content`` at all, as with ``apply_chat_template``;
    ``""`` for templates that need a string there). Done once per record, not per render."""
    return [{**m, "content": content} if _textless_tool_call(m) else m for m in messages]


class _Prompt:
    """A prefix rendering implied by the whole rendering ``full``: ``full[:end] + tail`` (kept as parts, so a
    conversation of many turns does not copy its text once per turn)."""

    __slots__ = ("full", "end", "tail")

    def __init__(self, full: str, end: int, tail: str):
        self.full, self.end, self.tail = full, end, tail

    def __len__(self) -> int:
        return self.end + len(self.tail)

    @property
    def text(self) -> str:
        return self.full[:self.end] + self.tail


class _Turn(NamedTuple):
    """A supervised turn: ``prompt`` (the context before it in its row: ``P_i``, or the shared context under the
    prompt-mismatch rule), ``text`` (``G_i``, trained), the end of its reasoning block when known, and the
    :class:`PromptMismatch` when the rule applied."""

    prompt: Any  # str | _Prompt
    text: str
    reasoning_end: int | None = None
    mismatch: PromptMismatch | None = None


def _ends_with(prompt, suffix: str) -> bool:
    """``_text(prompt).endswith(suffix)`` without building the text of an implied prompt."""
    if isinstance(prompt, _Prompt):
        if len(prompt.tail) >= len(suffix):
            return prompt.tail.endswith(suffix)
        return prompt.text.endswith(suffix)
    return prompt.endswith(suffix)


def _header_start(header: str, control_tokens: Sequence[str]) -> str:
    """The start of a role header: its first control token when it starts with one, else its first line."""
    starts = [token for token in control_tokens if token and header.startswith(token)]
    if starts:
        return max(starts, key=len)
    line = header.split("\n", 1)[0]
    return line if line.strip() else header


def _text(prompt: str | _Prompt) -> str:
    return prompt.text if isinstance(prompt, _Prompt) else prompt


def _starts_with(text: str, prompt: str | _Prompt) -> bool:
    """``text.startswith(prompt)``, without a copy when ``prompt`` is implied by ``text`` itself."""
    if isinstance(prompt, _Prompt):
        return text.startswith(prompt.tail, prompt.end) if text is prompt.full else text.startswith(prompt.text)
    return text.startswith(prompt)


class _Record:
    """The renders of one record (under one time budget, armed by the caller).

    The messages are given to the template as ``apply_chat_template`` gives them
    (:func:`~transforms.template_env.template_messages`), prepared once per record. Where the template has a
    prefix plan (:mod:`transforms.template_trace`), the whole conversation is rendered once with its
    observations traced, and the rendering of ``messages[:n]`` is taken from it (``full[:ends[n]]`` plus the
    template's tail) for every ``n`` the trace proves; other prefixes are rendered."""

    def __init__(self, renderer: ChatRenderer, messages, tools, kwargs, budget):
        self.r = renderer
        self._renders: dict[tuple[int, bool], str] = {}  # (messages[:n], generation prompt) -> text
        self._continued: str | None = None
        self._ends: dict[int, int] = {}  # n -> where messages[:n]'s rendering leaves the loop (in the full text)
        self._tails: dict[bool, str | None] = {}  # generation prompt -> the template's tail
        self.tools = tools
        self.kwargs = kwargs
        self.budget = budget
        self.variables = renderer._variables(kwargs)
        self.has_system = any(m.get("role") == "system" and (m.get("content") or "").strip() for m in messages)
        self.trainable: list[bool] = []
        self.use(messages)

    def use(self, messages) -> None:
        """Render ``messages`` (the record's, after the system-message policy)."""
        self.messages = messages
        self.prepared = template_messages(messages)

    def render(self, n: int, gen: bool = False) -> str:
        return self.r.template.render(messages=self.prepared[:n], tools=self.tools, add_generation_prompt=gen,
                                      variables=self.variables, prepared=True)

    def tail(self, gen: bool) -> str | None:
        if gen not in self._tails:
            self._tails[gen] = self.r.template.tail_text(gen, self.variables)
        return self._tails[gen]

    def render_full(self, generation_spans: bool = False):
        """The whole conversation's text (and generation spans), traced where the template has a prefix plan."""
        traced = self.r.implied_prefixes and self.r.template.prefix_plan is not None
        text, spans, trace = self.r.template.render_traced(
            messages=self.prepared, tools=self.tools, variables=self.variables, prepared=True,
            generation_spans=generation_spans, traced=traced)
        self._renders[len(self.messages), False] = text
        if trace is not None and trace.exhausted_at is not None \
                and text[trace.exhausted_at:] == self.tail(False):
            self._ends = trace.ends  # the plan's prediction holds for this record's own rendering
        return text, spans

    def implied(self, n: int, gen: bool = False) -> _Prompt | None:
        """The rendering of ``messages[:n]`` as the whole rendering's first characters plus the template's
        tail, where the trace proves it (else ``None``)."""
        if n in self._ends and n < len(self.messages):
            tail = self.tail(gen)
            if tail is not None:
                return _Prompt(self._renders[len(self.messages), False], self._ends[n], tail)
        return None

    def prefix(self, n: int, gen: bool = False) -> str:
        """The rendering of ``messages[:n]`` (with the generation prompt when ``gen``); each rendered at most
        once per record, whichever strategy asks (the marker checks and the one-row/split path share them)."""
        key = (n, gen)
        if key not in self._renders:
            if n == len(self.messages) and not gen:
                self.render_full()
            else:
                implied = self.implied(n, gen)
                if implied is not None:
                    return implied.text  # not kept: the fast paths work on the parts
                self._renders[key] = self.render(n, gen)
        return self._renders[key]

    def continued(self) -> str:
        """The rendering of the conversation continued by a probe user turn (finds an end-of-conversation
        suffix); rendered once per record."""
        if self._continued is None:
            probe = template_messages([{"role": "user", "content": _PROBE_USER}])
            self._continued = self.r.template.render(messages=self.prepared + probe, tools=self.tools,
                                                     variables=self.variables, prepared=True)
        return self._continued

    # -- system messages --------------------------------------------------------------------------
    def prepare_system(self, messages, trainable):
        self.trainable = list(trainable)
        if not self.has_system or self.r.profile.supports_system:
            return messages
        if self.r.system_mode != "fold":
            _reject(errors.SYSTEM_NOT_SUPPORTED, "the chat template does not support a system message and this "
                                                 "record has one (--fold-system puts it into the first user turn)")
        systems = [m for m in messages if m.get("role") == "system"]
        rest = [(m, t) for m, t in zip(messages, trainable) if m.get("role") != "system"]
        text = "\n\n".join(m.get("content") or "" for m in systems if (m.get("content") or "").strip())
        for k, (m, _) in enumerate(rest):
            if m.get("role") == "user":
                rest[k] = ({**m, "content": text + "\n\n" + (m.get("content") or "")}, rest[k][1])
                break
        else:
            _reject(errors.SYSTEM_NOT_SUPPORTED, "the chat template does not support a system message and the "
                                                 "record has no user message to fold it into")
        self.has_system = False
        self.trainable = [t for _, t in rest]
        return [m for m, _ in rest]

    def system_rendered(self, text: str) -> bool:
        """Whether every system message of the record appears in ``text``."""
        for m in self.messages:
            content = (m.get("content") or "").strip() if m.get("role") == "system" else ""
            if content and content not in text:
                return False
        return True

    def check_system(self, text: str) -> None:
        if not self.system_rendered(text):
            _reject(errors.SYSTEM_NOT_SUPPORTED, "the chat template drops this record's system message")

    # -- the prompt of a turn ------------------------------------------------------------------------
    def prompt_parts(self, i: int) -> _Prompt | str:
        """``P_i`` as parts of the whole rendering where implied (no copy), else as text (:meth:`prompt`)."""
        implied = self.implied(i, True)
        return implied if implied is not None else self.prompt(i)

    def prompt(self, i: int) -> str:
        """``P_i``: the rendering of ``messages[:i]`` with the generation prompt (rendered once per record)."""
        try:
            return self.prefix(i, gen=True)
        except TemplateLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - e.g. templates that index messages[0] of an empty history
            if i:
                raise
            self._renders[0, True] = ""
            return ""

    # -- checks on a turn ------------------------------------------------------------------------------
    def check_turn(self, i: int, turn: str) -> None:
        message = self.messages[i]
        for call in message.get("tool_calls") or ():
            name = (call.get("function") or {}).get("name") or call.get("name")
            if name and name not in turn:
                _reject(errors.TOOL_CALL_NOT_RENDERED, f"message {i}: the chat template does not render the tool "
                                                       f"call {name!r}: the turn would be trained without it")
        content = (message.get("content") or "").strip()
        if content and content not in turn:
            first_line = content.splitlines()[0].strip()
            if not first_line or first_line not in turn:
                _reject(errors.CONTENT_NOT_RENDERED, f"message {i}: the chat template does not render this "
                                                     f"assistant message's content as given")
        reasoning = (message.get("reasoning_content") or "").strip()
        if reasoning and reasoning not in turn:
            _reject(errors.REASONING_NOT_RENDERED, f"message {i}: the chat template drops this turn's reasoning")
        if not self.r.control_token_end(turn):
            _reject(errors.NO_STOP_TOKEN, f"message {i}: the assistant turn is not closed by a control token "
                                          f"(it ends with {turn[-20:]!r}); the model would not learn to stop")

    def reasoning_span(self, i: int, turn: str, known_end: int | None = None) -> tuple[int, int] | None:
        """``(0, end)``: the part of the turn text that is the reasoning block, or ``None``."""
        if known_end is not None:
            return (0, known_end)
        message = self.messages[i]
        reasoning = (message.get("reasoning_content") or "").strip()
        if not reasoning:
            return None
        at = turn.find(reasoning)
        if at < 0:
            return None
        end = at + len(reasoning)
        close = re.match(r"\s*</\w+>\s*", turn[end:])
        if close:
            end += close.end()
        return (0, end)

    # -- the turn after its prompt ------------------------------------------------------------------------
    def _turn_after_implied(self, i: int, prompt: _Prompt, full: str) -> _Turn | None:
        """:meth:`turn_after` where ``P_i`` and ``messages[:i+1]``'s rendering are implied by ``full``: the same
        result, computed on the turn's own characters (``None``: take the general path)."""
        last = i == len(self.messages) - 1
        if full is not prompt.full or (last and self.r.profile.end_suffix):
            return None
        a, tail = prompt.end, prompt.tail
        if last:
            after = full[a:]  # upto[a:] (upto = full)
        else:
            upto = self.implied(i + 1)
            if upto is None or upto.end < a:
                return None
            after = full[a:upto.end] + upto.tail
        if not after.startswith(tail):  # upto does not start with the prompt
            return None
        completion = after[len(tail):]
        turn = completion.rstrip()
        start = len(prompt)
        if not last and full.startswith(tail, a):  # only its first len(completion) characters matter
            continuation = full[start:start + len(completion)]
            length = self.r.atomic_cut(completion, _common_prefix_length(completion, continuation))
            cut = completion[:length].rstrip()
            if cut and self.r.control_token_end(cut):
                turn = cut
        return _Turn(prompt, turn)

    def turn_after(self, i: int, prompt: str | _Prompt, full: str) -> _Turn:
        """The turn ``G_i`` the model generates after ``P_i`` (``prompt``), with the context before it in the turn's
        row (``P_i`` itself, unless the prompt-mismatch rule applies)."""
        if self.generation_prompt_missing(i, prompt):
            return self.turn_after_template_header(i, _text(prompt), full)
        if isinstance(prompt, _Prompt):
            fast = self._turn_after_implied(i, prompt, full)
            if fast is not None:
                return fast
            prompt = prompt.text
        last = i == len(self.messages) - 1
        upto = full if last else self.prefix(i + 1)
        if upto.startswith(prompt):
            return _Turn(prompt, self.completion(i, prompt, upto, full))
        moved = self.turn_after_moved_system(prompt, upto)
        if moved is not None:
            return _Turn(prompt, moved)
        opened = _OPEN_REASONING.search(prompt)
        if opened is None or not upto.startswith(prompt[:opened.start()]):
            return self.turn_after_divergence(i, prompt, upto, full)
        # DeepSeek-R1 style: the prompt opens a reasoning block the rendered turn lacks.
        base = prompt[:opened.start()]
        answer = upto[len(base):]
        if not last and full.startswith(base):
            cut = answer[:self.r.atomic_cut(answer, _common_prefix_length(answer, full[len(base):]))].rstrip()
            if cut and self.r.control_token_end(cut):
                answer = cut
        answer = answer.rstrip()
        reasoning = (self.messages[i].get("reasoning_content") or "").strip("\n")
        block = f"{reasoning}\n</{opened.group(1)}>\n\n"
        return _Turn(prompt, block + answer.lstrip(), len(block))

    def completion(self, i: int, context: str, upto: str, full: str) -> str:
        """What the template renders for message ``i`` after ``context`` (a prefix of ``upto``, the rendering of
        ``messages[:i+1]``): cut where a continued conversation departs from it (so an end-of-conversation suffix
        is not trained) if a control token still closes it there, and without trailing whitespace."""
        last = i == len(self.messages) - 1
        completion = upto[len(context):]
        continuation = None
        if not last and full.startswith(context):
            continuation = full[len(context):]
        elif last and self.r.profile.end_suffix:
            continued = self.continued()
            if continued.startswith(context):
                continuation = continued[len(context):]
        turn = completion.rstrip()
        if continuation is not None:  # the turn ends where a continued conversation departs from it ...
            length = self.r.atomic_cut(completion, _common_prefix_length(completion, continuation))
            cut = completion[:length].rstrip()
            if cut and self.r.control_token_end(cut):  # ... if a control token still closes it there
                turn = cut
        return turn

    # -- the prompt-mismatch rule ---------------------------------------------------------------------------
    def history(self, i: int) -> str:
        """The rendering of ``messages[:i]`` without the generation prompt (``""`` where the template cannot
        render an empty history)."""
        try:
            return self.prefix(i)
        except TemplateLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - e.g. templates that index messages[0] of an empty history
            if i:
                raise
            return ""

    def generation_prompt_missing(self, i: int, prompt: str | _Prompt) -> bool:
        """Whether ``P_i`` lacks a generation prompt although the template writes one for a conversation that
        has one (a Granite-style template writes the assistant header only inside its loop over the messages
        after the system one, so a system + assistant record gets none). Costs a render only where ``P_i`` does
        not end with the template's usual generation prompt."""
        header = self.r.profile.generation_prompt
        if not header or _ends_with(prompt, header):
            return False
        text = _text(prompt)
        if text != self.history(i):
            return False
        last = i == len(self.messages) - 1
        rendered = (self.prefix(len(self.messages)) if last else self.prefix(i + 1))[len(text):]
        start = _header_start(header, self.r.control_tokens)
        if i == 0 and not text:  # nothing rendered before a first message: a preamble may precede its header
            return start in rendered
        # the turn starts with a role header (the template's generation prompt, or its first token) or not:
        # a template that writes the header at the end of a history (after tool output) is left as it is
        return rendered.startswith(start)

    def turn_after_template_header(self, i: int, prompt: str, full: str) -> _Turn:
        """``G_i`` for a record the template writes no generation prompt for: the rendered turn starts with the role
        header, which is never trained; the prompt ends with the template's generation prompt for a conversation
        that has one, when the rendered turn starts with it (a conversation whose first message is this turn, for a
        template that cannot render an empty history: when the rendered turn holds it after a preamble without the
        message's text, e.g. a default system prompt). Else, and under ``--prompt-mismatch reject``, the record is
        rejected as ``no_generation_prompt``."""
        header = self.r.profile.generation_prompt
        last = i == len(self.messages) - 1
        upto = full if last else self.prefix(i + 1)
        at = upto.find(header, len(prompt))
        if i == 0 and not prompt and at > 0:  # a preamble before the header: never the message's text
            content = (self.messages[i].get("content") or "").strip()
            if content and content in upto[:at]:
                at = -1
        elif at != len(prompt):
            at = -1
        context = upto[:at + len(header)] if at >= 0 else prompt + header
        if self.r.prompt_mismatch == "reject" or at < 0:
            why = "--prompt-mismatch reject" if self.r.prompt_mismatch == "reject" else \
                f"its rendered turn does not start with the generation prompt {header!r} the template writes for " \
                "a conversation that has one"
            _reject(errors.NO_GENERATION_PROMPT, f"message {i}: the chat template writes no generation prompt for "
                                                 f"the messages before this turn, so the rendered turn starts with its "
                                                 f"role header, which is never trained ({why})")
        turn = self.completion(i, context, upto, full)
        mismatch = PromptMismatch(turn=i, kind=HEADER_FROM_GENERATION_PROMPT, shared=prompt[-MISMATCH_EXCERPT:],
                                  generation_prompt="", rendered=header[:MISMATCH_EXCERPT])
        return _Turn(context, turn, None, mismatch)

    def turn_after_divergence(self, i: int, prompt: str, upto: str, full: str) -> _Turn:
        """``G_i`` when the rendered turn does not continue its generation prompt ``P_i`` (axolotl's Qwen3 template:
        ``P_i`` ends ``<think>\\n\\n``, the rendered turn starts ``<think>\\nreasoning``). Under ``--prompt-mismatch
        diverge`` the row is the rendered turn and it is trained from the first character ``P_i`` and the rendered
        turn do not share (moved back out of a control token; the first token holding it is trained): everything
        the model must produce after the shared context. The history before the generation prompt must render the
        same in both, and the role header (the generation prompt's first line) must be shared; otherwise, and under
        ``--prompt-mismatch reject``, the record is rejected as ``ambiguous_span``."""
        def ambiguous(why: str):
            _reject(errors.AMBIGUOUS_SPAN, f"message {i}: the template renders this turn differently from what follows "
                                           f"its own generation prompt, so the trained part is ambiguous ({why})")

        if self.r.prompt_mismatch == "reject":
            ambiguous("--prompt-mismatch reject")
        history = self.history(i)
        if not (prompt.startswith(history) and upto.startswith(history)):
            ambiguous("the conversation before the turn renders differently")
        shared = self.r.atomic_cut(upto, _common_prefix_length(prompt, upto))
        generation = prompt[len(history):]
        newline = generation.find("\n")
        header_end = len(history) + (newline + 1 if newline >= 0 else len(generation))
        if shared < header_end:
            ambiguous(f"they part inside the role header {generation[:header_end - len(history)]!r}")
        turn = self.completion(i, upto[:shared], upto, full)
        if not turn:
            ambiguous("nothing is rendered after the shared context")
        mismatch = PromptMismatch(turn=i, kind=DIVERGED, shared=upto[max(0, shared - MISMATCH_EXCERPT):shared],
                                  generation_prompt=prompt[shared:shared + MISMATCH_EXCERPT],
                                  rendered=upto[shared:shared + MISMATCH_EXCERPT])
        return _Turn(upto[:shared], turn, None, mismatch)

    def turn_after_moved_system(self, prompt: str, upto: str) -> str | None:
        """The turn when the prompt holds the system prompt where the rendered turn's history does not
        (Mistral v0.3 writes it into the last user turn only): ``prompt = X + S + Y`` and
        ``upto = X + Y + G`` where ``S`` is the record's system text plus whitespace, so ``G`` is the
        turn. ``None`` when the difference is not exactly that (the caller then rejects)."""
        if not self.has_system:
            return None
        systems = [(m.get("content") or "").strip() for m in self.messages if m.get("role") == "system"]
        systems = [text for text in systems if text]
        d = _common_prefix_length(prompt, upto)
        rest, after = prompt[d:], upto[d:]
        for k in range(len(rest), 0, -1):  # longest Y: a suffix of the prompt's rest that starts upto's rest
            inserted = rest[:len(rest) - k]
            if not after.startswith(rest[len(rest) - k:]) or not inserted.strip():
                continue
            for text in systems:
                inserted = inserted.replace(text, "", 1)
            if inserted.strip():
                return None
            turn = after[k:].rstrip()
            return turn or None
        return None

    def diff_rows(self, supervised: list[int], mode: str) -> list[RenderedConversation]:
        full = self.prefix(len(self.messages))
        # A template may write the system prompt only into the prompt of the last user turn (Mistral v0.3):
        # then the whole conversation lacks it and each turn's row must have it, as at inference.
        system_in_full = self.system_rendered(full)
        if not supervised:
            self.check_system(full)
            return [RenderedConversation(text=full, trained_spans=(), turn_spans=())]
        turns = []
        exact = system_in_full
        for i in supervised:
            prompt = self.prompt_parts(i)
            if not system_in_full:
                self.check_system(_text(prompt))
            found = self.turn_after(i, prompt, full)
            prompt, turn = found.prompt, found.text
            self.check_turn(i, turn)
            turns.append((i, prompt, turn, self.reasoning_span(i, turn, found.reasoning_end), found.mismatch))
            exact = exact and _starts_with(full, prompt) and full.startswith(turn, len(prompt))
        if mode == "single" and not exact:
            _reject(errors.NOT_PREFIX_PRESERVING, "the chat template renders an earlier turn differently once later "
                                                  "turns follow (e.g. it drops earlier reasoning or moves the system "
                                                  "prompt); use --multi-turn auto or split")
        if mode == "split" or not exact:
            return [self._row(_text(prompt) + turn, [(len(prompt), turn, rspan)], turn=i,
                              mismatches=(mismatch,) if mismatch else ())
                    for i, prompt, turn, rspan, mismatch in turns]
        return [self._row(full, [(len(prompt), turn, rspan) for _, prompt, turn, rspan, _ in turns],
                          mismatches=tuple(m for *_, m in turns if m))]

    def _row(self, text: str, parts, *, turn: int = WHOLE_CONVERSATION, mismatches=()) -> RenderedConversation:
        turn_spans, trained, reasoning = [], [], []
        for start, body, rspan in parts:
            end = start + len(body)
            turn_spans.append((start, end))
            if rspan is not None and rspan[1] > rspan[0]:
                reasoning.append((start + rspan[0], start + rspan[1]))
                if not self.r.train_reasoning:
                    if start + rspan[1] < end:
                        trained.append((start + rspan[1], end))
                    continue
            if end > start:
                trained.append((start, end))
        return RenderedConversation(text=text, trained_spans=tuple(trained), turn_spans=tuple(turn_spans),
                                    turn=turn, reasoning_spans=tuple(reasoning),
                                    reasoning_trained=self.r.train_reasoning, prompt_mismatches=tuple(mismatches))

    # -- generation markers -----------------------------------------------------------------------------
    def _marked(self):
        return self.render_full(generation_spans=True)

    def _without_end_suffix_blocks(self, text: str, blocks):
        """``blocks`` less those that only wrap an end-of-conversation suffix (TRL's ``phi3_training``
        marks the eos it appends after the last turn): blocks that start where a continued conversation
        departs from this one and hold no message text. A model stops at its end-of-turn token; the
        suffix is not something it generates, so it is not trained (the same rule as without markers)."""
        if not self.r.profile.end_suffix:
            return blocks
        departs = self.r.atomic_cut(text, _common_prefix_length(text, self.continued()))
        texts = [(m.get("content") or "").strip() for m in self.messages if isinstance(m.get("content"), str)]

        def suffix_only(start: int, end: int) -> bool:
            body = text[start:end]
            return start >= departs and not any(t and t in body for t in texts)

        return [block for block in blocks if not suffix_only(*block)]

    def marker_rows(self, assistants, supervised, mode) -> list[RenderedConversation]:
        """One row from the ``{% generation %}`` blocks, when each supervised block is exactly the turn the model
        generates at inference after its prompt; else the rows of the one-row/split strategy (:meth:`diff_rows`).

        A block is that turn when the turn's prompt is the row's text before it (not so when the template drops
        earlier reasoning or closes a final answer differently once more turns follow: DeepSeek-R1, GPT-OSS),
        the block holds the message (:meth:`check_turn`; DeepSeek-R1's blocks lack the reasoning) and the
        template renders the same turn when it is the last message. Split rows (``P_i + G_i``) and blocks that
        cannot be assigned to messages are built by :meth:`diff_rows` (exact by construction)."""
        if mode == "split" and len(supervised) > 1:
            return self.diff_rows(supervised, mode)
        text, blocks = self._marked()  # also the plain rendering: the same text
        self.check_system(text)
        if len(blocks) > len(assistants):
            blocks = self._without_end_suffix_blocks(text, blocks)
        if len(blocks) != len(assistants):
            return self.diff_rows(supervised, mode)
        parts = []
        chosen = set(supervised)
        for owner, (s, e) in zip(assistants, blocks):
            if owner not in chosen:
                continue
            prompt = self.prompt_parts(owner)
            if not (_starts_with(text, prompt) and s <= len(prompt) <= e):
                return self.diff_rows(supervised, mode)
            start = len(prompt)  # the block less what the generation prompt already wrote
            body = text[start:e].rstrip()
            try:
                self.check_turn(owner, body)
            except RecordRejected:
                return self.diff_rows(supervised, mode)
            found = self.turn_after(owner, prompt, text)
            if found.mismatch is not None or found.text != body:
                return self.diff_rows(supervised, mode)
            parts.append((start, body, self.reasoning_span(owner, body)))
        if self.r.loss == "last" and parts:
            parts = parts[-1:]
        return [self._row(text, parts)]


def profile_template(template: ChatTemplate, variables: Mapping[str, Any]) -> TemplateProfile:
    """Probe what ``template`` does with system messages, reasoning and the end of a conversation."""
    notes = []
    user = {"role": "user", "content": _PROBE_USER}
    answer = {"role": "assistant", "content": _PROBE_ANSWER}

    def render(messages, gen=False):
        return template.render(messages=messages, add_generation_prompt=gen, variables=variables)

    supports_system = True
    system = {"role": "system", "content": _PROBE_SYSTEM}
    try:
        text = render([system, user, answer])
        if _PROBE_SYSTEM not in text:
            # Mistral v0.3 writes the system prompt into the last user turn only: it is there at inference
            # (the prompt ends with that user turn) and gone once an answer follows.
            if _PROBE_SYSTEM in render([system, user], gen=True):
                notes.append("renders the system message only in the prompt of the last user turn "
                             "(records with one are split per turn)")
            else:
                supports_system = False
                notes.append("drops system messages")
    except Exception as exc:  # noqa: BLE001
        supports_system = False
        notes.append(f"raises on a system message ({type(exc).__name__}: {exc})")
    renders_reasoning = False
    try:
        thought = render([user, {**answer, "reasoning_content": _PROBE_REASONING}])
        renders_reasoning = _PROBE_REASONING in thought
    except Exception:  # noqa: BLE001
        pass
    try:
        if not renders_reasoning and _OPEN_REASONING.search(render([user], gen=True)):
            renders_reasoning = True
    except Exception:  # noqa: BLE001
        pass
    generation_prompt = ""
    try:
        plain, opened = render([user]), render([user], gen=True)
        if opened.startswith(plain):
            generation_prompt = opened[len(plain):]
    except Exception:  # noqa: BLE001
        pass
    end_suffix = False
    try:
        ended = render([user, answer])
        continued = render([user, answer, {"role": "user", "content": _PROBE_USER + " 2"}])
        at, at_continued = ended.rfind(_PROBE_ANSWER), continued.rfind(_PROBE_ANSWER)
        if at >= 0 and at_continued >= 0:
            tail_end = ended[at:]
            tail_continued = continued[at_continued:]
            common = _common_prefix_length(tail_end, tail_continued)
            end_suffix = bool(tail_end[common:].strip())
    except Exception:  # noqa: BLE001
        pass
    return TemplateProfile(supports_system=supports_system, renders_reasoning=renders_reasoning,
                           end_suffix=end_suffix, notes=tuple(notes), generation_prompt=generation_prompt)
