"""The *BuildRows* step: parsed examples -> shard rows (or rejections), a batch at a time, without Beam.

:class:`RowBuilder` is what the job's ``BuildRowsFn`` wraps and what tests and notebooks call::

    builder = RowBuilder(tokenizer=tok, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
    for kind, item in builder.build_records(raw_records):   # kind is "row" or "rejected"
        ...

Rows follow the shard contract (``transforms.shard_format``) plus a ``sort_key`` used for sharding.
A record gives one row, or one row per supervised assistant turn when its template needs that (see
``chat_render``); a record either gives all its rows or is rejected as a whole.

Work is batched: the task prepares every record of a batch (renders it), then all texts are
tokenized in one ``encode_batch`` call (the Rust tokenizer, parallel), then the task finishes each
row (labels, truncation, assembly) with numpy.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Sequence

from transforms.config import TokenizeOptions
from transforms.formats import Conversation, FormatOptions
from transforms.reading import RawRecord
from transforms.rows.parse import PARSED, REJECTED, ROW, parse_records, rejection_for
from transforms.vision.part import ImagePart


class RowBuilder:
    """Builds rows from raw records with one tokenizer, one configuration and one task.

    Args:
        tokenizer: a fast ``transformers`` tokenizer with a chat template.
        format_options: record-format options (the *ParseRecords* step).
        tokenize_options: length, truncation, loss and padding options.
        images: the image part of a vision job (switches image positions on in the formats).
        task: the task name (:data:`transforms.tasks.TASKS`).
        task_options: the task's options (``None``: its defaults; the chat task has none).
    """

    def __init__(self, *, tokenizer, format_options: FormatOptions, tokenize_options: TokenizeOptions,
                 images: ImagePart | None = None, task: str = "chat", task_options=None):
        from transforms.tasks.spec import TaskSpec  # the task registry imports transforms.rows modules

        if images is not None and not format_options.images:
            format_options = replace(format_options, images=True)
        self.tokenizer = tokenizer
        self.format_options = format_options
        self.options = tokenize_options
        self.spec = TaskSpec(name=task, options=task_options, format_options=format_options)
        self.task = self.spec.task_class(tokenizer=tokenizer, options=tokenize_options,
                                         task_options=self.spec.options, images=images)

    @property
    def images(self) -> ImagePart | None:
        """The image part, or ``None`` for a text job."""
        return self.task.images

    def extra_fields(self) -> tuple:
        """Arrow fields this builder adds to the base shard schema (the image columns of a vision job)."""
        return self.task.extra_fields()

    def build_rows(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> list[tuple[str, dict[str, Any]]]:
        """The *BuildRows* step: ``(ROW, row)`` items (one or more per record, in record order) and
        ``(REJECTED, rejection)`` items (one per rejected record)."""
        return [item for items in self.build_rows_by_record(parsed) for item in items]

    def build_rows_by_record(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> list[list[tuple[str, Any]]]:
        """:meth:`build_rows` grouped by record: per input record, its rows or its one rejection (a record
        whose content went into another record's row, e.g. a block of grouped texts, has no item)."""
        task = self.task
        task.start_batch(parsed)
        try:
            built: list[Any] = [None] * len(parsed)  # per record: its rows, or the exception rejecting it
            pending: list[tuple[int, list]] = []
            for position, (raw, example) in enumerate(parsed):
                try:
                    pending.append((position, task.prepare(raw, example)))
                except Exception as exc:  # noqa: BLE001 - bad input never crashes the job
                    built[position] = exc
            texts_of = task.texts
            texts: list = []
            owners: list = []  # per text, the pending row it belongs to
            counts: list[int] = []
            for _, rows in pending:
                for row in rows:
                    these = texts_of(row)
                    texts.extend(these)
                    owners.extend([row] * len(these))
                    counts.append(len(these))
            encodings = task.encode_texts(texts, owners)
            at, count = 0, iter(counts)
            for position, rows in pending:
                spans = []
                for _ in rows:
                    n = next(count)
                    spans.append((at, at + n))
                    at += n
                try:
                    rows_built = [task.finish(row, *encodings[a:b]) for row, (a, b) in zip(rows, spans)]
                    for k, row in enumerate(rows_built):
                        if isinstance(row, dict):  # not the documents a grouping task regroups in finish_batch
                            row["row_of_record"] = k
                    if len(rows_built) > 1:
                        lengths = [int(row["length"]) for row in rows_built]
                        rows_built[0]["split_extra_tokens"] = sum(lengths) - max(lengths)
                    built[position] = rows_built
                except Exception as exc:  # noqa: BLE001 - the whole record is rejected, never part of it
                    built[position] = exc
            built = task.finish_batch(parsed, built)
            return [[(REJECTED, rejection_for(raw, item))] if isinstance(item, Exception)
                    else [(ROW, row) for row in item] for (raw, _), item in zip(parsed, built)]
        finally:
            task.end_batch()

    def build_records(self, raws: Sequence[RawRecord]) -> list[tuple[str, dict[str, Any]]]:
        """Parse and build a batch of raw records: per record, in order, its rows or its rejection."""
        parsed = parse_records(raws, self.spec)
        built = iter(self.build_rows_by_record([item for kind, item in parsed if kind == PARSED]))
        return [item for kind, value in parsed
                for item in (next(built) if kind == PARSED else [(kind, value)])]

    def iter_records(self, raws: Iterable[RawRecord], *, batch_size: int = 256):
        """:meth:`build_records` over a stream of raw records, in batches, yielding ``(kind, item)`` in order."""
        batch: list[RawRecord] = []
        for raw in raws:
            batch.append(raw)
            if len(batch) >= batch_size:
                yield from self.build_records(batch)
                batch = []
        if batch:
            yield from self.build_records(batch)
