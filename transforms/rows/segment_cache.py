"""Encoding rendered texts segment by segment, each repeated segment encoded once (exact, or not used).

Why: rendered chat texts repeat much of themselves across records (the default system prompt, role
headers, ``"\\n"`` between turns); the Rust tokenizer would encode them again for every record.

How the Rust tokenizer encodes (``tokenizers`` ``AddedVocabulary::extract_and_normalize`` and
``Tokenizer::encode``): it first splits the raw text at the matches of its *non-normalized* added tokens
(one Aho-Corasick automaton over all their contents, leftmost-longest); every other piece is then
normalized, split at normalized added tokens, pre-tokenized and run through the model on its own, and the
tokens of all pieces are concatenated. So a text split in Python exactly where the Rust splitter splits can
be encoded piece by piece: each piece encoded alone gives the tokens it gets inside the whole text, with its
offsets shifted by the piece's start (in characters, the unit of the Python binding's offsets). Pieces are
kept in a bounded LRU cache keyed by their text, so a repeated piece is encoded once.

This is exact only when nothing depends on where a piece sits in the whole text. :func:`segment_encoder_for`
checks, from the tokenizer's JSON, and returns ``None`` (callers then encode whole texts, as before) unless:

* every non-normalized added token has ``lstrip = rstrip = single_word = False`` (they would move or drop
  split points) and ``encode_special_tokens`` is off; normalized added tokens are not split at (Rust
  matches them inside the normalized pieces, which happens the same way for a piece encoded alone);
* no truncation and no padding are set on the backend;
* the normalizer, pre-tokenizer and post-processor are of types on an allow-list, checked to act on each
  piece without looking at its position in the text. Excluded: Metaspace with ``prepend_scheme`` ``first``
  (it prepends only to the piece at offset 0) or without a ``prepend_scheme``; ByteLevel / RobertaProcessing
  post-processors with ``trim_offsets`` *and* ``add_prefix_space`` (their offset trimming treats the token
  at offset 0 specially); any type not on the list;
* the model is BPE (without dropout), WordPiece, WordLevel or Unigram.

The Python split (a regular expression of the escaped added-token contents, longest first) finds the
leftmost-longest matches the Rust automaton finds; a piece between two matches holds no match of its own,
so encoded alone it is not split further.

The result of a text is a :class:`SegmentEncoding` with what the job reads from a ``tokenizers.Encoding``:
``ids``, ``offsets`` (character offsets into the whole text) and ``char_to_token`` (the first token whose
offsets cover a character, ``None`` if none), with the same values.
"""
from __future__ import annotations

import bisect
import json
import re
from collections import OrderedDict
from typing import Any, Sequence

#: Cache bounds: entries kept (least recently used evicted first; a hit refreshes an entry, so a segment in
#: every record is never evicted) and the longest piece (in characters) that is kept.
MAX_ENTRIES = 4096
MAX_PIECE_CHARS = 4096

_NORMALIZERS = {"BertNormalizer", "Strip", "StripAccents", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Nmt",
                "Precompiled", "Replace", "Prepend", "ByteLevel"}
_PRE_TOKENIZERS = {"BertPreTokenizer", "ByteLevel", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits",
                   "Split", "CharDelimiterSplit", "UnicodeScripts", "FixedLength"}
_POST_PROCESSORS = {"TemplateProcessing", "BertProcessing"}
_MODELS = {"WordPiece", "WordLevel", "Unigram"}


def _unqualified_component(kind: str, component: dict | None) -> str | None:
    """Why a normalizer / pre-tokenizer / post-processor definition is not piece-local, or ``None``."""
    if component is None:
        return None
    type_ = component.get("type")
    if type_ == "Sequence":
        key = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "post_processor": "processors"}[kind]
        for part in component.get(key) or ():
            reason = _unqualified_component(kind, part)
            if reason:
                return reason
        return None
    if kind == "normalizer" and type_ in _NORMALIZERS:
        return None
    if kind == "pre_tokenizer":
        if type_ in _PRE_TOKENIZERS:
            return None
        if type_ == "Metaspace":
            scheme = component.get("prepend_scheme")
            return None if scheme in ("always", "never") else f"Metaspace prepend_scheme {scheme!r}"
    if kind == "post_processor":
        if type_ in _POST_PROCESSORS:
            return None
        if type_ in ("ByteLevel", "RobertaProcessing"):
            if component.get("trim_offsets") and component.get("add_prefix_space"):
                return f"{type_} post-processor trims offsets with add_prefix_space"
            return None
    return f"{kind} {type_!r} is not on the allow-list"


def unqualified_reason(backend, definition: dict | None = None) -> str | None:
    """Why segment-cached encoding would not be exact for the ``tokenizers.Tokenizer`` ``backend``
    (``None`` when it is); ``definition``: its JSON, parsed (read from ``backend`` when not given)."""
    if getattr(backend, "encode_special_tokens", False):
        return "encode_special_tokens is set"
    if definition is None:
        definition = json.loads(backend.to_str())
    if definition.get("truncation") or definition.get("padding"):
        return "the backend truncates or pads"
    model = definition.get("model") or {}
    if model.get("type") == "BPE":
        if model.get("dropout"):
            return "BPE dropout"
    elif model.get("type") not in _MODELS:
        return f"model {model.get('type')!r} is not on the allow-list"
    for kind in ("normalizer", "pre_tokenizer", "post_processor"):
        reason = _unqualified_component(kind, definition.get(kind))
        if reason:
            return reason
    for token in definition.get("added_tokens") or ():
        if not token.get("normalized") and (token.get("lstrip") or token.get("rstrip") or token.get("single_word")):
            return f"added token {token.get('content')!r} has lstrip/rstrip/single_word"
    return None


