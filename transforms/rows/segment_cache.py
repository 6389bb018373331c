"""Encoding rendered texts segment by segment, each repeated segment encoded once (exact, or not used).

Why: rendered chat texts repeat much of themselves across records (the default system prompt, role
headers, ``"\\n"`` between turns); the Rust tokenizer would encode them again for every record.

How the Rust tokenizer encodes (``tokenizers`` ``AddedVocabulary::extract_and_normalize`` and
``Tokenizer::encode``): it first splits the raw text at the matches of its *non-normalized* added tokens
(one Aho-Corasick automaton over all their contents, leftmost-longest); every other piece is then
normalized, split at normalized added tokens, pre-tokenized and run through the model on its own, and the
tokens of all pieces are concatenated. So a text split in Python exactly where the Rust splitter splits can
be encoded piece by piece: each piece encoded alone gives the tokens it gets inside the whole text, with its
offsets shifted by the piece's start (in characters, the unit of the Python binding's offsets). The same
holds for a run of consecutive pieces. So a text is cut into *segments*: a piece of at least
``MIN_SEGMENT_CHARS`` characters already seen in an earlier text (e.g. the default system prompt) is a
segment of its own, the runs of pieces between such pieces are the others (each text given to the Rust
tokenizer has a fixed cost, so short pieces are not encoded one by one). Segments are kept in a bounded
LRU cache keyed by their text, so a repeated segment is encoded once; the cache misses of a batch are
encoded in one ``encode_batch`` call.

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
offsets cover a character, ``None`` if none), with the same values; a text that is one segment gets the
``tokenizers.Encoding`` itself. (Behaviour read from the ``tokenizers`` 0.23 sources; the tests compare
against whole-text ``encode_batch`` on several tokenizer kinds, so a change there shows up as a failure.)
"""
from __future__ import annotations

import bisect
import json
import re
from collections import OrderedDict
from typing import Sequence

#: Cache bounds: entries kept (least recently used evicted first; a hit refreshes an entry, so a segment in
#: every record is never evicted) and the longest segment (in characters) that is kept.
MAX_ENTRIES = 4096
#: and the characters kept in all (a ``tokenizers.Encoding`` holds 20 to 60 bytes a character of its text, so
#: 10 to 30 MiB a process at most).
MAX_CACHED_CHARS = 1 << 19
MAX_PIECE_CHARS = 4096
#: The shortest piece encoded on its own once it repeats. Each text given to the Rust tokenizer costs about
#: as much as encoding 20-30 characters, so shorter pieces (added tokens, ``"\n"``, role names) stay in the
#: run of consecutive pieces they sit in, which is encoded (and cached) as one text.
MIN_SEGMENT_CHARS = 32

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


def _component_json(component) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())


def backend_definition(backend) -> dict:
    """The parts of the ``tokenizers.Tokenizer`` ``backend``'s JSON that the check reads, from its components:
    normalizer, pre-tokenizer and post-processor (their own JSON), the model's type and BPE dropout, the added
    tokens' flags, truncation and padding. (``backend.to_str()`` would serialize the vocabulary too: 0.5 s for
    a 150k-token BPE, in every worker.)"""
    model = backend.model
    model_type = type(model).__name__
    return {
        "normalizer": _component_json(backend.normalizer),
        "pre_tokenizer": _component_json(backend.pre_tokenizer),
        "post_processor": _component_json(backend.post_processor),
        "model": {"type": model_type, **({"dropout": model.dropout} if model_type == "BPE" else {})},
        "added_tokens": [{"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "single_word": t.single_word,
                          "normalized": t.normalized} for t in backend.get_added_tokens_decoder().values()],
        "truncation": backend.truncation,
        "padding": backend.padding,
    }


def unqualified_reason(backend, definition: dict | None = None) -> str | None:
    """Why segment-cached encoding would not be exact for the ``tokenizers.Tokenizer`` ``backend``
    (``None`` when it is); ``definition``: its JSON, parsed (:func:`backend_definition` when not given)."""
    if getattr(backend, "encode_special_tokens", False):
        return "encode_special_tokens is set"
    if definition is None:
        definition = backend_definition(backend)
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
    definition = backend_definition(backend)
    if unqualified_reason(backend, definition) is not None:
        return None
    contents = {t["content"] for t in definition.get("added_tokens") or () if not t.get("normalized") and t["content"]}
    return SegmentEncoder(backend, contents, **bounds)


