"""Rendered text -> ``tokenizers.Encoding``, in batches, keeping marked control-token strings text."""
from __future__ import annotations

from typing import Any, Sequence

from transforms.control_tokens import MARK_CLOSE, MARK_OPEN, encode_marked, plain_text_backend


class TextEncoder:
    """Encodes rendered texts with a tokenizer's Rust backend, without adding special tokens.

    Texts holding marked control-token strings (``--control-tokens-in-data text``, see
    :mod:`transforms.control_tokens`) are encoded piecewise; the others in one parallel
    ``encode_batch`` call.

    Args:
        backend: the tokenizer's ``tokenizers.Tokenizer``.
        control_tokens: the strings that are kept text where marked.
    """

    def __init__(self, backend, control_tokens: Sequence[str]):
        self.backend = backend
        self.control_tokens = tuple(control_tokens)
        self._plain_backend = None  # built on the first text that holds marked control-token strings

    def encode(self, texts: Sequence[str]) -> list[Any]:
        """One encoding per text, in order."""
        if not texts:
            return []
        marked = [i for i, text in enumerate(texts) if MARK_OPEN in text or MARK_CLOSE in text]
        if not marked:
            return self.backend.encode_batch(list(texts), add_special_tokens=False)
        if self._plain_backend is None:
            self._plain_backend = plain_text_backend(self.backend, self.control_tokens)
        marked_set = set(marked)
        plain = [i for i in range(len(texts)) if i not in marked_set]
        out: list[Any] = [None] * len(texts)
        encoded = self.backend.encode_batch([texts[i] for i in plain], add_special_tokens=False) if plain else []
        for i, encoding in zip(plain, encoded):
            out[i] = encoding
        for i in marked:
            out[i] = encode_marked(texts[i], self.backend, self._plain_backend)
        return out
