"""Show which tokens of a row are trained: decoding by mask runs, for the terminal and for HTML.

A row is split into *runs* of consecutive tokens that are all trained (label != -100) or all not
trained; each run is decoded on its own (special tokens kept), so the text reads exactly as the
model sees it and the trained parts can be marked. (A multi-byte character split across a run
boundary shows as U+FFFD; run boundaries are almost always at template tokens.) Long repeats of
one special token (image placeholders) are shown once with a count, e.g. ``<|image_pad|>×64``.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from transforms.shard_format import IGNORE_INDEX

ANSI_TRAINED = "\x1b[1;32m"   # bold green
ANSI_PROMPT = "\x1b[2m"        # dim
ANSI_RESET = "\x1b[0m"
OPEN, CLOSE = "[", "]"
COLLAPSE_REPEATS = 4  # this many identical special tokens in a row are shown once with a count


@dataclass(frozen=True)
class Run:
    trained: bool
    ids: tuple[int, ...]
    text: str = ""


def mask_runs(input_ids: Sequence[int], labels: Sequence[int], length: int | None = None) -> list[Run]:
    """Split the first ``length`` tokens into runs of equal trained-ness (no decoding)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    labs = np.asarray(labels, dtype=np.int64)
    n = len(ids) if length is None else int(length)
    ids, labs = ids[:n], labs[:n]
    if n == 0:
        return []
    trained = labs != IGNORE_INDEX
    cuts = np.flatnonzero(trained[1:] != trained[:-1]) + 1
    starts = [0, *cuts.tolist()]
    ends = [*cuts.tolist(), n]
    return [Run(bool(trained[a]), tuple(int(i) for i in ids[a:b])) for a, b in zip(starts, ends)]


def special_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's special tokens (declared ones and added tokens marked special)."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return frozenset(ids)


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def decode_ids(tokenizer, ids: Sequence[int], *, specials: frozenset[int] = frozenset(),
               collapse: int = COLLAPSE_REPEATS) -> str:
    """Decode ``ids``; ``collapse`` or more consecutive copies of one special token (image
    placeholders such as ``<|image_pad|>``) are written once with a count: ``<|image_pad|>×64``."""
    if not collapse or not specials:
        return _decode(tokenizer, ids)
    parts: list[str] = []
    plain: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        j = i
        if ids[i] in specials:
            while j < n and ids[j] == ids[i]:
                j += 1
        if j - i >= collapse:
            if plain:
                parts.append(_decode(tokenizer, plain))
                plain = []
            parts.append(f"{_decode(tokenizer, [ids[i]])}×{j - i}")
            i = j
        else:
            plain.append(ids[i])
            i += 1
    if plain:
        parts.append(_decode(tokenizer, plain))
    return "".join(parts)


def decode_runs(tokenizer, runs: Sequence[Run], *, collapse: int = COLLAPSE_REPEATS) -> list[Run]:
    """Decode every run's ids with ``tokenizer`` (special tokens kept, long repeats collapsed)."""
    specials = special_ids(tokenizer) if collapse else frozenset()
    return [Run(run.trained, run.ids, decode_ids(tokenizer, run.ids, specials=specials, collapse=collapse))
            for run in runs]


def elide(runs: Sequence[Run], *, max_tokens: int | None, tail_tokens: int = 0) -> list[Run | None]:
    """Keep the first ``max_tokens - tail_tokens`` and the last ``tail_tokens`` tokens; ``None``
    marks the elided middle. Runs are split where needed (ids only: call before decoding)."""
    total = sum(len(run.ids) for run in runs)
    if max_tokens is None or total <= max_tokens:
        return list(runs)
    head_budget = max_tokens - tail_tokens
    head: list[Run | None] = []
    used = 0
    for run in runs:
        if used >= head_budget:
            break
        take = run.ids[: head_budget - used]
        head.append(Run(run.trained, take))
        used += len(take)
    tail: list[Run] = []
    used = 0
    for run in reversed(runs):
        if used >= tail_tokens:
            break
        take = run.ids[max(0, len(run.ids) - (tail_tokens - used)):]
        tail.append(Run(run.trained, take))
        used += len(take)
    return [*head, None, *reversed(tail)]


def render_terminal(runs: Sequence[Run | None], *, color: bool, elided: int = 0) -> str:
    """Decoded runs as terminal text: trained runs bold green (``color``) or in ``[...]``."""
    parts = []
    for run in runs:
        if run is None:
            gap = f" … {elided} tokens not shown … " if elided else " … "
            parts.append(f"{ANSI_PROMPT}{gap}{ANSI_RESET}" if color else gap)
        elif color:
            style = ANSI_TRAINED if run.trained else ANSI_PROMPT
            # re-apply the style after each newline so pagers keep it
            parts.append(style + run.text.replace("\n", f"{ANSI_RESET}\n{style}") + ANSI_RESET)
        else:
            parts.append(f"{OPEN}{run.text}{CLOSE}" if run.trained else run.text)
    return "".join(parts)


def render_html(runs: Sequence[Run | None], *, elided: int = 0) -> str:
    """Decoded runs as HTML: ``<span class="trained">`` / ``<span class="prompt">`` (escaped text)."""
    parts = []
    for run in runs:
        if run is None:
            parts.append(f'<span class="elided">… {elided} tokens not shown …</span>')
        else:
            cls = "trained" if run.trained else "prompt"
            parts.append(f'<span class="{cls}">{html.escape(run.text)}</span>')
    return "".join(parts)


def decoded_row(tokenizer, input_ids, labels, length=None, *, max_tokens: int | None = None,
                tail_tokens: int = 0, collapse: int = COLLAPSE_REPEATS) -> tuple[list[Run | None], int]:
    """Runs of a row, elided to ``max_tokens`` and decoded; returns ``(runs, elided_token_count)``."""
    runs = mask_runs(input_ids, labels, length)
    total = sum(len(run.ids) for run in runs)
    kept = elide(runs, max_tokens=max_tokens, tail_tokens=tail_tokens)
    shown = sum(len(run.ids) for run in kept if run is not None)
    decoded = [None if run is None else decode_runs(tokenizer, [run], collapse=collapse)[0] for run in kept]
    return decoded, total - shown
