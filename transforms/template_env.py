"""The Jinja environment chat templates run in: the one ``apply_chat_template`` uses, plus limits.

A chat template is untrusted code from a model repository. :class:`ChatTemplate` compiles it once in a
sandboxed environment configured exactly as ``transformers`` configures its own (immutable sandbox,
``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, the ``{% generation %}`` block,
``tojson`` without HTML escaping, ``raise_exception``, ``strftime_now``, ``dict`` and a ``namespace`` that
refuses underscore names), and passes the same variables (see :meth:`ChatTemplate.render`), so it renders
the same text as ``tokenizer.apply_chat_template(..., tokenize=False)`` (tested on every published
template the tests collect). It needs ``jinja2`` only, not ``transformers``.

What it adds, so one record can neither hang nor exhaust a worker, and reruns are reproducible:

* a **time limit** per record (:class:`RenderBudget`): a watchdog thread interrupts a render that runs
  past its deadline (an asynchronous exception, delivered between two bytecodes of the rendering
  thread); the record is rejected as ``template_limit``;
* a **size limit**: rendered text longer than ``max_chars``, or a ``*``/``+``/``**`` that would build a
  larger string, list or number, or a ``center``/``indent`` wider than it, stops the render;
* a **pinned clock**: ``strftime_now`` formats the date the job pinned at launch (``template_date`` in
  the manifest), never the wall clock; a template using ``random`` or ``lipsum`` is refused at launch.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import functools
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from transforms.template_trace import PrefixPlan, Trace, TracedMessages, json_default, prefix_plan

DEFAULT_RENDER_SECONDS = 10.0
DEFAULT_MAX_CHARS = 16 * 1024 * 1024
_NONDETERMINISTIC = ("random", "lipsum")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_SIZED = (str, list, tuple, TracedMessages)
_DICT_ATTRIBUTES = frozenset(dir(dict))


class TemplateLimitExceeded(Exception):
    """A render ran past its time budget or would build text larger than its size limit."""


class TemplateRefused(ValueError):
    """The template cannot be used at all (syntax error, randomness): a configuration error."""


def has_generation_markers(template: str) -> bool:
    """True when the template (comments excluded) contains a ``{% generation %}`` block."""
    return bool(_GENERATION_TAG.search(_JINJA_COMMENT.sub("", template)))


# ------------------------------------------------------------------------------------------------
# the time limit: one watchdog thread per process


class _Watchdog:
    """Interrupts threads whose deadline passed, with an asynchronous :class:`TemplateLimitExceeded`.

    Arming is a dictionary entry under a lock: the watchdog thread is not woken per arm (a record's arm and
    disarm cost about a microsecond); it checks the armed deadlines at least every ``_POLL_SECONDS`` while
    any is armed (a deadline is enforced that late at most), and sleeps when none is."""

    _POLL_SECONDS = 0.05

    def __init__(self):
        self.reset_after_fork()

    def reset_after_fork(self):
        """A fresh state: no deadlines, no thread, a new lock. Run in a forked child (``os.register_at_fork``),
        where the parent's watchdog thread does not exist and its lock may have been held at the fork."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._armed: dict[int, tuple[float, int]] = {}  # ticket -> (deadline, thread id)
        self._fired: set[int] = set()
        self._tickets = 0
        self._idle = False
        self._thread: threading.Thread | None = None

    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="chatshards-template-watchdog", daemon=True)
            self._thread.start()

    def arm(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        with self._lock:
            self._ensure_thread()
            self._tickets += 1
            ticket = self._tickets
            self._armed[ticket] = (deadline, threading.get_ident())
            if self._idle:
                self._wake.notify()
            return ticket

    def disarm(self, ticket: int) -> bool:
        """Forget ``ticket``; True when it fired (a pending interrupt, if any, is cancelled)."""
        with self._lock:
            entry = self._armed.pop(ticket, None)
            if ticket not in self._fired:
                return False
            self._fired.discard(ticket)
            if entry is None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
            return True

    def _run(self):
        with self._lock:
            while True:
                if not self._armed:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                    continue
                now = time.monotonic()
                earliest = min(deadline for deadline, _ in self._armed.values())
                if earliest > now:
                    self._wake.wait(min(earliest - now, self._POLL_SECONDS))
                    continue
                for ticket, (deadline, thread_id) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[ticket]
                        self._fired.add(ticket)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(thread_id), ctypes.py_object(TemplateLimitExceeded))


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset_after_fork)  # worker processes forked by the local engine


