"""``--task preference`` (DPO and its relatives) and ``--task kto`` (unpaired feedback).

Records: the layouts of :mod:`transforms.preference.records` (TRL explicit and implicit prompt, LLaMA-Factory
ShareGPT/Alpaca ranking and ``chosen_messages``, OpenAI preference JSONL; KTO: TRL unpaired, a conversation
with ``label``/``kto_tag``), detected per record.

Rows (``--task preference``): ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (the columns TRL's
``DataCollatorForPreference`` reads), split with the chat template machinery of SFT labels
(:mod:`transforms.preference.split`): ``prompt_ids + chosen_ids`` is the tokenized chosen conversation as
SFT renders it (through the end-of-turn token of its last turn), ``prompt_ids`` what the model is given
(the generation prompt, or the shared context under the prompt-mismatch rule). A plain-text pair (three
strings) is tokenized as TRL does (``tokenizer(prompt)``, ``tokenizer(prompt + completion + eos)``, the
completion from where they part). Truncation keeps pairs meaningful
(:mod:`transforms.preference.truncation`). Provenance columns as every task, with ``length`` = the tokens of
the pair's two sequences (``2 * prompt + chosen + rejected``: what the model reads for the pair, so token
budgets and totals count what is computed), ``num_loss_tokens`` = chosen + rejected tokens,
``truncated_tokens`` = tokens cut from the three; plus ``prompt_hash`` (pairs of one prompt share it),
``prompt_truncated_tokens``, ``chosen_truncated_tokens``, ``rejected_truncated_tokens``,
``prompt_mismatch_turns`` (completion turns trained by the prompt-mismatch rule) and ``boundary_moved`` (a token
holds characters of both the prompt and a completion, or the two texts tokenize differently before the
completions: the completions start at that token, and ``prompt_ids`` is one token short of the tokenized prompt).

Rows (``--task kto``): ``prompt_ids``, ``completion_ids``, ``label`` (the columns of TRL's
``DataCollatorForUnpairedPreference``), the same provenance and ``prompt_hash``,
``prompt_truncated_tokens``, ``completion_truncated_tokens``, ``prompt_mismatch_turns``, ``boundary_moved``.

Runtime: ``Collator.from_manifest(out)`` is :class:`transforms.runtime.preference.PreferenceCollator` /
:class:`~transforms.runtime.preference.KtoCollator`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats.conversation import Conversation
from transforms.preference.figures import KtoFigures, PreferenceFigures
from transforms.preference.records import (
    KTO_FIELDS,
    KTO_FORMATS,
    MESSAGE_FIELDS,
    PAIR_FIELDS,
    PAIR_FORMATS,
    KtoExample,
    PreferencePair,
    kto_format,
    kto_key,
    message_options,
    pair_format,
    pair_key,
    parse_kto,
    parse_pair,
    prompt_key,
)
from transforms.preference.split import RenderedSide, render_side, split_plain, split_tokens
from transforms.preference.truncation import (
    PREFERENCE_TRUNCATION,
    PairLimits,
    truncate_completions,
    truncate_pair,
)
from transforms.shard_format import PROMPT_MISMATCH_KEY, PROMPT_MISMATCH_RECORD_KEY, record_id_of, row_sort_key
from transforms.tasks.base import Task, TaskFlag, TaskOptions, check_choice, check_positive_int, content_digest
from transforms.tasks.chat import ChatTask
from transforms.tasks.encoding import SpecialTokensEncoder

#: the chat flags these tasks read (the chat template, its variables and limits, the record-format options of
#: messages); the others (--loss, --multi-turn, --pad-to, images...) are refused
CHAT_OPTIONS = ("chat_template", "chat_template_kwargs", "template_date", "template_timeout", "control_tokens_in_data",
                "system_prompt", "role_map", "fold_system", "prompt_mismatch")


def _check_lengths(options) -> None:
    check_positive_int("--max-prompt-length", options.max_prompt_length, minimum=1)
    check_positive_int("--max-completion-length", options.max_completion_length, minimum=1)


@dataclass(frozen=True, kw_only=True)
class PreferenceOptions(TaskOptions):
    """Options of ``--task preference``.

    Attributes:
        max_prompt_length: the prompt is cut from the left to this many tokens (``None``: no limit).
        max_completion_length: each completion is cut from the right to this many tokens.
    """

    FIELDS = PAIR_FIELDS + MESSAGE_FIELDS
    FORMATS = PAIR_FORMATS

    max_prompt_length: int | None = None
    max_completion_length: int | None = None

    def validate(self) -> None:
        _check_lengths(self)


@dataclass(frozen=True, kw_only=True)
class KtoOptions(TaskOptions):
    """Options of ``--task kto`` (the length limits of :class:`PreferenceOptions`)."""

    FIELDS = KTO_FIELDS + MESSAGE_FIELDS
    FORMATS = KTO_FORMATS

    max_prompt_length: int | None = None
    max_completion_length: int | None = None

    def validate(self) -> None:
        _check_lengths(self)


LENGTH_FLAGS = (
    TaskFlag("max-prompt-length", "max_prompt_length", type=int, metavar="N",
             help="preference, kto: cut the prompt from the left to N tokens (before the completions are cut to "
                  "--max-length)"),
    TaskFlag("max-completion-length", "max_completion_length", type=int, metavar="N",
             help="preference, kto: cut each completion from the right to N tokens"),
)

_INT_LIST = pa.list_(pa.int32())


def _int_field(name: str) -> pa.Field:
    return pa.field(name, pa.int32(), nullable=False)


@dataclass(frozen=True)
class PendingExample:
    """An example between rendering and tokenization: its completions rendered after the prompt (``sides``), or
    the texts of a plain-text record."""

    raw: Any
    example: Any
    sides: tuple[RenderedSide, ...] = ()
    plain: tuple[str, ...] = ()
    markers: tuple[str, str] | None = None  # the marker pair of the sides' marked control-token strings


class _PreferenceBase(Task):
    """What the two tasks share: the chat template machinery, parsing options, limits, row provenance."""

    flags = LENGTH_FLAGS
    needs_chat_template = True
    chat_options = CHAT_OPTIONS

    @classmethod
    def check_config(cls, options, tokenize_options) -> None:
        super().check_config(options, tokenize_options)
        check_choice("--truncation", tokenize_options.truncation, PREFERENCE_TRUNCATION)
        if tokenize_options.max_length is not None and options.max_prompt_length is not None \
                and options.max_prompt_length >= tokenize_options.max_length:
            raise ValueError(f"--max-prompt-length {options.max_prompt_length} leaves no room for a completion "
                             f"under --max-length {tokenize_options.max_length}")

    @classmethod
    def check_tokenizer(cls, options, tokenizer) -> None:
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError(f"--task {cls.name} needs a tokenizer with a pad or eos token (the collator pads with it)")

    @classmethod
    def manifest_section(cls, options, tokenizer, tokenize_options) -> dict[str, Any]:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return {"name": cls.name, "options": options.to_json(), "columns": list(cls.COLUMNS), "collator": cls.name,
                "pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id,
                "max_length": tokenize_options.max_length}

    def __init__(self, *, tokenizer, options, task_options=None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.check_config(self.task_options, options)
        self.chat = ChatTask(tokenizer=tokenizer, options=options)  # renderer, control tokens, encoder of SFT
        self.encoder = self.chat.encoder
        self.plain_encoder = SpecialTokensEncoder(tokenizer.backend_tokenizer)
        self.eos_token = tokenizer.eos_token
        opts = self.task_options
        self.limits = PairLimits(max_length=options.max_length, max_prompt_length=opts.max_prompt_length,
                                 max_completion_length=opts.max_completion_length, drop=options.truncation == "drop")

    # -- rendering -----------------------------------------------------------------------------------------
    def _pending(self, raw, example, completions: Sequence[Sequence[dict]]) -> PendingExample:
        """The example with each completion rendered after its prompt (control-token strings guarded as for chat,
        the marker pair kept for the encoder)."""
        if example.texts is not None:
            return PendingExample(raw, example, plain=example.texts)
        sides, markers = self._sides(example, completions)
        return PendingExample(raw, example, sides=sides, markers=markers)

    def encode_texts(self, texts, rows) -> list:
        return self.encoder.encode(texts, [row.markers for row in rows])

    def _sides(self, example, completions: Sequence[Sequence[dict]]) -> tuple[tuple[RenderedSide, ...], tuple | None]:
        """Each completion rendered after the example's prompt (control-token strings guarded as for chat), and
        the marker pair of the marked strings (``None``: nothing marked)."""
        prompt = list(example.prompt)
        messages = prompt + [m for c in completions for m in c]
        conversation = Conversation(messages=tuple(messages), tools=example.tools, format=example.format,
                                    trainable=(True,) * len(messages), template_kwargs=example.template_kwargs)
        guarded, _, markers = self.chat.guard_control_tokens(conversation)
        marked = list(guarded.messages)
        tools = list(guarded.tools) if guarded.tools else None
        sides, at = [], len(prompt)
        for completion in completions:
            sides.append(render_side(self.chat.renderer, marked[:len(prompt)], marked[at:at + len(completion)],
                                     tools=tools, template_kwargs=guarded.template_kwargs))
            at += len(completion)
        return tuple(sides), markers

    def texts(self, pending: PendingExample):
        return tuple(side.text for side in pending.sides)

    def _plain_ids(self, texts: Sequence[str]):
        """A plain-text record tokenized as TRL does: the prompt, then prompt + completion (+ eos) for each."""
        prompt, *completions = texts
        eos = self.eos_token or ""
        fulls = [prompt + c + (eos if eos and not c.endswith(eos) else "") for c in completions]
        encodings = self.plain_encoder.encode([prompt, *fulls])
        ids = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
        return split_plain(ids[0], ids[1:])

    def _split(self, pending: PendingExample, encodings):
        if pending.plain:
            return self._plain_ids(pending.plain)
        return split_tokens(encodings, [s.start for s in pending.sides], [len(s.text) for s in pending.sides])

    def _row(self, pending: PendingExample, columns: dict[str, Any], *, length: int, loss_tokens: int,
             cut: int, content_hash: str, split_moved: bool) -> dict[str, Any]:
        raw, example = pending.raw, pending.example
        mismatches = [m for side in pending.sides for m in side.mismatches]
        row = {
            **columns,
            "prompt_hash": hashlib.sha256(prompt_key(example).encode("utf-8")).hexdigest(),
            "prompt_mismatch_turns": len(mismatches),
            "boundary_moved": bool(split_moved),
            "length": length,
            "num_loss_tokens": loss_tokens,
            "truncated": cut > 0,
            "truncated_tokens": cut,
            "source": raw.source,
            "index": raw.index,
            "record_id": record_id_of(raw.value),
            "content_hash": content_hash,
            "row_of_record": 0,
            "sort_key": row_sort_key(raw.source, raw.index),
        }
        if mismatches:  # the audit's prompt_mismatch section (no shard column: see transforms.audit)
            row[PROMPT_MISMATCH_KEY] = [m.to_json() for m in mismatches]
            row[PROMPT_MISMATCH_RECORD_KEY] = True
        return row


class PreferenceTask(_PreferenceBase):
    """Preference pairs for DPO and its relatives (see the module docstring)."""

    name = "preference"
    options_class = PreferenceOptions
    COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")

    @classmethod
    def parse(cls, value, options: PreferenceOptions, format_options) -> PreferencePair:
        return parse_pair(value, options.key, options.format, message_options(format_options, options.field_map))

    @classmethod
    def content_key(cls, example: PreferencePair, options) -> str:
        return content_digest(pair_key(example))

    @classmethod
    def detect_format(cls, value, options: PreferenceOptions, format_options) -> str:
        return pair_format(value, options.key, options.format)

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        return (pa.field("prompt_ids", _INT_LIST, nullable=False), pa.field("chosen_ids", _INT_LIST, nullable=False),
                pa.field("rejected_ids", _INT_LIST, nullable=False),
                pa.field("prompt_hash", pa.string(), nullable=False),
                _int_field("prompt_truncated_tokens"), _int_field("chosen_truncated_tokens"),
                _int_field("rejected_truncated_tokens"), _int_field("prompt_mismatch_turns"),
                pa.field("boundary_moved", pa.bool_(), nullable=False))

    @classmethod
    def figures(cls, options) -> PreferenceFigures:
        return PreferenceFigures()

    def prepare(self, raw, example: PreferencePair) -> list[PendingExample]:
        return [self._pending(raw, example, (example.chosen, example.rejected))]

    def finish(self, pending: PendingExample, *encodings) -> dict[str, Any]:
        split = self._split(pending, encodings)
        chosen, rejected = split.completions
        out = truncate_pair(split.prompt, chosen, rejected, self.limits)
        prompt, (kept_chosen, kept_rejected) = out.prompt, out.completions
        columns = {"prompt_ids": prompt, "chosen_ids": kept_chosen, "rejected_ids": kept_rejected,
                   "prompt_truncated_tokens": out.prompt_cut, "chosen_truncated_tokens": out.completion_cuts[0],
                   "rejected_truncated_tokens": out.completion_cuts[1]}
        return self._row(pending, columns, length=2 * len(prompt) + len(kept_chosen) + len(kept_rejected),
                         loss_tokens=len(kept_chosen) + len(kept_rejected), cut=out.cut,
                         content_hash=self.content_key(pending.example, self.task_options), split_moved=split.moved)


class KtoTask(_PreferenceBase):
    """Unpaired feedback for KTO (see the module docstring)."""

    name = "kto"
    options_class = KtoOptions
    COLUMNS = ("prompt_ids", "completion_ids", "label")

    @classmethod
    def parse(cls, value, options: KtoOptions, format_options) -> KtoExample:
        return parse_kto(value, options.key, options.format, message_options(format_options, options.field_map))

    @classmethod
    def content_key(cls, example: KtoExample, options) -> str:
        return content_digest(kto_key(example))

    @classmethod
    def detect_format(cls, value, options: KtoOptions, format_options) -> str:
        return kto_format(value, options.key, options.format)

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        return (pa.field("prompt_ids", _INT_LIST, nullable=False),
                pa.field("completion_ids", _INT_LIST, nullable=False), pa.field("label", pa.bool_(), nullable=False),
                pa.field("prompt_hash", pa.string(), nullable=False), _int_field("prompt_truncated_tokens"),
                _int_field("completion_truncated_tokens"), _int_field("prompt_mismatch_turns"),
                pa.field("boundary_moved", pa.bool_(), nullable=False))

    @classmethod
    def figures(cls, options) -> KtoFigures:
        return KtoFigures()

    def prepare(self, raw, example: KtoExample) -> list[PendingExample]:
        return [self._pending(raw, example, (example.completion,))]

    def finish(self, pending: PendingExample, *encodings) -> dict[str, Any]:
        split = self._split(pending, encodings)
        (completion,) = split.completions
        if not len(completion):
            raise RecordRejected(errors.NO_LOSS_TOKENS, "the completion has no token once rendered and tokenized")
        out = truncate_completions(split.prompt, (completion,), self.limits)
        (kept,) = out.completions
        columns = {"prompt_ids": out.prompt, "completion_ids": kept, "label": bool(pending.example.label),
                   "prompt_truncated_tokens": out.prompt_cut, "completion_truncated_tokens": out.completion_cuts[0]}
        return self._row(pending, columns, length=len(out.prompt) + len(kept), loss_tokens=len(kept), cut=out.cut,
                         content_hash=self.content_key(pending.example, self.task_options), split_moved=split.moved)


__all__ = ["KtoOptions", "KtoTask", "PreferenceOptions", "PreferenceTask"]
