"""``--task mlm``: raw text for masked language modeling (BERT, RoBERTa, ...), masked at training time.

Records as ``--task text`` (``{"text"}`` JSONL/Parquet, ``.txt`` one document per non-blank line or per file).

Rows hold what ``run_mlm.py`` tokenizes, unmasked: ``input_ids`` = ``tokenizer(text)`` (the tokenizer's
special tokens, ``[CLS] ... [SEP]``) and its ``special_tokens_mask`` (1 on special tokens, which are never
masked). Two layouts, as ``run_mlm.py``:

* one row per document (``--line_by_line``): ``--max-length N`` truncates as ``truncation=True`` does
  (special tokens kept; ``--truncation left`` keeps the end, ``drop`` rejects as ``too_long``);
* ``--group-texts N``: the documents of each batch concatenated and cut into blocks of ``N`` tokens
  (:mod:`transforms.tasks.blocks`; the last partial block kept, or dropped with ``--group-remainder drop``,
  counted).

``--whole-word-mask`` also stores ``word_starts`` (int8: 1 on the first token of every word, as
transformers' whole-word masking finds words from the offsets: a token that does not start where the
previous one ends, or follows a special token; the first token of every row starts a word), so the collator
can mask whole words.

Masking happens in the runtime :class:`~transforms.runtime.mlm.MaskingCollator` (15% of the non-special
tokens by default, 80% ``[MASK]`` / 10% random / 10% unchanged), seeded per row from ``(seed, epoch, row)``.
``num_loss_tokens`` counts the maskable (non-special) tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.tasks.base import TaskFlag
from transforms.tasks.blocks import Document, regroup
from transforms.tasks.encoding import SpecialTokensEncoder, truncate_single
from transforms.tasks.text import (
    GROUP_FLAGS,
    PendingText,
    RawTextOptions,
    RawTextTask,
    TextFigures,
    check_grouping,
    document_row,
    text_content_key,
)

SPECIAL_TOKENS_MASK = "special_tokens_mask"
WORD_STARTS = "word_starts"


@dataclass(frozen=True, kw_only=True)
class MlmOptions(RawTextOptions):
    """Options of ``--task mlm`` (those of :class:`~transforms.tasks.text.RawTextOptions`, and:)

    Attributes:
        whole_word_mask: store ``word_starts`` so the collator can mask whole words.
    """

    whole_word_mask: bool = False

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.whole_word_mask, bool):
            raise ValueError(f"whole_word_mask must be a bool, got {self.whole_word_mask!r}")


MLM_FLAGS = GROUP_FLAGS + (
    TaskFlag("whole-word-mask", "whole_word_mask", switch=True, value=True,
             help="mlm: also store word starts, so the collator masks whole words"),
)


def word_starts(offsets: np.ndarray, special: np.ndarray) -> np.ndarray:
    """int8: 1 where a word starts (transformers' ``_calc_word_ids_and_prob_mask``: not special, and the token
    does not start where the previous one ended or the previous token is special; the first token starts one)."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    previous_end = np.empty_like(ends)
    previous_end[0] = -1
    previous_end[1:] = ends[:-1]
    previous_special = np.zeros_like(special)
    previous_special[1:] = special[:-1]
    new = (special == 0) & ((starts != previous_end) | (previous_special == 1))
    return new.astype(np.int8)