class _Segment:
    """One segment's encoding (segment-relative offsets)."""

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
    """Encodes texts segment by segment (cut at added tokens, see the module docstring), with a bounded
    cache of segments.

    Build it with :func:`segment_encoder_for`, which checks that this is exact for the tokenizer.

    Args:
        backend: the ``tokenizers.Tokenizer``.
        split_tokens: the contents of the added tokens to split at (the non-normalized ones).
        max_entries, max_piece_chars, max_cached_chars: cache bounds (entries, longest piece kept, characters
            kept in all; the least recently used entries go first).
        min_segment_chars: the shortest repeated piece made a segment of its own.
    """

    def __init__(self, backend, split_tokens, *, max_entries: int = MAX_ENTRIES,
                 max_piece_chars: int = MAX_PIECE_CHARS, min_segment_chars: int = MIN_SEGMENT_CHARS,
                 max_cached_chars: int = MAX_CACHED_CHARS):
        self.backend = backend
        ordered = sorted(set(split_tokens), key=lambda s: (-len(s), s))  # longest first: leftmost-longest
        self._split_tokens = tuple(ordered)
        self._split = re.compile("(" + "|".join(map(re.escape, ordered)) + ")").split if ordered else None
        self.max_entries = max_entries
        self.max_piece_chars = max_piece_chars
        self.min_segment_chars = min_segment_chars
        self.max_cached_chars = max_cached_chars
        self._cached_chars = 0
        #: characters of the last batch's texts, and of them those not given to the Rust tokenizer
        self.last_batch_chars = self.last_batch_saved_chars = 0
        self._cache: OrderedDict[str, _Segment] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()  # hashes of pieces seen once (bounded)

    def pieces(self, text: str) -> list[str]:
        """``text`` split where the Rust tokenizer splits it: added-token matches and the text between."""
        if self._split is None:
            return [text] if text else []
        return [piece for piece in self._split(text) if piece]

    def segments(self, text: str) -> list[str]:
        """``text`` cut into segments: repeated pieces of at least ``min_segment_chars`` characters, and the
        runs of pieces between them."""
        cache, seen = self._cache, self._seen
        low, high = self.min_segment_chars, self.max_piece_chars
        out: list[str] = []
        run: list[str] = []
        for piece in self.pieces(text):
            if low <= len(piece) <= high:
                if piece not in cache:
                    key = hash(piece)
                    if key not in seen:
                        seen[key] = None
                        if len(seen) > 4 * self.max_entries:
                            seen.popitem(last=False)
                        run.append(piece)
                        continue
                if run:
                    out.append("".join(run))
                    run = []
                out.append(piece)
            else:
                run.append(piece)
        if run:
            out.append("".join(run))
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[SegmentEncoding]:
        """One encoding per text: a :class:`SegmentEncoding`, or the ``tokenizers.Encoding`` of a text that is
        one segment (shared with the cache: read it, never change it). The segments not in the cache are
        encoded in one ``encode_batch`` call (the Rust tokenizer's parallelism is kept)."""
        cache = self._cache
        found: dict[str, _Segment | None] = {}  # this batch's segments (a hit stays found if evicted below)
        reused: dict[str, None] = {}  # hits, and segments used twice in this batch: kept before the batch's others
        plans = []
        for text in texts:
            plan = self.segments(text)
            for segment in plan:
                if segment not in found:
                    entry = cache.get(segment)
                    if entry is not None:
                        reused[segment] = None
                    found[segment] = entry
                elif found[segment] is None:
                    reused[segment] = None
            plans.append(plan)
        missing = [segment for segment, entry in found.items() if entry is None]
        self.last_batch_chars = sum(map(len, texts))
        self.last_batch_saved_chars = self.last_batch_chars - sum(map(len, missing))
        if missing:
            high = self.max_piece_chars
            for segment, encoding in zip(missing, self.backend.encode_batch(missing, add_special_tokens=False)):
                entry = found[segment] = _Segment(encoding, len(segment))
                if len(segment) <= high and segment not in cache:
                    cache[segment] = entry
                    self._cached_chars += len(segment)
        # least recently used first out; what this batch used again is the most recent, so the batch's new
        # one-off segments go before a segment that every record uses (e.g. the default system prompt)
        for segment in reused:
            if segment in cache:
                cache.move_to_end(segment)
        while cache and (len(cache) > self.max_entries or self._cached_chars > self.max_cached_chars):
            self._cached_chars -= len(cache.popitem(last=False)[0])
        return [found[plan[0]].encoding if len(plan) == 1 else SegmentEncoding([found[segment] for segment in plan])
                for plan in plans]
