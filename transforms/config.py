"""The preprocessing configuration: one frozen, validated, fingerprinted value.

The fingerprint is the sha256 of the canonical JSON of everything that changes the rows (format
options, template and tokenizer identity, lengths, loss, truncation, padding, dedup), and nothing
that does not (input/output paths, runner options). Two datasets with the same fingerprint were
made the same way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from transforms.chat_render import LOSS_MODES, MULTI_TURN_MODES, PROMPT_MISMATCH_MODES, SYSTEM_MODES
from transforms.control_tokens import POLICIES as CONTROL_TOKEN_POLICIES
from transforms.template_env import DEFAULT_RENDER_SECONDS
from transforms.truncation import TRUNCATION_MODES

PAD_TO_MODES = (None, "max_length")


def _check_choice(option: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TokenizeOptions:
    """How rendered conversations become rows.

    Attributes:
        max_length: maximum tokens per row; ``None`` means no limit (truncation never applies).
        truncation: ``right`` (keep the start), ``left`` (keep the end), ``turns`` (drop whole oldest
            exchanges after the system message until it fits, then ``right``), ``drop`` (reject as
            ``too_long``).
        loss: ``assistant`` | ``all`` | ``last`` (see ``chat_render``).
        pad_to: ``None`` (rows unpadded) or ``"max_length"`` (rows padded to ``max_length`` with the
            pad id, labels -100, plus an ``attention_mask`` column).
        prompt_mismatch: ``diverge`` (a turn whose rendering does not continue its generation prompt is trained
            from where they diverge) or ``reject`` (such records are rejected); see ``chat_render``.
    """

    max_length: int | None = None
    truncation: str = "right"
    loss: str = "assistant"
    pad_to: str | None = None
    multi_turn: str = "auto"
    train_reasoning: bool = True
    system_mode: str = "reject"
    control_tokens: str = "text"
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    template_date: str | None = None
    render_seconds: float = DEFAULT_RENDER_SECONDS
    prompt_mismatch: str = "diverge"

    def __post_init__(self):
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"--max-length must be an integer >= 2, got {self.max_length!r}")
        _check_choice("--multi-turn", self.multi_turn, MULTI_TURN_MODES)
        _check_choice("system mode", self.system_mode, SYSTEM_MODES)
        _check_choice("--control-tokens-in-data", self.control_tokens, CONTROL_TOKEN_POLICIES)
        _check_choice("--prompt-mismatch", self.prompt_mismatch, PROMPT_MISMATCH_MODES)
        if not isinstance(self.template_kwargs, Mapping) or not all(isinstance(k, str) for k in self.template_kwargs):
            raise ValueError("--chat-template-kwargs must be a JSON object")
        if not (isinstance(self.render_seconds, (int, float)) and 0 < self.render_seconds <= 3600):
            raise ValueError(f"--template-timeout must be in (0, 3600] seconds, got {self.render_seconds!r}")
        _check_choice("--truncation", self.truncation, TRUNCATION_MODES)
        _check_choice("--loss", self.loss, LOSS_MODES)
        if self.pad_to not in PAD_TO_MODES:
            raise ValueError(f"--pad-to must be 'max_length' or omitted, got {self.pad_to!r}")
        if self.pad_to == "max_length" and self.max_length is None:
            raise ValueError("--pad-to max_length needs --max-length N")

    def to_json(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "truncation": self.truncation, "loss": self.loss, "pad_to": self.pad_to,
                "multi_turn": self.multi_turn, "train_reasoning": self.train_reasoning,
                "system_mode": self.system_mode, "control_tokens": self.control_tokens,
                "template_kwargs": dict(self.template_kwargs), "template_date": self.template_date,
                "render_seconds": self.render_seconds, "prompt_mismatch": self.prompt_mismatch}


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything that determines the rows of a dataset.

    Attributes:
        format: ``FormatOptions.to_json()`` of the record-format options.
        tokenize: the :class:`TokenizeOptions`.
        tokenizer: the tokenizer's manifest description (name, vocab hash, special ids, template hash).
        dedup: keep only the first of exact-duplicate conversations.
        num_shards: requested shard count, ``None`` for automatic (recorded, but not part of the
            fingerprint: sharding does not change rows).
        extra: further options of extensions (e.g. images), part of the fingerprint.
        task: ``{"name", "options"}`` of a task other than chat (``--task``), part of the fingerprint;
            ``None`` for the chat task, whose config (and fingerprint) carries no ``task`` key.
        mixture: the datasets of a job config file (``Mixture.to_json()``: each dataset's record options and
            share, the seed and stopping strategy where they decide something), part of the fingerprint;
            ``None`` (and no ``mixture`` key) for a job without a datasets list.
    """

    format: Mapping[str, Any]
    tokenize: TokenizeOptions
    tokenizer: Mapping[str, Any]
    dedup: bool = False
    num_shards: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    task: Mapping[str, Any] | None = None
    mixture: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        content = {
            "format": dict(self.format),
            "tokenize": self.tokenize.to_json(),
            "tokenizer": dict(self.tokenizer),
            "dedup": self.dedup,
            "num_shards": self.num_shards,
            "extra": dict(self.extra),
        }
        if self.task is not None:  # chat configs keep their historical content (and fingerprints)
            content["task"] = dict(self.task)
        if self.mixture is not None:  # only jobs with a datasets list carry it
            content["mixture"] = dict(self.mixture)
        return content

    def fingerprint(self) -> str:
        content = self.to_json()
        content.pop("num_shards")
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
