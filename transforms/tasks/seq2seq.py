"""``--task seq2seq``: source/target pairs for encoder-decoder models (T5, BART, mT5, ...).

Records, by ``--format`` (``auto`` decides per record):

* ``pair``: ``{"source": ..., "target": ...}`` (rename with ``--field-map source=document,target=summary``, as
  XSum's ``document``/``summary``);
* ``translation``: ``{"translation": {"en": ..., "ro": ...}}`` with ``--source-lang en --target-lang ro`` (WMT
  in ``datasets``' layout). ``auto`` reads a record with a ``translation`` object this way when both languages
  are given, else as a pair.

``--source-prefix "summarize: "`` is prepended to every source text (T5's task prefixes), as
``run_summarization.py`` / ``run_translation.py`` do.

Rows: ``input_ids`` = ``tokenizer(prefix + source, max_length=--max-source-length, truncation=True)`` and
``labels`` = ``tokenizer(text_target=target, max_length=--max-target-length, truncation=True)`` (the
tokenizer's special tokens kept, e.g. T5's ``</s>``; the EOS token is appended to a target whose tokenizer
does not add it). ``--truncation left`` keeps the end of each text instead; ``drop`` rejects a pair that does
not fit as ``too_long``. Labels are stored without padding or -100: the runtime
``Seq2SeqCollator`` pads them with -100 and builds ``decoder_input_ids`` (labels shifted right after the
model's ``decoder_start_token_id``, from ``--decoder-start-token-id``, the manifest, or the collator's option).

Shard columns: provenance (``length`` = source tokens, ``num_loss_tokens`` = label tokens), ``input_ids``,
``labels``, ``source_truncated_tokens``, ``target_truncated_tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.audit.histogram import IntHistogram, merge_counts
from transforms.errors import RecordRejected
from transforms.reading.record import json_type_name
from transforms.tasks.base import (
    Task,
    TaskFigures,
    TaskFlag,
    TaskOptions,
    check_choice,
    check_positive_int,
    content_digest,
    field_value,
    normalized_text,
    text_value,
)
from transforms.tasks.encoding import SpecialTokensEncoder, truncate_single
from transforms.tasks.text import document_row

PAIR, TRANSLATION = "pair", "translation"
SEQ2SEQ_TRUNCATION = ("right", "left", "drop")


@dataclass(frozen=True, kw_only=True)
class Seq2SeqOptions(TaskOptions):
    """Options of ``--task seq2seq``.

    Attributes:
        source_lang, target_lang: the keys of a ``translation`` object (both or neither).
        source_prefix: text prepended to every source (``"summarize: "``, ``"translate English to German: "``).
        max_source_length, max_target_length: token limits of each side (special tokens included).
        decoder_start_token_id: the model's ``decoder_start_token_id``, recorded for the collator (T5: the pad
            id 0; BART: the EOS id 2); ``None``: given to the collator, or the model builds them itself.
    """

    FIELDS = ("source", "target", "translation")
    FORMATS = ("auto", PAIR, TRANSLATION)

    source_lang: str | None = None
    target_lang: str | None = None
    source_prefix: str = ""
    max_source_length: int | None = None
    max_target_length: int | None = None
    decoder_start_token_id: int | None = None

    def validate(self) -> None:
        if (self.source_lang is None) != (self.target_lang is None):
            raise ValueError("--source-lang and --target-lang go together")
        for name in ("source_lang", "target_lang"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"--{name.replace('_', '-')} must be a non-empty string")
        if self.format == TRANSLATION and self.source_lang is None:
            raise ValueError("--format translation needs --source-lang and --target-lang")
        if not isinstance(self.source_prefix, str):
            raise ValueError("--source-prefix must be a string")
        check_positive_int("--max-source-length", self.max_source_length, minimum=1)
        check_positive_int("--max-target-length", self.max_target_length, minimum=1)
        check_positive_int("--decoder-start-token-id", self.decoder_start_token_id, minimum=0)


SEQ2SEQ_FLAGS = (
    TaskFlag("source-lang", "source_lang", metavar="LANG",
             help="seq2seq: the source key of {\"translation\": {LANG: ...}} records (with --target-lang)"),
    TaskFlag("target-lang", "target_lang", metavar="LANG", help="seq2seq: the target key of translation records"),
    TaskFlag("source-prefix", "source_prefix", metavar="TEXT",
             help="seq2seq: text prepended to every source, e.g. 'summarize: ' (T5)"),
    TaskFlag("max-source-length", "max_source_length", type=int, metavar="N",
             help="seq2seq: encoder tokens per row, special tokens included (default: no limit)"),
    TaskFlag("max-target-length", "max_target_length", type=int, metavar="N",
             help="seq2seq: label tokens per row, special tokens included (default: no limit)"),
    TaskFlag("decoder-start-token-id", "decoder_start_token_id", type=int, metavar="ID",
             help="seq2seq: the model's decoder_start_token_id, stored in the manifest for the collator's "
                  "decoder_input_ids (T5: 0, BART: 2)"),
)


@dataclass(frozen=True)
class Pair:
    """A parsed seq2seq record: ``source`` (before the prefix) and ``target`` texts, and the shape read."""

    source: str
    target: str
    format: str


@dataclass(frozen=True)
class PendingPair:
    raw: Any
    pair: Pair
    source_text: str


def _shape(value: Any, options: Seq2SeqOptions) -> str:
    if not isinstance(value, dict):
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record is a {json_type_name(value)}, expected a JSON object")
    if options.format != "auto":
        return options.format
    if isinstance(value.get(options.key("translation")), dict) and options.source_lang is not None:
        return TRANSLATION
    if options.key("source") in value or options.key("target") in value:
        return PAIR
    if options.key("translation") in value:
        raise RecordRejected(errors.UNKNOWN_FORMAT, "a translation record needs --source-lang and --target-lang")
    raise RecordRejected(errors.UNKNOWN_FORMAT, f"record has neither {options.key('source')!r}/"
                         f"{options.key('target')!r} nor {options.key('translation')!r} "
                         f"(fields: {', '.join(sorted(map(str, value))[:12])}); use --field-map")


def parse_pair(value: Any, options: Seq2SeqOptions) -> Pair:
    shape = _shape(value, options)
    if shape == TRANSLATION:
        languages = field_value(value, options, "translation")
        if not isinstance(languages, dict):
            raise RecordRejected(errors.INVALID_CONTENT, f"field {options.key('translation')!r} is a "
                                 f"{json_type_name(languages)}, expected an object of language -> text")
        for lang in (options.source_lang, options.target_lang):
            if lang not in languages:
                raise RecordRejected(errors.UNKNOWN_FORMAT, f"the translation has no {lang!r} text "
                                     f"(languages: {', '.join(sorted(map(str, languages)))})")
        return Pair(text_value(languages[options.source_lang], f"translation {options.source_lang!r}"),
                    text_value(languages[options.target_lang], f"translation {options.target_lang!r}"), TRANSLATION)
    source = text_value(field_value(value, options, "source"), f"field {options.key('source')!r}")
    target = text_value(field_value(value, options, "target"), f"field {options.key('target')!r}")
    return Pair(source, target, PAIR)


class Seq2SeqFigures(TaskFigures):
    """Audit of seq2seq rows: source and target length distributions and truncation per side."""

    def __init__(self):
        self.source_tokens = IntHistogram()
        self.target_tokens = IntHistogram()
        self.counts = {"rows": 0, "source_truncated_rows": 0, "source_truncated_tokens": 0,
                       "target_truncated_rows": 0, "target_truncated_tokens": 0}

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.source_tokens.add(int(row["length"]))
        self.target_tokens.add(int(row["num_loss_tokens"]))
        counts = self.counts
        counts["rows"] += 1
        for side in ("source", "target"):
            cut = int(row[f"{side}_truncated_tokens"])
            if cut:
                counts[f"{side}_truncated_rows"] += 1
                counts[f"{side}_truncated_tokens"] += cut

    def merge(self, other: "Seq2SeqFigures") -> "Seq2SeqFigures":
        self.source_tokens.merge(other.source_tokens)
        self.target_tokens.merge(other.target_tokens)
        merge_counts(self.counts, other.counts)
        return self

    def _rates(self) -> dict[str, Any]:
        rows = self.counts["rows"]
        return {f"{side}_truncation_rate": round(self.counts[f"{side}_truncated_rows"] / rows, 6) if rows else None
                for side in ("source", "target")}

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, **self._rates(), "source_tokens": self.source_tokens.to_json(),
                "target_tokens": self.target_tokens.to_json()}

    def summary(self) -> dict[str, Any]:
        return {**self.counts, **self._rates()}

    def sample_view(self, row: Mapping[str, Any]):
        """The source (not trained) followed by the labels (trained)."""
        ids = np.concatenate([np.asarray(row["input_ids"]), np.asarray(row["labels"])])
        labels = np.concatenate([np.full(len(row["input_ids"]), -100), np.asarray(row["labels"])])
        return ids, labels


class Seq2SeqTask(Task):
    """Encoder-decoder rows from source/target pairs (see the module docstring)."""

    name = "seq2seq"
    options_class = Seq2SeqOptions
    flags = SEQ2SEQ_FLAGS

    @classmethod
    def check_config(cls, options: Seq2SeqOptions, tokenize_options) -> None:
        super().check_config(options, tokenize_options)
        if tokenize_options.max_length is not None:
            raise ValueError("--task seq2seq limits each side: use --max-source-length / --max-target-length")
        check_choice("--truncation", tokenize_options.truncation, SEQ2SEQ_TRUNCATION)

    @classmethod
    def check_tokenizer(cls, options: Seq2SeqOptions, tokenizer) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("--task seq2seq needs a tokenizer with a pad token (the collator pads with it)")

    @classmethod
    def parse(cls, value, options: Seq2SeqOptions, format_options) -> Pair:
        return parse_pair(value, options)

    @classmethod
    def content_key(cls, example: Pair, options) -> str:
        return content_digest([normalized_text(example.source), normalized_text(example.target)])

    @classmethod
    def detect_format(cls, value, options: Seq2SeqOptions, format_options) -> str:
        return _shape(value, options)

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        return (pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("labels", pa.list_(pa.int32()), nullable=False),
                pa.field("source_truncated_tokens", pa.int32(), nullable=False),
                pa.field("target_truncated_tokens", pa.int32(), nullable=False))

    @classmethod
    def figures(cls, options) -> Seq2SeqFigures:
        return Seq2SeqFigures()

    @classmethod
    def manifest_section(cls, options: Seq2SeqOptions, tokenizer, tokenize_options) -> dict[str, Any]:
        return {"name": cls.name, "options": options.to_json(), "columns": ["input_ids", "labels"],
                "collator": cls.name, "decoder_start_token_id": options.decoder_start_token_id,
                "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}

    def __init__(self, *, tokenizer, options, task_options: Seq2SeqOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.check_config(self.task_options, options)
        self.encoder = SpecialTokensEncoder(tokenizer.backend_tokenizer)
        self.eos = tokenizer.eos_token_id

    def prepare(self, raw, example: Pair) -> list[PendingPair]:
        return [PendingPair(raw, example, self.task_options.source_prefix + example.source)]

    def texts(self, pending: PendingPair):
        return (pending.source_text, pending.pair.target)

    def _side(self, encoding, limit: int | None, *, target: bool):
        ids = np.asarray(encoding.ids, dtype=np.int32)
        special = np.asarray(encoding.special_tokens_mask, dtype=np.int8)
        if target and self.eos is not None and (len(ids) == 0 or int(ids[-1]) != self.eos):
            ids = np.append(ids, np.int32(self.eos))  # a tokenizer that does not end sequences with EOS
            special = np.append(special, np.int8(1))
        if len(ids) == 0:
            raise RecordRejected(errors.EMPTY_TEXT, f"the {'target' if target else 'source'} tokenizes to no token")
        if limit is not None and len(ids) > limit and self.options.truncation == "drop":
            raise RecordRejected(errors.TOO_LONG, f"the {'target' if target else 'source'} has {len(ids)} tokens, "
                                 f"more than --max-{'target' if target else 'source'}-length {limit} "
                                 "(--truncation drop)")
        side = "left" if self.options.truncation == "left" else "right"
        kept, _, cut = truncate_single(ids, special, limit, side=side)
        return kept, cut

    def finish(self, pending: PendingPair, source_encoding, target_encoding) -> dict[str, Any]:
        opts = self.task_options
        input_ids, source_cut = self._side(source_encoding, opts.max_source_length, target=False)
        labels, target_cut = self._side(target_encoding, opts.max_target_length, target=True)
        columns = {"input_ids": input_ids, "labels": labels, "source_truncated_tokens": source_cut,
                   "target_truncated_tokens": target_cut}
        return document_row(pending.raw, input_ids, content_hash=self.content_key(pending.pair, opts),
                            truncated_tokens=source_cut + target_cut, columns=columns, num_loss_tokens=len(labels))
