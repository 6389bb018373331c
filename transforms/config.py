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

from transforms.chat_render import LOSS_MODES
from transforms.labels import TRUNCATION_MODES

PAD_TO_MODES = (None, "max_length")


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
    """

    max_length: int | None = None
    truncation: str = "right"
    loss: str = "assistant"
    pad_to: str | None = None

    def __post_init__(self):
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"--max-length must be an integer >= 2, got {self.max_length!r}")
        if self.truncation not in TRUNCATION_MODES:
            raise ValueError(f"--truncation must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation!r}")
        if self.loss not in LOSS_MODES:
            raise ValueError(f"--loss must be one of {', '.join(LOSS_MODES)}, got {self.loss!r}")
        if self.pad_to not in PAD_TO_MODES:
            raise ValueError(f"--pad-to must be 'max_length' or omitted, got {self.pad_to!r}")
        if self.pad_to == "max_length" and self.max_length is None:
            raise ValueError("--pad-to max_length needs --max-length N")

    def to_json(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "truncation": self.truncation, "loss": self.loss, "pad_to": self.pad_to}


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
    """

    format: Mapping[str, Any]
    tokenize: TokenizeOptions
    tokenizer: Mapping[str, Any]
    dedup: bool = False
    num_shards: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": dict(self.format),
            "tokenize": self.tokenize.to_json(),
            "tokenizer": dict(self.tokenizer),
            "dedup": self.dedup,
            "num_shards": self.num_shards,
            "extra": dict(self.extra),
        }

    def fingerprint(self) -> str:
        content = self.to_json()
        content.pop("num_shards")
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