class RenderBudget:
    """The time left for one record's renders; ``with budget.running():`` around them (the record's renderer
    arms it once around all of a record's renders).

    Raises :class:`TemplateLimitExceeded` when the budget is spent (before or while running).
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.deadline = time.monotonic() + self.seconds

    def _spent(self) -> TemplateLimitExceeded:
        return TemplateLimitExceeded(f"rendering this record took more than {self.seconds:g} s")

    def running(self) -> _Running:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._spent()
        return _Running(self)


class _Running:
    """The watchdog armed for a budget's time left, while in the ``with`` block."""

    __slots__ = ("budget", "ticket")

    def __init__(self, budget: RenderBudget):
        self.budget = budget
        self.ticket = None

    def __enter__(self) -> None:
        self.ticket = _WATCHDOG.arm(self.budget.deadline - time.monotonic())

    def __exit__(self, kind, value, traceback) -> bool:
        if _WATCHDOG.disarm(self.ticket):  # the watchdog stopped it: time, whatever it interrupted
            raise self.budget._spent() from None
        return False  # the block's own error (a size limit keeps its message) goes on


# ------------------------------------------------------------------------------------------------
# the environment


class _GenerationSpans(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: records the character span of each block's output.

    The block is compiled inline, in its own variable scope (as the ``{% call %}`` block transformers uses
    scopes it, without a macro call per block): reading an attribute of the extension (a property that
    writes nothing) opens it at the number of characters rendered so far, another closes it there."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        environment.extend(generation_tracking=threading.local())

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return [jinja2.nodes.Output([self.attr("opened")]).set_lineno(lineno),
                jinja2.nodes.Scope(body).set_lineno(lineno),
                jinja2.nodes.Output([self.attr("closed")]).set_lineno(lineno)]

    @property
    def opened(self) -> str:
        tracking = getattr(self.environment.generation_tracking, "state", None)
        if tracking is not None:  # [characters rendered so far, spans, open blocks' starts]
            tracking[2].append(tracking[0])
        return ""

    @property
    def closed(self) -> str:
        tracking = getattr(self.environment.generation_tracking, "state", None)
        if tracking is not None and tracking[2]:
            tracking[1].append((tracking[2].pop(), tracking[0]))
        return ""


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` refusing underscore-prefixed attributes (as transformers' does)."""

    def __init__(*args, **kwargs):  # noqa: N805 - Jinja's own signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes on a namespace ({name!r})")


class _TemplateDict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _CheckedConcatGenerator(jinja2.compiler.CodeGenerator):
    """Compiles ``a ~ b`` (string concatenation) to ``environment.checked_concat``: the same text as Jinja's
    own ``str_join``, with the size limit (a loop doubling a string with ``~`` would otherwise exhaust memory
    before the time limit stops it); and ``a + b`` to ``environment.checked_add`` (the same value, with the
    size limit; cheaper than the sandbox's generic ``call_binop``, and ``+`` is the operator templates use
    most)."""

    def visit_Add(self, node, frame) -> None:
        self.write("environment.checked_add(")
        self.visit(node.left, frame)
        self.write(", ")
        self.visit(node.right, frame)
        self.write(")")

    def visit_Concat(self, node, frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:  # never so for chat templates: Jinja's own
            super().visit_Concat(node, frame)
            return
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with size checks on the operators that can build huge values from small ones
    (``*``, ``+``, ``**`` and ``~``)."""

    intercepted_binops = frozenset({"*", "**"})  # ``+``: checked_add, compiled in (see the code generator)
    code_generator_class = _CheckedConcatGenerator

    def __init__(self, *, max_chars: int, **options):
        super().__init__(**options)
        self.max_chars = max_chars

    def checked_concat(self, values) -> str:
        parts = [str(value) for value in values]
        size = sum(map(len, parts))
        if size > self.max_chars:
            raise TemplateLimitExceeded(f"the template builds a value of {size} items (limit {self.max_chars})")
        return "".join(parts)

    def getattr(self, obj, attribute):
        """``obj.attribute`` as the sandbox resolves it; for a plain dict (a message), without the failed
        attribute lookup first: a key that is not a dict attribute is the item (the same result)."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def checked_add(self, left, right):
        """``left + right`` as Jinja computes it, refused when it would build a value over the size limit."""
        if type(left) is str and type(right) is str:  # the common case
            if len(left) + len(right) > self.max_chars:
                raise TemplateLimitExceeded(f"the template builds a value of {len(left) + len(right)} items "
                                            f"(limit {self.max_chars})")
            return left + right
        if isinstance(left, _SIZED) and isinstance(right, _SIZED) and len(left) + len(right) > self.max_chars:
            raise TemplateLimitExceeded(f"the template builds a value of {len(left) + len(right)} items "
                                        f"(limit {self.max_chars})")
        return left + right

    def call_binop(self, context, operator, left, right):
        limit = self.max_chars
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, _SIZED) and isinstance(count, int) and not isinstance(count, bool) \
                        and len(seq) * max(count, 0) > limit:
                    raise TemplateLimitExceeded(f"the template builds a value of {len(seq) * count} items "
                                                f"(limit {limit})")
        elif operator == "+":  # not compiled to this (see checked_add); kept for callers of the sandbox API
            return self.checked_add(left, right)
        elif operator == "**":
            if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1 \
                    and right > 0 and right * max(abs(float(left)).bit_length() if isinstance(left, int)
                                                  else 64, 1) > 64 * 1024:
                raise TemplateLimitExceeded("the template computes a power too large to render")
        return super().call_binop(context, operator, left, right)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys,
                      default=json_default)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _checked_width(filter_fn, limit):
    def wrapped(value, width=80, *args, **kwargs):
        if isinstance(width, int) and width > limit:
            raise TemplateLimitExceeded(f"the template pads text to {width} characters (limit {limit})")
        return filter_fn(value, width, *args, **kwargs)
    return wrapped


@functools.lru_cache(maxsize=16)
def _environment(max_chars: int, template_date: str) -> _LimitedEnvironment:
    env = _LimitedEnvironment(max_chars=max_chars, trim_blocks=True, lstrip_blocks=True,
                              extensions=[_GenerationSpans, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    for name in ("center", "indent"):
        env.filters[name] = _checked_width(env.filters[name], max_chars)
    pinned = _dt.datetime.fromisoformat(template_date)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: pinned.strftime(fmt)
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env


def today_iso() -> str:
    """Today's date (UTC) as ``YYYY-MM-DD``: the default ``template_date``."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


@dataclass(frozen=True)
class TemplateTraits:
    """What a template's source shows: markers, clock use, randomness."""

    uses_generation_markers: bool
    reads_clock: bool
    uses_randomness: bool


def template_traits(source: str) -> TemplateTraits:
    """Parse ``source`` (raises :class:`TemplateRefused` on a syntax error) and report its traits."""
    env = _environment(DEFAULT_MAX_CHARS, "2000-01-01")
    try:
        ast = env.parse(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TemplateRefused(f"the chat template is not valid Jinja: {exc.message} (line {exc.lineno})") from exc
    names = {node.name for node in ast.find_all(jinja2.nodes.Name)}
    filters = {node.name for node in ast.find_all(jinja2.nodes.Filter)}
    return TemplateTraits(
        uses_generation_markers=has_generation_markers(source),
        reads_clock="strftime_now" in names,
        uses_randomness=bool(set(_NONDETERMINISTIC) & (names | filters)),
    )


# ------------------------------------------------------------------------------------------------
# message normalisation, as apply_chat_template does it

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Messages as ``apply_chat_template`` hands them to the template: keys whose value is ``None`` dropped,
    and a message's reasoning given under ``reasoning_content`` and ``thinking`` (as transformers 5 does)."""
    out = []
    for message in messages:
        item = {key: value for key, value in message.items() if value is not None}
        reasoning = next((item[key] for key in _REASONING_FIELDS if item.get(key) is not None), None)
        if reasoning is not None:
            item = {"thinking": reasoning, **item, "reasoning_content": reasoning}
        out.append(item)
    return out


def _context(messages, tools, add_generation_prompt: bool, variables: Mapping[str, Any], *,
             prepared: bool = False) -> dict[str, Any]:
    """The template's variables as ``apply_chat_template`` passes them (``prepared``: ``messages`` are already
    :func:`template_messages`, as a list of the render's own)."""
    return {**(variables or {}), "messages": messages if prepared else template_messages(messages), "tools": tools,
            "documents": None, "add_generation_prompt": add_generation_prompt}


class ChatTemplate:
    """One compiled chat template with its limits; picklable (compiles lazily in each process).

    Args:
        source: the Jinja template text.
        template_date: the date ``strftime_now`` formats (ISO ``YYYY-MM-DD``; default: today, UTC).
        max_chars: the size limit of one render.

    Raises:
        TemplateRefused: the template does not parse, or it uses randomness (``random``, ``lipsum``):
            its rows could not be reproduced.
    """

    def __init__(self, source: str, *, template_date: str | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        self.source = source
        self.template_date = template_date or today_iso()
        try:
            _dt.date.fromisoformat(self.template_date)
        except ValueError:
            raise TemplateRefused(f"template date must be YYYY-MM-DD, got {self.template_date!r}") from None
        self.max_chars = max_chars
        self.traits = template_traits(source)
        self._plan: PrefixPlan | None | bool = False  # False: not yet computed
        self._tails: dict = {}
        if self.traits.uses_randomness:
            raise TemplateRefused("the chat template uses randomness (random/lipsum): its rows could not be "
                                  "reproduced; remove it from the template")
        self._compiled = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = None
        state["_plan"] = False
        state["_tails"] = {}
        return state

    @property
    def prefix_plan(self) -> PrefixPlan | None:
        """How prefix renderings follow from one rendering (:mod:`transforms.template_trace`), or ``None``."""
        if self._plan is False:
            env = _environment(self.max_chars, self.template_date)
            self._plan = prefix_plan(env, env.parse(self.source))
        return self._plan

    @property
    def uses_generation_markers(self) -> bool:
        return self.traits.uses_generation_markers

    def _template(self):
        if self._compiled is None:
            self._compiled = _environment(self.max_chars, self.template_date).from_string(self.source)
            self._globals = dict(self._compiled.globals)  # a ChainMap: copied once, not per render
        return self._compiled

    def _generate(self, context: Mapping[str, Any], tracking: list | None = None, trace: Trace | None = None) -> str:
        chunks = []
        total = 0
        limit = self.max_chars
        template = self._template()
        # Template.generate(**context) less its two copies of the variables: one dict, globals first, shared
        for chunk in template.root_render_func(template.new_context({**self._globals, **context}, shared=True)):
            total += len(chunk)
            if total > limit:
                raise TemplateLimitExceeded(f"the rendered text exceeds {limit} characters")
            chunks.append(chunk)
            if tracking is not None:
                tracking[0] = total
            if trace is not None:
                trace.position = total
        return "".join(chunks)

    def render(self, *, messages: Sequence[Mapping[str, Any]], tools=None, add_generation_prompt: bool = False,
               variables: Mapping[str, Any] = (), prepared: bool = False) -> str:
        """The text ``apply_chat_template(messages, tools=tools, add_generation_prompt=..., tokenize=False,
        **kwargs)`` renders, where ``variables`` are the special tokens and template kwargs
        (``{**tokenizer.special_tokens_map, **kwargs}``). ``prepared``: ``messages`` is a list of
        :func:`template_messages` that this render may own."""
        return self._generate(_context(messages, tools, add_generation_prompt, variables, prepared=prepared))

    def render_with_generation_spans(self, *, messages, tools=None, variables: Mapping[str, Any] = (),
                                     prepared: bool = False) -> tuple[str, list[tuple[int, int]]]:
        """:meth:`render` (no generation prompt) plus the ``[start, end)`` span of each generation block."""
        text, spans, _ = self.render_traced(messages=messages, tools=tools, variables=variables, prepared=prepared,
                                            generation_spans=True, traced=False)
        return text, spans

    def render_traced(self, *, messages, tools=None, variables: Mapping[str, Any] = (), prepared: bool = False,
                      generation_spans: bool = False, traced: bool = True
                      ) -> tuple[str, list[tuple[int, int]], Trace | None]:
        """:meth:`render` (no generation prompt) with what it observed of the messages (a
        :class:`~transforms.template_trace.Trace`, when ``traced``) and, with ``generation_spans``, the span
        of each generation block."""
        items = list(messages) if prepared else template_messages(messages)
        trace = Trace() if traced else None
        context = _context(TracedMessages(items, trace) if traced else items, tools, False, variables, prepared=True)
        spans: list[tuple[int, int]] = []
        if not generation_spans:
            return self._generate(context, None, trace), spans, trace
        env = self._template().environment
        tracking = [0, spans, []]
        env.generation_tracking.state = tracking
        try:
            text = self._generate(context, tracking, trace)
        finally:
            env.generation_tracking.state = None
        return text, spans, trace

    def tail_text(self, add_generation_prompt: bool, variables: Mapping[str, Any]) -> str | None:
        """What the template writes after its loop over the messages, or ``None`` (no prefix plan)."""
        plan = self.prefix_plan
        if plan is None:
            return None
        try:
            return plan.tail_text(add_generation_prompt, variables, self._tails)
        except TemplateLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - the prefix is then rendered, and fails there with its own message
            return None
