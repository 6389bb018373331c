"""Prefix renders from one render: where a conversation's rendering of ``messages[:i]`` is implied.

Labels need, per supervised turn ``i``, the rendering of ``messages[:i]`` (with and without the
generation prompt). Rendering each prefix costs time linear in ``i``, so a conversation of ``n`` turns
costs ``O(n^2)``. For templates of the usual shape (a header, *one* loop over the messages, then a
tail such as ``{% if add_generation_prompt %}...{% endif %}``) those prefixes are implied by the
rendering of the whole conversation, and this module proves it per template and per record:

**Per template** (:func:`prefix_plan`, static, on the parsed template): the loop over the messages is a
top-level ``for`` (not filtered, not recursive, no ``else``) over ``messages`` or a name assigned from
it, the only one outside its own body that iterates anything derived from ``messages`` (other
top-level loops iterate ``tools``/``documents`` only; a macro's loop never gets ``messages`` as an
argument); ``add_generation_prompt`` appears only in the tail; the tail (the top-level nodes after
the loop) reads no variable but ``add_generation_prompt`` and the variables passed to the template
(special tokens, record kwargs; none of them assigned in the template, not ``tools``) and calls
nothing. The tail's output is then a function of those variables alone: :class:`PrefixPlan` renders
it once per value.

**Per record** (:class:`TracedMessages`): the whole conversation is rendered once with ``messages``
wrapped in a list look-alike that behaves exactly as the list (same results, same errors, the sandbox
treats it as a mutable sequence) and records every observation the template makes of it: an item read
(``messages[k]``, a loop step, ``loop.last``'s look-ahead), its length, a negative index, a copy...
A Jinja render is deterministic in what it observes. So when the *main loop* (the first iterator a
template loop steps, which the plan makes the top-level loop) is asked for item ``i`` and nothing
before observed an item at or after ``i`` (nor the length, nor the end), the rendering of
``messages[:i]`` made the same observations up to there and wrote the same text; there its loop ends
and the tail follows. Hence ``render(messages[:i], gen) = full[:ends[i]] + tail(gen)`` where
``ends[i]`` is the output length at that step. Turns for which the condition does not hold (e.g.
``loop.last`` looks ahead, ``messages|length`` is read in the header) get no entry in ``ends`` and are
rendered as before; so do records whose rendering does not end with the tail the plan predicts.
"""
from __future__ import annotations

import json
import sys
from collections import abc
from dataclasses import dataclass
from typing import Any, Mapping

import jinja2.nodes as nodes
from jinja2.runtime import LoopContext

_EVERYTHING = sys.maxsize
_LOOP_NEXT = LoopContext.__next__.__code__
_TEMPLATE_FILE = "<template>"
_TAIL_NODES = (nodes.Output, nodes.TemplateData, nodes.Const, nodes.If, nodes.Name, nodes.Getattr, nodes.Getitem,
               nodes.Slice, nodes.Concat, nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Operand,
               nodes.CondExpr, nodes.Filter, nodes.Test, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair,
               nodes.Keyword)
_LOOP_SOURCES = frozenset({"tools", "documents"})


class Trace:
    """What one render observed of its messages; ``ends[i]``: output length where ``messages[:i]``'s
    rendering leaves the main loop (only for ``i`` proven so)."""

    __slots__ = ("position", "seen", "main", "ends", "exhausted_at")

    def __init__(self):
        self.position = 0      # characters the render has written so far
        self.seen = -1         # highest item index observed (``_EVERYTHING``: length/end/all observed)
        self.main = None       # the main loop's iterator
        self.ends: dict[int, int] = {}
        self.exhausted_at: int | None = None  # where the main loop ended, when nothing past it was seen

    def touch(self, index: int) -> None:
        if index > self.seen:
            self.seen = index

    def touch_all(self) -> None:
        self.seen = _EVERYTHING


