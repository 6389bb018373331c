"""Parsing and building rows for a batch of raw records (Beam-free: the job's *ParseRecords* and *BuildRows*
DoFns in :mod:`pipeline.engines.beam.build` and the local engine call :func:`parse_batch` and :func:`build_batch`).

:class:`BuilderSpec` is what a worker needs to rebuild the row builder (small, picklable).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import pyarrow as pa

from pipeline.io.files import read_bytes
from pipeline.io.remote import shared_job_tokenizer
from pipeline.steps.rejected import writable_rejection
from transforms import shard_format as sf
from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions
from transforms.mixture import DATASET_COLUMN, DatasetEntry, Mixture, Selection
from transforms.rows import PARSED, ROW, RowBuilder, parse_record
from transforms.shard_format import task_arrow_schema
from transforms.tasks.base import TaskOptions
from transforms.tasks.spec import TaskSpec
from transforms.vision.config import VisionConfig
from transforms.vision.part import ImageOptions, ImagePart, image_fields

LOG = logging.getLogger("chatshards")


@dataclass(frozen=True, kw_only=True)
class BuilderSpec:
    """What a worker needs to rebuild the tokenizer and the builder (picklable, small).

    The chat template travels as text, so workers never need the template file.
    """

    tokenizer: str | None
    chat_template: str
    trust_remote_code: bool
    format_options: FormatOptions
    tokenize_options: TokenizeOptions
    # Vision jobs (--processor): the processor family config (loaded once at launch, so workers
    # never need the processor files) and how images are read and stored.
    vision: VisionConfig | None = None
    image_options: ImageOptions | None = None
    # --task (transforms/tasks/): its name and options (None: the task's defaults; chat has none)
    task: str = "chat"
    task_options: TaskOptions | None = None
    # a job config file's datasets (transforms.mixture): rows gain a ``dataset`` column, each file's records
    # parse with its dataset's options
    mixture: Mixture | None = None

    @property
    def task_spec(self) -> TaskSpec:
        """The tokenizer-free task (parsing, dedup keys, the audit's figures, non-JSON input files)."""
        return TaskSpec(name=self.task, options=self.task_options, format_options=self.format_options)

    def create_builder(self) -> RowBuilder:
        chat = self.task_spec.task_class.needs_chat_template  # chat, preference, kto: the job's chat template
        tokenizer = shared_job_tokenizer(self.tokenizer, trust_remote_code=self.trust_remote_code,
                                         require_chat_template=chat)
        if chat:
            tokenizer.chat_template = self.chat_template
        images = None
        if self.vision is not None:
            images = ImagePart(tokenizer=tokenizer, vision=self.vision, image_options=self.image_options,
                               open_file=read_remote_file)
        return RowBuilder(tokenizer=tokenizer, format_options=self.format_options,
                          tokenize_options=self.tokenize_options, images=images, task=self.task,
                          task_options=self.task_options)

    def extra_fields(self) -> tuple:
        """Arrow fields added to the shard schema by the builder this spec creates."""
        if self.vision is not None:
            return image_fields(self.vision, self.image_options or ImageOptions())
        return ()

    def shard_schema(self):
        """The Arrow schema of the shards: chat's (:func:`transforms.shard_format.arrow_schema`), or the task's
        (:func:`transforms.shard_format.task_arrow_schema` with the task's fields)."""
        spec = self.task_spec
        if spec.is_chat:
            schema = sf.arrow_schema(padded=self.tokenize_options.pad_to == "max_length",
                                     extra_fields=self.extra_fields())
        else:
            schema = task_arrow_schema(spec.shard_fields(self.tokenize_options))
        if self.mixture is not None:  # the dataset entry of each row, last
            schema = schema.append(pa.field(DATASET_COLUMN, pa.string(), nullable=False))
        return schema


def parse_raw_record(raw, format_options: FormatOptions | TaskSpec):
    """:func:`transforms.rows.parse_record` (which keeps the reader's own reject code: ``truncated_input``,
    ``unreadable_input``, ``invalid_content`` for a lone surrogate), with a rejection that is always
    writable (:func:`pipeline.engines.beam.rejected.writable_rejection`). Never raises."""
    kind, item = parse_record(raw, format_options)
    return (kind, item) if kind == PARSED else (kind, writable_rejection(item))


def read_remote_file(path: str) -> bytes:
    """Whole-file read of an image path under ``gs://`` and the like (:func:`pipeline.io.files.read_bytes`)."""
    return read_bytes(path)


def parse_batch(batch, format_options: FormatOptions | TaskSpec,
                selection: Selection | None = None) -> tuple[list, list]:
    """``list[RawRecord] -> (parsed, rejections)``: ``parsed`` the ``(raw, example)`` pairs in batch order,
    ``rejections`` writable rejection dicts (``format_options``: chat's, or the job's
    :class:`~transforms.tasks.spec.TaskSpec`). Never raises.

    ``selection`` (a job with a datasets list): records the mixture does not take are dropped first (count them
    with :func:`mixture_counts`), each record parses with its dataset's options and template variables, and a
    rejection is tagged with its dataset and repeated once per copy of its record."""
    if selection is not None:
        return _parse_mixed(batch, selection)
    parsed, rejections = [], []
    for raw in batch:
        kind, item = parse_raw_record(raw, format_options)
        (parsed if kind == PARSED else rejections).append(item)
    return parsed, rejections


def parse_in_dataset(raw, entry: DatasetEntry):
    """:func:`parse_raw_record` of a record of dataset ``entry``: its record options, and its chat template
    variables under the record's own (a record's ``chat_template_kwargs`` wins). Never raises."""
    kind, item = parse_raw_record(raw, entry.task)
    if kind == PARSED and entry.kwargs and hasattr(item[1], "template_kwargs"):
        item = (item[0], replace(item[1], template_kwargs={**entry.kwargs, **item[1].template_kwargs}))
    return kind, item


def _parse_mixed(batch, selection: Selection) -> tuple[list, list]:
    mixture = selection.mixture
    parsed, rejections = [], []
    for raw in selection.select(batch)[0]:
        kind, item = parse_in_dataset(raw, mixture.entry_of(raw.source))
        (parsed if kind == PARSED else rejections).append(item)
    return parsed, selection.expand_rejections(rejections)


def mixture_counts(batch, selection: Selection) -> tuple[int, int]:
    """``(skipped, repeats)`` of a batch under a mixture: records not taken, extra copies of the taken ones."""
    return selection.select(batch)[1:]


def build_batch(builder: RowBuilder, parsed, selection: Selection | None = None) -> tuple[list, list]:
    """``(raw, Conversation)`` pairs -> ``(rows, rejections)`` (:meth:`transforms.rows.RowBuilder.build_rows`;
    rejections made writable). Never raises for a record: a record's failure is its rejection. ``selection``
    (a job with a datasets list): rows gain their ``dataset`` column and, like rejections, are repeated once
    per copy of their record (:meth:`transforms.mixture.Selection.expand_rows`)."""
    rows, rejections = [], []
    for kind, item in builder.build_rows(parsed):
        if kind == ROW:
            rows.append(item)
        else:
            rejections.append(writable_rejection(item))
    if selection is not None:
        return selection.expand_rows(rows), selection.expand_rejections(rejections)
    return rows, rejections


class Progress:
    """Logs records done and rate every ``every_s`` seconds (``who``: whose records, e.g. "this worker")."""

    def __init__(self, every_s: float = 10.0, who: str = "this worker"):
        self.every_s = every_s
        self.who = who
        self.start = self.last = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            LOG.warning("chatshards: %d records processed by %s (%.0f records/s)", self.done, self.who, rate)
