"""Encoding plain texts the way ``tokenizer(texts)`` does (special tokens added by the tokenizer's
post-processor: ``[CLS] ... [SEP]`` for BERT, ``... </s>`` for T5, ``<s>`` for Llama), in one batch call.

The tasks other than chat tokenize raw fields, not rendered templates, so they encode as transformers'
example scripts do: :class:`SpecialTokensEncoder` wraps a copy of the tokenizer's Rust backend with any
truncation and padding that its ``tokenizer.json`` configures switched off (``tokenizer(texts)`` without
``truncation=`` switches them off too); truncation is the task's decision, made on the ids
(:func:`truncate_single`), with the tokenizer's special tokens kept as ``truncation=True`` keeps them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class SpecialTokensEncoder:
    """``encode(texts) -> list[tokenizers.Encoding]`` with the tokenizer's special tokens added."""

    def __init__(self, backend):
        from tokenizers import Tokenizer

        if backend.truncation is not None or backend.padding is not None:
            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        self.backend = backend

    def encode(self, texts: Sequence[str]) -> list[Any]:
        if not texts:
            return []
        return self.backend.encode_batch(list(texts), add_special_tokens=True)

    def num_special_tokens(self) -> int:
        """Special tokens the post-processor adds to one sequence (``num_special_tokens_to_add(False)``)."""
        return self.backend.post_processor.num_special_tokens_to_add(False) if self.backend.post_processor else 0


def truncate_single(ids: np.ndarray, special: np.ndarray, max_length: int | None, *, side: str = "right"):
    """``tokenizer(text, max_length=N, truncation=True)`` on an encoded single sequence: the content tokens
    (``special == 0``) are cut to ``N`` minus the special tokens, the special tokens stay where they are.

    Returns ``(kept ids, kept special mask, tokens cut)``. ``side``: ``right`` keeps the start of the
    content, ``left`` its end. Exact for post-processors that put their special tokens before and after
    the sequence (BERT, T5, BART, Llama, Qwen2), the tokenizers' truncation with stride 0.
    """
    if max_length is None or len(ids) <= max_length:
        return ids, special, 0
    content = np.flatnonzero(special == 0)
    budget = max_length - (len(ids) - len(content))
    if budget < 0:
        budget = 0
    cut = len(content) - budget
    drop = content[budget:] if side == "right" else content[:cut]
    keep = np.ones(len(ids), dtype=bool)
    keep[drop] = False
    return ids[keep], special[keep], int(cut)