def _stepped_by_template_loop() -> bool:
    """Whether the caller of the iterator's ``__next__`` is a template ``for`` loop's step (the compiled
    root function, or Jinja's ``LoopContext.__next__`` called by it), not a look-ahead or a filter."""
    frame = sys._getframe(2)
    code = frame.f_code
    if code is _LOOP_NEXT:
        frame = frame.f_back
        code = frame.f_code if frame is not None else None
    return code is not None and code.co_filename == _TEMPLATE_FILE and code.co_name == "root"


class _TracedIterator:
    __slots__ = ("_owner", "_next")

    def __init__(self, owner: TracedMessages):
        self._owner = owner
        self._next = owner._offset

    def __iter__(self):
        return self

    def __next__(self):
        owner = self._owner
        trace, items, k = owner._trace, owner._items, self._next
        clean = _stepped_by_template_loop()
        if clean and trace.main is None:
            trace.main = self
        main = clean and trace.main is self
        if k >= len(items):
            if main and trace.seen < k and trace.exhausted_at is None:
                trace.exhausted_at = trace.position
            trace.touch(k)
            raise StopIteration
        if main and trace.seen < k:
            trace.ends[k] = trace.position
        trace.touch(k)
        self._next = k + 1
        return items[k]


class TracedMessages:
    """``items[offset:]`` as the template sees it: behaves as that list, records what is observed.

    A slice ``messages[a:]`` is a traced view; any other way to see the list (length, negative index,
    other slices, comparison, text, copy) counts as observing all of it."""

    __slots__ = ("_items", "_trace", "_offset")
    __hash__ = None

    def __init__(self, items: list, trace: Trace, offset: int = 0):
        self._items = items
        self._trace = trace
        self._offset = offset

    def _list(self) -> list:
        self._trace.touch_all()
        return self._items if not self._offset else self._items[self._offset:]

    def __len__(self):
        return len(self._list())

    def __bool__(self):
        if len(self._items) > self._offset:
            self._trace.touch(self._offset)
            return True
        self._trace.touch_all()
        return False

    def __iter__(self):
        return _TracedIterator(self)

    def __getitem__(self, key):
        if type(key) is int and key >= 0:
            index = self._offset + key
            self._trace.touch(index)
            if index >= len(self._items):
                self._trace.touch_all()
            return self._items[index]
        if type(key) is slice and key.stop is None and key.step in (None, 1) \
                and (key.start is None or (type(key.start) is int and key.start >= 0)):
            return TracedMessages(self._items, self._trace, self._offset + (key.start or 0))
        return self._list()[key]

    def __getattr__(self, name):  # list methods (index, count, copy, pop...), as on the list itself
        return getattr(self._list(), name)

    def __reversed__(self):
        return reversed(self._list())

    def __contains__(self, value):
        return value in self._list()

    def __repr__(self):
        return repr(self._list())

    __str__ = __repr__

    def __eq__(self, other):
        return self._list() == (other._list() if isinstance(other, TracedMessages) else other)

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self._list() < other

    def __le__(self, other):
        return self._list() <= other

    def __gt__(self, other):
        return self._list() > other

    def __ge__(self, other):
        return self._list() >= other

    def __add__(self, other):
        return self._list() + (other._list() if isinstance(other, TracedMessages) else other)

    def __radd__(self, other):
        return other + self._list()

    def __mul__(self, count):
        return self._list() * count

    __rmul__ = __mul__


abc.MutableSequence.register(TracedMessages)  # so the sandbox refuses the list's mutating methods, as on a list


def json_default(value):
    """``json.dumps(default=...)``: a traced list is written as its list."""
    if isinstance(value, TracedMessages):
        return value._list()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value, **options) -> str:
    return json.dumps(value, default=json_default, **options)


# ------------------------------------------------------------------------------------------------
# the static part


def _names(node) -> set[str]:
    return {n.name for n in node.find_all(nodes.Name)} | ({node.name} if isinstance(node, nodes.Name) else set())


def _inside(node, container) -> bool:
    return any(child is node for child in container.find_all(type(node)))


