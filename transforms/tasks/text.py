"""``--task text``: raw text for causal language modeling (continued pretraining).

Records: ``{"text": "..."}`` (the field map renames ``text``) from JSON Lines / JSON / Parquet / Arrow, and
plain ``.txt`` files (:mod:`transforms.reading.plain_text`: one document per non-blank line with
``--text-file-unit line``, the default, or one per file with ``file``).

Rows: every real token is trained. A document is encoded as ``tokenizer(text)`` encodes it (the tokenizer's
own special tokens, e.g. Llama's BOS, included), then the EOS token is appended unless it already ends
with it (``--no-eos``: not appended). Two layouts:

* one row per document (default): ``--max-length N`` truncates (``--truncation right`` keeps the start,
  ``left`` the end, ``drop`` rejects as ``too_long``);
* ``--group-texts N``: the documents of each batch are concatenated and cut into blocks of ``N`` tokens
  (:mod:`transforms.tasks.blocks`: what ``run_clm.py`` does, with the last partial block kept or, with
  ``--group-remainder drop``, dropped and counted).

Shard columns: the provenance columns (:data:`transforms.shard_format.TASK_BASE_FIELDS`), ``input_ids``
(list<int32>) and, with ``--group-texts``, ``documents``. No ``labels`` column: labels are the input ids
(the runtime :class:`~transforms.runtime.Collator` uses ``input_ids`` as labels, -100 on padding; the
model shifts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.audit.histogram import IntHistogram, merge_counts
from transforms.errors import RecordRejected
from transforms.reading.plain_text import TEXT_FILE_UNITS, is_text_file, text_file_reader
from transforms.shard_format import DOCUMENTS_COLUMN, record_id_of, row_sort_key
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
from transforms.tasks.blocks import GROUP_REMAINDER_MODES, Document, regroup
from transforms.tasks.encoding import SpecialTokensEncoder

TEXT_TRUNCATION = ("right", "left", "drop")


@dataclass(frozen=True, kw_only=True)
class RawTextOptions(TaskOptions):
    """Options of the tasks over raw text (``text``, ``mlm``).

    Attributes:
        group_texts: block size of ``--group-texts`` (``None``: one row per document).
        group_remainder: ``keep`` the batch's last partial block, or ``drop`` it (``run_clm.py``'s rule).
        text_file_unit: ``.txt`` inputs: one document per non-blank ``line`` or per ``file``.
    """

    FIELDS = ("text",)

    group_texts: int | None = None
    group_remainder: str = "keep"
    text_file_unit: str = "line"

    def validate(self) -> None:
        check_positive_int("--group-texts", self.group_texts, minimum=2)
        check_choice("--group-remainder", self.group_remainder, GROUP_REMAINDER_MODES)
        check_choice("--text-file-unit", self.text_file_unit, TEXT_FILE_UNITS)


@dataclass(frozen=True, kw_only=True)
class TextOptions(RawTextOptions):
    """Options of ``--task text`` (those of :class:`RawTextOptions`, and:)

    Attributes:
        add_eos: append the tokenizer's EOS token to every document (unless it already ends with it).
    """

    add_eos: bool = True

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.add_eos, bool):
            raise ValueError(f"add_eos must be a bool, got {self.add_eos!r}")


GROUP_FLAGS = (
    TaskFlag("group-texts", "group_texts", type=int, metavar="N",
             help="text, mlm: concatenate the documents of each batch (--batch-size records of one file) and cut "
                  "blocks of N tokens, as run_clm.py/run_mlm.py's group_texts (default: one row per document)"),
    TaskFlag("group-remainder", "group_remainder", choices=GROUP_REMAINDER_MODES,
             help="text, mlm with --group-texts: keep the batch's last partial block (default) or drop it as "
                  "run_clm.py does (dropped tokens counted; documents wholly in it rejected as group_remainder)"),
    TaskFlag("text-file-unit", "text_file_unit", choices=TEXT_FILE_UNITS,
             help="text, mlm: .txt inputs hold one document per non-blank line (default) or per file"),
)
TEXT_FLAGS = GROUP_FLAGS + (
    TaskFlag("no-eos", "add_eos", switch=True, value=False,
             help="text: do not append the EOS token to every document"),
)


def check_grouping(options, tokenize_options) -> None:
    """``--group-texts`` sets the row length (no ``--max-length`` with it); ``--truncation`` is right, left or drop."""
    if options.group_texts is not None and tokenize_options.max_length is not None:
        raise ValueError("--group-texts N sets the row length; do not combine it with --max-length")
    check_choice("--truncation", tokenize_options.truncation, TEXT_TRUNCATION)


@dataclass(frozen=True)
class PendingText:
    raw: Any
    text: str


def parse_text(value: Any, options: TaskOptions) -> str:
    """A ``{"text": ...}`` record's text (field map applied); ``empty_text`` when blank."""
    return text_value(field_value(value, options, "text"), f"field {options.key('text')!r}")


