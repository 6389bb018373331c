"""What the encoder-model tasks (classification, token classification, extractive QA) share: their own
copy of the Rust tokenizer, the tokenizer facts they read, field lookup, and the failure value an
encoder hands back for one item instead of raising for the batch.

The copy (:func:`own_backend`) matters: a ``transformers`` fast tokenizer switches truncation and
padding on its Rust tokenizer at every call, so a task that shares it could see a truncation left
on by a caller. A task's copy is built from the tokenizer's JSON with truncation and padding off,
and the task switches on exactly what it needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from transforms.errors import RecordRejected


@dataclass(frozen=True)
class Failed:
    """An item an encoder could not encode; :meth:`raise_` turns it into the record's rejection."""

    reason: str
    detail: str

    def raise_(self):
        raise RecordRejected(self.reason, self.detail)


def own_backend(tokenizer):
    """A private copy of ``tokenizer``'s Rust tokenizer with truncation and padding off."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def uses_token_type_ids(tokenizer) -> bool:
    """Whether the tokenizer returns ``token_type_ids`` (BERT does, RoBERTa and Llama do not)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def special_tokens_added(tokenizer, *, pair: bool) -> int:
    """How many special tokens the tokenizer adds to one sequence (``pair=False``) or a pair."""
    return int(tokenizer.num_special_tokens_to_add(pair=pair))


def truncation_side(tokenizer) -> str:
    """``"right"`` or ``"left"``: the side ``transformers`` truncates (``tokenizer.truncation_side``)."""
    side = getattr(tokenizer, "truncation_side", "right")
    if side not in ("right", "left"):
        raise ValueError(f"unsupported truncation_side {side!r}")
    return side


def field_value(record: Mapping[str, Any], canonical: str, candidates: Sequence[str],
                field_map: Mapping[str, str]) -> tuple[str | None, Any]:
    """``(field name, value)`` of a canonical field: the mapped name when ``--field-map`` names it,
    else the first candidate present in the record; ``(None, None)`` when none is."""
    if canonical in field_map:
        name = field_map[canonical]
        return (name, record[name]) if name in record else (None, None)
    for name in candidates:
        if name in record:
            return name, record[name]
    return None, None