@dataclass(frozen=True)
class PrefixPlan:
    """A template whose prefix renderings are implied by the whole rendering (see the module docstring).

    Attributes:
        tail: the template of the nodes after the main loop.
        tail_names: the variables the tail reads (besides ``add_generation_prompt``).
    """

    tail: Any
    tail_names: tuple[str, ...]

    def tail_text(self, gen: bool, variables: Mapping[str, Any], cache: dict) -> str | None:
        """What the template writes after its main loop, for these variables (``None``: not cacheable)."""
        try:
            key = (bool(gen),) + tuple(variables.get(name) for name in self.tail_names)
            hash(key)
        except TypeError:
            return None
        if key not in cache:
            values = {name: variables[name] for name in self.tail_names if name in variables}
            cache[key] = self.tail.render(**values, add_generation_prompt=bool(gen))
        return cache[key]


def prefix_plan(environment, ast: nodes.Template) -> PrefixPlan | None:
    """The plan for a template parsed by ``environment`` (which compiles its tail), or ``None`` when its
    prefix renderings cannot be proven implied by the whole rendering."""
    assigned = set()
    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro, nodes.Import,
                              nodes.FromImport, nodes.CallBlock)):
        if isinstance(node, (nodes.Assign, nodes.AssignBlock, nodes.For)):
            assigned |= {n.name for n in node.target.find_all(nodes.Name)} | _names(node.target)
        elif isinstance(node, nodes.Macro):
            assigned.add(node.name)
        elif isinstance(node, nodes.Import):
            assigned.add(node.target)
        elif isinstance(node, nodes.FromImport):
            assigned |= {n if isinstance(n, str) else n[-1] for n in node.names}
    aliases = {"messages"}
    changed = True
    while changed:  # names assigned from anything that reads the messages (or an alias of them)
        changed = False
        for node in ast.find_all((nodes.Assign, nodes.AssignBlock)):
            source = node.node if isinstance(node, nodes.Assign) else node
            targets = _names(node.target)
            if _names(source) & aliases and not targets <= aliases:
                aliases |= targets
                changed = True
    loops = [(k, node) for k, node in enumerate(ast.body)
             if isinstance(node, nodes.For) and _names(node.iter) & aliases]
    if len(loops) != 1:
        return None
    position, main = loops[0]
    if main.test is not None or main.recursive or main.else_:
        return None
    macros = list(ast.find_all(nodes.Macro))
    for loop in ast.find_all(nodes.For):
        if loop is main or _inside(loop, main):
            continue
        if _names(loop.iter) & aliases:
            return None
        if any(_inside(loop, macro) for macro in macros):  # a macro's loop must not get the messages
            for call in ast.find_all(nodes.Call):
                arguments = list(call.args) + [keyword.value for keyword in call.kwargs]
                if call.dyn_args is not None or call.dyn_kwargs is not None \
                        or any(_names(argument) & aliases for argument in arguments):
                    return None
    tail = ast.body[position + 1:]
    for node in tail:
        if not isinstance(node, _TAIL_NODES) \
                or any(not isinstance(child, _TAIL_NODES) for child in node.find_all(nodes.Node)):
            return None
    tail_names = set().union(*(_names(node) for node in tail)) if tail else set()
    if tail_names & (assigned | aliases | {"tools", "documents"}):  # only the job's and the record's variables
        return None
    gen_uses = [n for n in ast.find_all(nodes.Name) if n.name == "add_generation_prompt"]
    tail_uses = [n for node in tail for n in node.find_all(nodes.Name) if n.name == "add_generation_prompt"] + \
                [node for node in tail if isinstance(node, nodes.Name) and node.name == "add_generation_prompt"]
    if len(gen_uses) != len(tail_uses):
        return None
    compiled = environment.from_string(nodes.Template(list(tail), lineno=1).set_environment(environment))
    return PrefixPlan(tail=compiled, tail_names=tuple(sorted(tail_names - {"add_generation_prompt"})))
