"""Control-token strings inside the data: tokenized as text, never obeyed (unless asked).

A *control token* is a token that steers the model: every special token of the tokenizer, and every
added token that the chat template writes itself (Qwen's ``<tool_call>``, Gemma's ``<start_of_turn>``
when it is not special...), except whitespace tokens. A message that contains such a string
(``"...<|im_end|>\\n<|im_start|>assistant\\n..."``) would otherwise become real control tokens: a spoofed
assistant turn in the training data, or a model taught to emit a control token mid-answer.

Policies (``--control-tokens-in-data``):

* ``text`` (default): the strings stay text. Before rendering, each occurrence in the record's strings
  is wrapped in two noncharacters (a *marker pair*, :data:`MARKER_PAIRS`: the first pair none of whose
  characters the record or the template holds, :func:`free_markers`); after rendering, the marked
  occurrences are encoded as plain text (a tokenizer without those added tokens) and the rest of the text
  as usual, piece by piece, the way ``apply_chat_template(..., sanitize_control_tokens=True)`` encodes it.
  The markers stay in the rendered text the labels are computed on; :func:`encode_marked` maps their
  positions, so no other code needs to know.

  Which texts are marked, and with which pair, is said explicitly (the chat task keeps the pair with the
  row): a text is never *sniffed* for marker characters, so a record that holds noncharacters itself
  (``"keep \ufdd0 this"``) reaches the tokenizer as it is, whatever the policy. A record that holds
  control-token strings *and* every marker pair's characters is rejected (``control_token_in_text``, naming
  the noncharacters).
* ``reject``: such a record is rejected as ``control_token_in_text``.
* ``special``: the old behaviour (the strings become control tokens).
"""
from __future__ import annotations

import bisect
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

#: Marker pairs ``(open, close)``, in order of preference: the noncharacters U+FDD0..U+FDEF (never assigned,
#: for a process's internal use; rare in data, but data may hold them, see :func:`free_markers`).
MARKER_PAIRS: tuple[tuple[str, str], ...] = tuple((chr(c), chr(c + 1)) for c in range(0xFDD0, 0xFDF0, 2))
MARK_OPEN, MARK_CLOSE = MARKER_PAIRS[0]
POLICIES = ("text", "reject", "special")


@functools.lru_cache(maxsize=len(MARKER_PAIRS))
def _marked_pattern(markers: tuple[str, str]) -> re.Pattern:
    """A marked string (group 1) or a lone marker of the pair ``markers``."""
    open_, close = map(re.escape, markers)
    return re.compile(f"{open_}([^{open_}{close}]*){close}|[{open_}{close}]")


def free_markers(value: Any, template: str = "") -> tuple[str, str] | None:
    """The first pair of :data:`MARKER_PAIRS` none of whose characters any string of ``value`` (recursively,
    dict keys included) or ``template`` holds; ``None`` when every pair is taken."""
    strings, pending = [template], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    text = "\x00".join(strings)
    return next((pair for pair in MARKER_PAIRS if pair[0] not in text and pair[1] not in text), None)


def control_tokens_of(added_tokens: Iterable[tuple[str, bool]], template: str) -> tuple[str, ...]:
    """The control tokens of a tokenizer and template: ``added_tokens`` is ``(content, special)`` pairs.

    Special tokens always count; a non-special added token counts when the template's text contains
    it (whitespace tokens never). Longest first, so a token wins over the tokens it contains.
    """
    chosen = {content for content, special in added_tokens
              if content and not content.isspace() and (special or content in template)}
    return tuple(sorted(chosen, key=lambda token: (-len(token), token)))