class MlmTask(RawTextTask):
    """Masked-LM rows from raw text (see the module docstring)."""

    name = "mlm"
    options_class = MlmOptions
    flags = MLM_FLAGS

    @classmethod
    def check_config(cls, options: MlmOptions, tokenize_options) -> None:
        super().check_config(options, tokenize_options)
        check_grouping(options, tokenize_options)

    @classmethod
    def check_tokenizer(cls, options: MlmOptions, tokenizer) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("--task mlm needs a tokenizer with a mask token (the collator writes it)")
        if tokenizer.pad_token_id is None:
            raise ValueError("--task mlm needs a tokenizer with a pad token (the collator pads with it)")

    @classmethod
    def token_fields(cls, options: MlmOptions) -> list:
        fields = [pa.field(SPECIAL_TOKENS_MASK, pa.list_(pa.int8()), nullable=False)]
        if options.whole_word_mask:
            fields.append(pa.field(WORD_STARTS, pa.list_(pa.int8()), nullable=False))
        return fields

    @classmethod
    def figures(cls, options: MlmOptions) -> TextFigures:
        return MlmFigures(options.group_texts)

    @classmethod
    def manifest_section(cls, options: MlmOptions, tokenizer, tokenize_options) -> dict[str, Any]:
        columns = ["input_ids", SPECIAL_TOKENS_MASK] + ([WORD_STARTS] if options.whole_word_mask else [])
        return {"name": cls.name, "options": options.to_json(), "columns": columns + ["sample_index", "epoch"],
                "collator": cls.name, "mask_token_id": tokenizer.mask_token_id, "pad_token_id": tokenizer.pad_token_id,
                "whole_word_mask": options.whole_word_mask}

    def __init__(self, *, tokenizer, options, task_options: MlmOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.check_config(self.task_options, options)
        self.encoder = SpecialTokensEncoder(tokenizer.backend_tokenizer)

    def prepare(self, raw, example: str) -> list[PendingText]:
        return [PendingText(raw, example)]

    def finish(self, pending: PendingText, encoding):
        opts = self.task_options
        ids = np.asarray(encoding.ids, dtype=np.int32)
        special = np.asarray(encoding.special_tokens_mask, dtype=np.int8)
        arrays = {"input_ids": ids, SPECIAL_TOKENS_MASK: special}
        if opts.whole_word_mask:
            arrays[WORD_STARTS] = word_starts(np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2), special) \
                if len(ids) else np.zeros(0, dtype=np.int8)
        if not np.count_nonzero(special == 0):
            raise RecordRejected(errors.EMPTY_TEXT, "the text tokenizes to special tokens only")
        if opts.group_texts is not None:
            return Document(pending.raw, -1, arrays)
        limit, cut = self.options.max_length, 0
        if limit is not None and len(ids) > limit:
            if self.options.truncation == "drop":
                raise RecordRejected(errors.TOO_LONG, f"the text has {len(ids)} tokens, more than --max-length "
                                     f"{limit} (--truncation drop)")
            side = "left" if self.options.truncation == "left" else "right"
            keep = np.ones(len(ids), dtype=bool)
            kept, _, cut = truncate_single(np.arange(len(ids)), special, limit, side=side)
            keep[:] = False
            keep[kept] = True
            arrays = {name: values[keep] for name, values in arrays.items()}
        if opts.whole_word_mask:
            arrays[WORD_STARTS] = _first_starts_a_word(arrays[WORD_STARTS], arrays[SPECIAL_TOKENS_MASK])
        return document_row(pending.raw, arrays["input_ids"], content_hash=text_content_key(pending.text),
                            truncated_tokens=cut, columns=arrays,
                            num_loss_tokens=int(np.count_nonzero(arrays[SPECIAL_TOKENS_MASK] == 0)))

    def finish_batch(self, parsed, built: list) -> list:
        opts = self.task_options
        if opts.group_texts is None:
            return built
        for position, item in enumerate(built):
            if not isinstance(item, Exception):
                item[0].position = position
        out = regroup(parsed, built, block_size=opts.group_texts, remainder=opts.group_remainder,
                      num_loss_tokens=lambda arrays: np.count_nonzero(arrays[SPECIAL_TOKENS_MASK] == 0))
        if opts.whole_word_mask:
            for rows in out:
                for row in rows if not isinstance(rows, Exception) else ():
                    row[WORD_STARTS] = _first_starts_a_word(row[WORD_STARTS], row[SPECIAL_TOKENS_MASK])
        return out


def _first_starts_a_word(starts: np.ndarray, special: np.ndarray) -> np.ndarray:
    """A row's first token starts a word unless it is special (whole-word masking sees rows, not documents)."""
    if len(starts) and not special[0] and not starts[0]:
        starts = starts.copy()
        starts[0] = 1
    return starts


class MlmFigures(TextFigures):
    """Audit of mlm rows: as text (documents, blocks, tokens, dropped tokens), plus special and maskable tokens."""

    def __init__(self, block_size: int | None):
        super().__init__(block_size)
        self.counts["special_tokens"] = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        super().add_row(row)
        self.counts["special_tokens"] += int(row["length"]) - int(row["num_loss_tokens"])

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["maskable_tokens"] = out.pop("trained_tokens")
        return out

    def sample_view(self, row: Mapping[str, Any]):
        """Maskable tokens shown as trained, special tokens not."""
        ids = np.asarray(row["input_ids"])
        return ids, np.where(np.asarray(row[SPECIAL_TOKENS_MASK]) == 0, ids, -100)