def segment_encoder_for(backend, **bounds) -> SegmentEncoder | None:
    """A :class:`SegmentEncoder` for ``backend``, or ``None`` when it would not be exact."""
    definition = json.loads(backend.to_str())
    if unqualified_reason(backend, definition) is not None:
        return None
    contents = {t["content"] for t in definition.get("added_tokens") or () if not t.get("normalized") and t["content"]}
    return SegmentEncoder(backend, contents, **bounds)


class _Segment:
    """One piece's encoding (piece-relative offsets)."""

    __slots__ = ("ids", "length", "encoding")

    def __init__(self, encoding, length: int):
        self.encoding = encoding
        self.ids = encoding.ids
        self.length = length


class SegmentEncoding:
    """A whole text's encoding assembled from its pieces; reads like a ``tokenizers.Encoding``.

    Attributes:
        ids: token ids (``list[int]``).
    """

    __slots__ = ("ids", "_segments", "_char_starts", "_token_starts", "_length", "_offsets")

    def __init__(self, segments: list[_Segment]):
        ids: list[int] = []
        char_starts: list[int] = []
        token_starts: list[int] = []
        position = 0
        for segment in segments:
            char_starts.append(position)
            token_starts.append(len(ids))
            ids += segment.ids
            position += segment.length
        self.ids = ids
        self._segments = segments
        self._char_starts = char_starts
        self._token_starts = token_starts
        self._length = position
        self._offsets = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Per token, its ``(start, end)`` character offsets in the whole text."""
        if self._offsets is None:
            offsets: list[tuple[int, int]] = []
            for segment, shift in zip(self._segments, self._char_starts):
                offsets += [(start + shift, end + shift) for start, end in segment.encoding.offsets] \
                    if shift else segment.encoding.offsets
            self._offsets = offsets
        return self._offsets

    @property
    def tokens(self) -> list[str]:
        """Per token, its string."""
        return [token for segment in self._segments for token in segment.encoding.tokens]

    def char_to_token(self, char_pos: int, sequence_index: int = 0) -> int | None:
        """Index of the first token whose offsets cover character ``char_pos``, or ``None``
        (``tokenizers.Encoding.char_to_token``; one sequence, so ``sequence_index`` changes nothing)."""
        if char_pos < 0:
            raise OverflowError("can't convert negative int to unsigned")
        if char_pos >= self._length:
            return None
        k = bisect.bisect_right(self._char_starts, char_pos) - 1
        # A piece's tokens lie inside the piece, so the first token covering the character is in its piece.
        local = self._segments[k].encoding.char_to_token(char_pos - self._char_starts[k])
        return None if local is None else self._token_starts[k] + local


class SegmentEncoder:
    """Encodes texts piece by piece (pieces split at added tokens), with a bounded cache of pieces.

    Build it with :func:`segment_encoder_for`, which checks that this is exact for the tokenizer.

    Args:
        backend: the ``tokenizers.Tokenizer``.
        split_tokens: the contents of the added tokens to split at (the non-normalized ones).
        max_entries, max_piece_chars: cache bounds.
    """

    def __init__(self, backend, split_tokens, *, max_entries: int = MAX_ENTRIES,
                 max_piece_chars: int = MAX_PIECE_CHARS):
        self.backend = backend
        ordered = sorted(set(split_tokens), key=lambda s: (-len(s), s))  # longest first: leftmost-longest
        self._split_tokens = tuple(ordered)
        self._split = re.compile("(" + "|".join(map(re.escape, ordered)) + ")").split if ordered else None
        self.max_entries = max_entries
        self.max_piece_chars = max_piece_chars
        self._cache: OrderedDict[str, _Segment] = OrderedDict()

    def pieces(self, text: str) -> list[str]:
        """``text`` split where the Rust tokenizer splits it: added-token matches and the text between."""
        if self._split is None:
            return [text] if text else []
        return [piece for piece in self._split(text) if piece]

    def encode_batch(self, texts: Sequence[str]) -> list[SegmentEncoding]:
        """One :class:`SegmentEncoding` per text; the pieces not in the cache are encoded in one
        ``encode_batch`` call (the Rust tokenizer's parallelism is kept)."""
        cache = self._cache
        found: dict[str, _Segment | None] = {}  # this batch's pieces (a hit stays found if evicted below)
        plans = []
        for text in texts:
            plan = self.pieces(text)
            for piece in plan:
                if piece not in found:
                    segment = cache.get(piece)
                    if segment is not None:
                        cache.move_to_end(piece)
                    found[piece] = segment
            plans.append(plan)
        missing = [piece for piece, segment in found.items() if segment is None]
        if missing:
            for piece, encoding in zip(missing, self.backend.encode_batch(missing, add_special_tokens=False)):
                segment = found[piece] = _Segment(encoding, len(piece))
                if len(piece) <= self.max_piece_chars:
                    cache[piece] = segment
            while len(cache) > self.max_entries:
                cache.popitem(last=False)
        return [SegmentEncoding([found[piece] for piece in plan]) for plan in plans]
