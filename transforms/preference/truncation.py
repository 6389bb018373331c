"""Truncation that keeps preference pairs meaningful (pure, over int32 token arrays).

Order (``--max-prompt-length``, ``--max-completion-length``, ``--max-length``):

1. the prompt is cut from the left to ``max_prompt_length`` tokens (its end, next to the completions, stays);
2. each completion is cut from the right to ``max_completion_length`` tokens;
3. each completion is cut from the right so that prompt + completion fits ``max_length``.

A pair is never written meaningless: when the prompt alone leaves no room for a completion token under
``max_length`` it is rejected as ``pair_truncated``; when chosen and rejected are the same tokens (before or
after truncation) as ``identical_pair``. ``--truncation drop`` rejects a pair that exceeds any limit as
``too_long`` instead of cutting it. An unpaired (KTO) example follows the same steps with one completion;
one left without a completion token is rejected as ``no_loss_tokens`` ("truncation ...").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected

PREFERENCE_TRUNCATION = ("right", "drop")


@dataclass(frozen=True)
class PairLimits:
    """The length limits of preference rows (``None``: no limit); ``drop``: reject instead of cutting."""

    max_length: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    drop: bool = False


@dataclass(frozen=True)
class Truncated:
    """The kept ``prompt`` and ``completions`` and how many tokens each lost."""

    prompt: np.ndarray
    completions: tuple[np.ndarray, ...]
    prompt_cut: int
    completion_cuts: tuple[int, ...]

    @property
    def cut(self) -> int:
        return self.prompt_cut + sum(self.completion_cuts)


def _too_long(prompt: np.ndarray, completions, limits: PairLimits) -> str | None:
    if limits.max_prompt_length is not None and len(prompt) > limits.max_prompt_length:
        return f"the prompt has {len(prompt)} tokens, more than --max-prompt-length {limits.max_prompt_length}"
    for c in completions:
        if limits.max_completion_length is not None and len(c) > limits.max_completion_length:
            return f"a completion has {len(c)} tokens, more than --max-completion-length {limits.max_completion_length}"
        if limits.max_length is not None and len(prompt) + len(c) > limits.max_length:
            return f"prompt + completion is {len(prompt) + len(c)} tokens, more than --max-length {limits.max_length}"
    return None


def truncate_completions(prompt: np.ndarray, completions: tuple[np.ndarray, ...], limits: PairLimits) -> Truncated:
    """Apply ``limits`` (see the module docstring) to a prompt and its completions; raises :class:`RecordRejected`
    (``too_long`` with ``drop``, ``pair_truncated`` / ``no_loss_tokens`` when a completion would lose every token).
    Identity of chosen and rejected is the caller's check (:func:`truncate_pair`)."""
    if limits.drop:
        why = _too_long(prompt, completions, limits)
        if why is not None:
            raise RecordRejected(errors.TOO_LONG, f"{why} (--truncation drop)")
        return Truncated(prompt, completions, 0, (0,) * len(completions))
    prompt_cut = 0
    if limits.max_prompt_length is not None and len(prompt) > limits.max_prompt_length:
        prompt_cut = len(prompt) - limits.max_prompt_length
        prompt = prompt[prompt_cut:]
    budget = None
    if limits.max_completion_length is not None:
        budget = limits.max_completion_length
    if limits.max_length is not None:
        room = limits.max_length - len(prompt)
        if room <= 0:
            reason = errors.PAIR_TRUNCATED if len(completions) > 1 else errors.NO_LOSS_TOKENS
            raise RecordRejected(reason, f"truncation: the prompt keeps {len(prompt)} tokens and --max-length "
                                         f"{limits.max_length} leaves no completion token (set --max-prompt-length "
                                         "below --max-length)")
        budget = room if budget is None else min(budget, room)
    kept, cuts = [], []
    for c in completions:
        n = len(c) if budget is None else min(len(c), budget)
        kept.append(c[:n])
        cuts.append(len(c) - n)
    return Truncated(prompt, tuple(kept), prompt_cut, tuple(cuts))


def truncate_pair(prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, limits: PairLimits) -> Truncated:
    """:func:`truncate_completions` for a pair, then the identity check: raises ``identical_pair`` when the
    completions are (or become) the same tokens."""
    if len(chosen) == len(rejected) and np.array_equal(chosen, rejected):
        raise RecordRejected(errors.IDENTICAL_PAIR, f"chosen and rejected are the same {len(chosen)} tokens once "
                                                    "rendered and tokenized")
    if len(chosen) == 0 or len(rejected) == 0:
        raise RecordRejected(errors.PAIR_TRUNCATED, "a completion has no token")
    out = truncate_completions(prompt, (chosen, rejected), limits)
    kept_chosen, kept_rejected = out.completions
    if len(kept_chosen) == len(kept_rejected) and np.array_equal(kept_chosen, kept_rejected):
        raise RecordRejected(errors.IDENTICAL_PAIR, f"truncation leaves chosen and rejected the same "
                                                    f"{len(kept_chosen)} tokens (they differ after token "
                                                    f"{common_length(chosen, rejected)})")
    return out


def common_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
