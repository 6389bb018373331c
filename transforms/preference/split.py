"""Where the prompt ends and a completion begins, with the chat template machinery of SFT labels.

A completion (chosen, rejected, or a KTO completion) is rendered after its prompt with the job's
:class:`~transforms.chat_render.ChatRenderer`: the messages ``prompt + completion`` with only the
completion's assistant turns supervised, as one row: the whole conversation where the template renders the
completion there as at inference, else its inference prompt ``P_i`` followed by the turn (a completion of
several turns that the template renders differently once later turns follow is rejected as
``not_prefix_preserving``). The completion is then
exactly what SFT would train for those turns, from the first character of the first supervised turn to the
end of the last one: what the template renders after the generation prompt ``P_i``, through the
end-of-turn token the model must learn to emit, without the whitespace or end-of-conversation suffix the
template writes after it (the SFT end rule), with the reasoning and any tool messages between the turns.
Where the template renders the turn differently from what follows its generation prompt, the
prompt-mismatch rule of SFT applies (``docs/labels.md``) and is recorded.

The token split (:func:`split_tokens`) works on the encodings of the two full texts (prompt + chosen, prompt +
rejected): each completion starts at the first token that holds a character of it (the overlap rule of SFT
labels), and the prompt is the tokens both texts share before that. So ``prompt_ids + chosen_ids`` is the
tokenized text of the chosen conversation and ``prompt_ids + rejected_ids`` the rejected one, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.chat_render import ChatRenderer, PromptMismatch
from transforms.errors import RecordRejected
from transforms.labels import span_token_ranges


@dataclass(frozen=True)
class RenderedSide:
    """One completion rendered after its prompt.

    Attributes:
        text: the rendering of ``prompt + completion``, cut at the end of the completion's last turn.
        start: where the completion starts in ``text`` (``text[:start]`` is the prompt as rendered before it).
        mismatches: the completion's turns trained by the prompt-mismatch rule.
    """

    text: str
    start: int
    mismatches: tuple[PromptMismatch, ...] = ()


def render_side(renderer: ChatRenderer, prompt: Sequence[Mapping], completion: Sequence[Mapping], *,
                tools=None, template_kwargs: Mapping | None = None) -> RenderedSide:
    """Render one completion after its prompt (raises ``RecordRejected`` as SFT labels do)."""
    messages = [*prompt, *completion]
    trainable = [False] * len(prompt) + [m.get("role") == "assistant" for m in completion]
    rows = renderer.render_rows(messages, tools=list(tools) if tools else None, trainable=trainable,
                                template_kwargs=template_kwargs, multi_turn="auto")
    if len(rows) != 1:
        raise RecordRejected(errors.NOT_PREFIX_PRESERVING, "the chat template renders the completion's earlier turns "
                                                           "differently once later turns follow, so the completion has "
                                                           "no one rendering")
    row = rows[0]
    start, end = row.turn_spans[0][0], row.turn_spans[-1][1]
    return RenderedSide(text=row.text[:end], start=start, mismatches=row.prompt_mismatches)


def first_completion_token(encoding, start: int, length: int) -> int:
    """Index of the first token of ``encoding`` that holds a character at or after ``start`` (of a text of
    ``length`` characters): where the completion begins in tokens."""
    first, end = span_token_ranges(encoding, [(start, length)])[0]
    return first if end > first else len(encoding.ids)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


@dataclass(frozen=True)
class TokenSplit:
    """``prompt_ids`` and the completions' ids (int32 arrays); ``moved``: the completion start moved back from
    where the chosen or the rejected text's completion begins (a token holding prompt and completion
    characters, or the two texts tokenized differently before it)."""

    prompt: np.ndarray
    completions: tuple[np.ndarray, ...]
    moved: bool


def split_tokens(encodings: Sequence, starts: Sequence[int], lengths: Sequence[int]) -> TokenSplit:
    """The prompt/completion split of one or two encoded texts (see the module docstring).

    Args:
        encodings: the ``tokenizers.Encoding`` of each full text (prompt + completion).
        starts: where each completion starts in its text (characters).
        lengths: each text's length in characters.
    """
    ids = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    firsts = [first_completion_token(e, s, n) for e, s, n in zip(encodings, starts, lengths)]
    k = min(firsts)
    for other in ids[1:]:
        k = min(k, common_prefix(ids[0], other))
    exact = all(e.offsets[f][0] >= s for e, f, s in zip(encodings, firsts, starts) if f < len(e.ids))
    return TokenSplit(prompt=ids[0][:k], completions=tuple(i[k:] for i in ids),
                      moved=k < max(firsts) or not exact)


def split_plain(prompt_ids: np.ndarray, full_ids: Sequence[np.ndarray]) -> TokenSplit:
    """TRL's split of a plain-text record: the completion starts where the tokenized prompt and each tokenized
    prompt + completion part (the shortest common prefix of all of them)."""
    k = len(prompt_ids)
    for ids in full_ids:
        k = min(k, common_prefix(prompt_ids, ids))
    return TokenSplit(prompt=np.asarray(prompt_ids[:k], dtype=np.int32),
                      completions=tuple(np.asarray(i[k:], dtype=np.int32) for i in full_ids),
                      moved=k < len(prompt_ids))