def text_content_key(text: str) -> str:
    """Duplicates of a text: the same text once runs of whitespace are collapsed."""
    return content_digest(normalized_text(text))


def text_file_layout(path: str, options: TaskOptions):
    return text_file_reader(options.text_file_unit) if is_text_file(path) else None


def document_row(raw, ids: np.ndarray, *, content_hash: str, truncated_tokens: int, columns: Mapping[str, Any],
                 num_loss_tokens: int) -> dict[str, Any]:
    """The row of one document (no grouping): provenance columns plus ``columns``."""
    return {
        **columns,
        "length": len(ids),
        "num_loss_tokens": num_loss_tokens,
        "truncated": truncated_tokens > 0,
        "truncated_tokens": truncated_tokens,
        "source": raw.source,
        "index": raw.index,
        "record_id": record_id_of(raw.value),
        "content_hash": content_hash,
        "row_of_record": 0,
        "sort_key": row_sort_key(raw.source, raw.index),
    }


class TextFigures(TaskFigures):
    """Audit of text and mlm rows: documents, rows (blocks), tokens, full and short blocks, tokens dropped."""

    def __init__(self, block_size: int | None):
        self.block_size = block_size
        self.counts = {"rows": 0, "documents": 0, "tokens": 0, "trained_tokens": 0, "full_blocks": 0,
                       "short_blocks": 0, "truncated_rows": 0, "truncated_tokens": 0,
                       "rejected_group_remainder": 0}
        self.documents_per_row = IntHistogram()

    def add_row(self, row: Mapping[str, Any]) -> None:
        counts = self.counts
        length = int(row["length"])
        counts["rows"] += 1
        counts["tokens"] += length
        counts["trained_tokens"] += int(row["num_loss_tokens"])
        documents = int(row[DOCUMENTS_COLUMN]) if DOCUMENTS_COLUMN in row else (
            1 if int(row.get("row_of_record", 0) or 0) == 0 else 0)
        counts["documents"] += documents
        self.documents_per_row.add(documents)
        if self.block_size is not None:
            counts["full_blocks" if length == self.block_size else "short_blocks"] += 1
        if bool(row["truncated"]):
            counts["truncated_rows"] += 1
            counts["truncated_tokens"] += int(row["truncated_tokens"])

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        if item.get("reason") == errors.GROUP_REMAINDER:
            self.counts["rejected_group_remainder"] += 1

    def merge(self, other: "TextFigures") -> "TextFigures":
        merge_counts(self.counts, other.counts)
        self.documents_per_row.merge(other.documents_per_row)
        return self

    def to_json(self) -> dict[str, Any]:
        return {"block_size": self.block_size, **self.counts,
                "documents_per_row": self.documents_per_row.to_json()}

    def summary(self) -> dict[str, Any]:
        keys = ("rows", "documents", "tokens", "full_blocks", "short_blocks", "truncated_tokens",
                "rejected_group_remainder")
        return {key: self.counts[key] for key in keys}