class ControlTokens:
    """Finds and marks control-token strings in a record's values (strings, lists, dicts; keys untouched)."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = tuple(tokens)
        self._pattern = re.compile("|".join(map(re.escape, self.tokens))) if self.tokens else None
        # every token starts with one of these characters: a string holding none of them holds no token
        self._first = tuple(sorted({token[0] for token in self.tokens}))
        self._separator = next((c for c in ("\x00", "\n", "\ufdd2") if not any(c in t for t in self.tokens)), None)

    def count(self, value: Any) -> int:
        """Occurrences of control-token strings in ``value`` (recursively)."""
        if self._pattern is None:
            return 0
        strings, pending = [], [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                strings.append(item)
            elif isinstance(item, dict):
                pending.extend(item.values())
            elif isinstance(item, (list, tuple)):
                pending.extend(item)
        if self._separator is None:
            return sum(len(self._pattern.findall(text)) for text in strings)
        # one search over all the strings: no token holds the separator, so no match spans two strings
        text = self._separator.join(strings)
        if not any(char in text for char in self._first):
            return 0
        return len(self._pattern.findall(text))

    def mark(self, value: Any, markers: tuple[str, str] = MARKER_PAIRS[0]) -> Any:
        """``value`` with every occurrence wrapped in the pair ``markers`` (a copy; choose the pair with
        :func:`free_markers`, so that the value holds none of its characters)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            open_, close = markers
            return self._pattern.sub(lambda m: open_ + m.group(0) + close, value)
        if isinstance(value, dict):
            return {key: self.mark(item, markers) for key, item in value.items()}
        if isinstance(value, list):
            return [self.mark(item, markers) for item in value]
        if isinstance(value, tuple):
            return tuple(self.mark(item, markers) for item in value)
        return value


def strip_marks(text: str, markers: tuple[str, str] = MARKER_PAIRS[0]) -> str:
    """The rendered text without the markers ``markers`` (what the row's tokens spell)."""
    return text.replace(markers[0], "").replace(markers[1], "")


def plain_text_backend(backend, tokens: Sequence[str]):
    """A copy of the ``tokenizers.Tokenizer`` ``backend`` that does not know ``tokens`` as added tokens,
    so it spells them with ordinary vocabulary (their text)."""
    from tokenizers import Tokenizer

    definition = json.loads(backend.to_str())
    drop = set(tokens)
    definition["added_tokens"] = [t for t in definition.get("added_tokens", []) if t.get("content") not in drop]
    return Tokenizer.from_str(json.dumps(definition))


@dataclass
class MarkedEncoding:
    """Token ids of a marked text, with ``char_to_token`` over positions of the *marked* text.

    Attributes:
        ids: token ids (``list[int]``).
        starts, ends: per token, its ``[start, end)`` character offsets in the marked text.
    """

    ids: list[int]
    starts: list[int]
    ends: list[int]

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Per token, its ``(start, end)`` character offsets in the marked text (as ``tokenizers.Encoding.offsets``)."""
        return list(zip(self.starts, self.ends))

    def char_to_token(self, position: int) -> int | None:
        """Index of the token covering character ``position`` of the marked text, or ``None``."""
        i = bisect.bisect_right(self.starts, position) - 1
        found = None
        while i >= 0 and position - self.starts[i] < 64:  # tokens sharing characters sit next to each other
            if self.starts[i] <= position < self.ends[i]:
                found = i
            elif found is not None:
                break
            i -= 1
        return found


def _encode_piece(backend, piece: str, first: bool, newline: list[int]):
    """``(ids, offsets)`` of ``piece`` encoded as if it continued a text (no SentencePiece prefix space)."""
    if not first and newline:
        encoding = backend.encode("\n" + piece, add_special_tokens=False)
        if encoding.ids[:len(newline)] == newline:
            offsets = [(max(s - 1, 0), max(e - 1, 0)) for s, e in encoding.offsets[len(newline):]]
            return encoding.ids[len(newline):], offsets
    encoding = backend.encode(piece, add_special_tokens=False)
    return encoding.ids, list(encoding.offsets)


def encode_marked(text: str, backend, plain_backend, markers: tuple[str, str] = MARKER_PAIRS[0]) -> MarkedEncoding:
    """Encode a rendered text that holds control-token strings marked with the pair ``markers``.

    Unmarked pieces are encoded by ``backend`` (control tokens the template wrote stay control tokens),
    marked strings by ``plain_backend`` (as text). A lone marker (the template split a marked string)
    only separates pieces. Other marker pairs' characters are text like any other.
    """
    ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    newline = backend.encode("\n", add_special_tokens=False).ids
    position = 0
    first = True

    def add(piece: str, offset: int, encoder):
        nonlocal first
        if not piece:
            return
        piece_ids, offsets = _encode_piece(encoder, piece, first, newline)
        first = False
        for token_id, (s, e) in zip(piece_ids, offsets):
            ids.append(token_id)
            starts.append(offset + s)
            ends.append(offset + max(e, s))

    for match in _marked_pattern(tuple(markers)).finditer(text):
        add(text[position:match.start()], position, backend)
        if match.group(1) is not None:
            add(match.group(1), match.start() + 1, plain_backend)
        position = match.end()
    add(text[position:], position, backend)
    return MarkedEncoding(ids=ids, starts=starts, ends=ends)
