"""Rendered text -> ``tokenizers.Encoding``, in batches, keeping marked control-token strings text."""
from __future__ import annotations

from typing import Any, Sequence

from transforms.control_tokens import encode_marked, plain_text_backend
from transforms.rows.segment_cache import segment_encoder_for

#: The segment cache pays for its Python split only when enough text repeats. It is tried for TRIAL_BATCHES
#: batches; when it spared the Rust tokenizer less than MIN_SAVED of the characters, whole texts are encoded
#: for the next PAUSE_BATCHES batches, then it is tried again. (Both ways give the same encodings.)
TRIAL_BATCHES = 8
PAUSE_BATCHES = 64
MIN_SAVED = 0.10


class TextEncoder:
    """Encodes rendered texts with a tokenizer's Rust backend, without adding special tokens.

    Texts holding marked control-token strings (``--control-tokens-in-data text``, see
    :mod:`transforms.control_tokens`; the caller names their marker pair) are encoded piecewise; the
    others (whatever characters they hold, noncharacters included) in one parallel
    ``encode_batch`` call: segment by segment with repeated segments encoded once
    (:mod:`transforms.rows.segment_cache`) where that is exact for the tokenizer and enough text repeats
    (see :data:`MIN_SAVED`), whole texts otherwise.

    Args:
        backend: the tokenizer's ``tokenizers.Tokenizer``.
        control_tokens: the strings that are kept text where marked.
        segment_cache: use the segment cache where it is exact (``False``: always whole texts).
    """

    def __init__(self, backend, control_tokens: Sequence[str], *, segment_cache: bool = True):
        self.backend = backend
        self.segments = segment_encoder_for(backend) if segment_cache else None
        self.control_tokens = tuple(control_tokens)
        self._plain_backend = None  # built on the first text that holds marked control-token strings
        self._trial_batches = self._trial_chars = self._trial_saved = 0  # the current trial's batches, characters
        self._paused = 0  # batches still to encode whole

    def encode(self, texts: Sequence[str], markers: Sequence[tuple[str, str] | None] | None = None) -> list[Any]:
        """One encoding per text, in order. ``markers``: per text, the marker pair its control-token strings
        are marked with, or ``None`` for a text that is not marked (all of them when ``markers`` is
        ``None``); a text is never searched for marker characters."""
        if not texts:
            return []
        marked = [] if markers is None else [i for i, pair in enumerate(markers) if pair is not None]
        if not marked:
            return self._encode_plain(list(texts))
        if self._plain_backend is None:
            self._plain_backend = plain_text_backend(self.backend, self.control_tokens)
        marked_set = set(marked)
        plain = [i for i in range(len(texts)) if i not in marked_set]
        out: list[Any] = [None] * len(texts)
        encoded = self._encode_plain([texts[i] for i in plain]) if plain else []
        for i, encoding in zip(plain, encoded):
            out[i] = encoding
        for i in marked:
            out[i] = encode_marked(texts[i], self.backend, self._plain_backend, markers[i])
        return out

    def _encode_plain(self, texts: list[str]) -> list[Any]:
        segments = self.segments
        exact = segments is not None and self.backend.truncation is None and self.backend.padding is None
        if not exact or self._paused:
            self._paused = max(self._paused - 1, 0)
            return self.backend.encode_batch(texts, add_special_tokens=False)
        out = segments.encode_batch(texts)
        self._trial_batches += 1
        self._trial_chars += segments.last_batch_chars
        self._trial_saved += segments.last_batch_saved_chars
        if self._trial_batches >= TRIAL_BATCHES:
            if self._trial_saved < MIN_SAVED * self._trial_chars:
                self._paused = PAUSE_BATCHES
            self._trial_batches = self._trial_chars = self._trial_saved = 0
        return out

    @property
    def segment_cache_active(self) -> bool:
        """Whether the next batch goes through the segment cache."""
        return self.segments is not None and not self._paused