class RawTextTask(Task):
    """What the tasks over raw text (``text``, ``mlm``) share: records and ``.txt`` files read as documents, the
    duplicate key, and the shard columns (``input_ids``, the task's :meth:`token_fields`, ``documents`` for
    grouped blocks)."""

    @classmethod
    def parse(cls, value, options, format_options) -> str:
        return parse_text(value, options)

    @classmethod
    def content_key(cls, example: str, options) -> str:
        return text_content_key(example)

    @classmethod
    def file_layout(cls, path: str, options):
        return text_file_layout(path, options)

    @classmethod
    def token_fields(cls, options) -> list:
        """Per-token columns after ``input_ids``."""
        return []

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        fields = [pa.field("input_ids", pa.list_(pa.int32()), nullable=False), *cls.token_fields(options)]
        if options.group_texts is not None:
            fields.append(pa.field(DOCUMENTS_COLUMN, pa.int32(), nullable=False))
        return tuple(fields)


class TextTask(RawTextTask):
    """Causal-LM rows from raw text (see the module docstring)."""

    name = "text"
    options_class = TextOptions
    flags = TEXT_FLAGS

    @classmethod
    def figures(cls, options: TextOptions) -> TextFigures:
        return TextFigures(options.group_texts)

    @classmethod
    def manifest_section(cls, options: TextOptions, tokenizer, tokenize_options) -> dict[str, Any]:
        return {"name": cls.name, "options": options.to_json(), "columns": ["input_ids"], "collator": cls.name,
                "labels": "input_ids", "eos_token_id": tokenizer.eos_token_id}

    @classmethod
    def check_config(cls, options: TextOptions, tokenize_options) -> None:
        super().check_config(options, tokenize_options)
        check_grouping(options, tokenize_options)

    @classmethod
    def check_tokenizer(cls, options: TextOptions, tokenizer) -> None:
        if options.add_eos and tokenizer.eos_token_id is None:
            raise ValueError("--task text appends the EOS token to every document, but the tokenizer has none "
                             "(pass --no-eos)")

    def __init__(self, *, tokenizer, options, task_options: TextOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.check_config(self.task_options, options)
        self.check_tokenizer(self.task_options, tokenizer)
        self.encoder = SpecialTokensEncoder(tokenizer.backend_tokenizer)
        self.eos = tokenizer.eos_token_id

    def prepare(self, raw, example: str) -> list[PendingText]:
        return [PendingText(raw, example)]

    def document_ids(self, encoding) -> np.ndarray:
        ids = np.asarray(encoding.ids, dtype=np.int32)
        if self.task_options.add_eos and (len(ids) == 0 or int(ids[-1]) != self.eos):
            ids = np.append(ids, np.int32(self.eos))
        if len(ids) == 0:
            raise RecordRejected(errors.EMPTY_TEXT, "the text tokenizes to no token")
        return ids

    def finish(self, pending: PendingText, encoding):
        ids = self.document_ids(encoding)
        if self.task_options.group_texts is not None:
            return Document(pending.raw, -1, {"input_ids": ids})
        limit, cut = self.options.max_length, 0
        if limit is not None and len(ids) > limit:
            if self.options.truncation == "drop":
                raise RecordRejected(errors.TOO_LONG, f"the document has {len(ids)} tokens, more than "
                                     f"--max-length {limit} (--truncation drop)")
            cut = len(ids) - limit
            ids = ids[:limit] if self.options.truncation == "right" else ids[cut:]
        return document_row(pending.raw, ids, content_hash=text_content_key(pending.text), truncated_tokens=cut,
                            columns={"input_ids": ids}, num_loss_tokens=len(ids))

    def finish_batch(self, parsed, built: list) -> list:
        opts = self.task_options
        if opts.group_texts is None:
            return built
        for position, item in enumerate(built):
            if not isinstance(item, Exception):
                item[0].position = position
        return regroup(parsed, built, block_size=opts.group_texts, remainder=opts.group_remainder)
