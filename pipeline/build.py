"""The *ParseRecords* and *BuildRows* DoFns: batches of raw records -> examples -> rows and rejections
(thin wrappers around :mod:`transforms.rows`)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.rejected import writable_rejection
from pipeline.remote import shared_job_tokenizer
from pipeline.trace import mark
from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions
from transforms.rows import PARSED, ROW, RowBuilder, parse_record
from transforms.vision.config import VisionConfig
from transforms.vision.part import ImageOptions, ImagePart, image_fields

REJECTED_TAG = "rejected"
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

    def create_builder(self) -> RowBuilder:
        tokenizer = shared_job_tokenizer(self.tokenizer, trust_remote_code=self.trust_remote_code)
        tokenizer.chat_template = self.chat_template
        images = None
        if self.vision is not None:
            images = ImagePart(tokenizer=tokenizer, vision=self.vision, image_options=self.image_options,
                               open_file=read_remote_file)
        return RowBuilder(tokenizer=tokenizer, format_options=self.format_options,
                          tokenize_options=self.tokenize_options, images=images)

    def extra_fields(self) -> tuple:
        """Arrow fields added to the shard schema by the builder this spec creates."""
        if self.vision is not None:
            return image_fields(self.vision, self.image_options or ImageOptions())
        return ()


def parse_raw_record(raw, format_options: FormatOptions):
    """:func:`transforms.rows.parse_record` (which keeps the reader's own reject code: ``truncated_input``,
    ``unreadable_input``, ``invalid_content`` for a lone surrogate), with a rejection that is always
    writable (:func:`pipeline.rejected.writable_rejection`). Never raises."""
    kind, item = parse_record(raw, format_options)
    return (kind, item) if kind == PARSED else (kind, writable_rejection(item))


def read_remote_file(path: str) -> bytes:
    """Whole-file read through Beam's filesystems (image paths under ``gs://`` and the like)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


class ParseRecordsFn(beam.DoFn):
    """``list[RawRecord] -> list[(raw, Conversation)]`` (main, one list per input batch) and
    ``rejected`` (tagged, one element per rejected record): the *ParseRecords* stage.

    Format detection and conversion need no tokenizer, so this stage is cheap and rejects most bad
    input before tokenization.
    """

    def __init__(self, spec: BuilderSpec):
        self.spec = spec

    def setup(self):
        self._rejected = Metrics.counter("chatshards", "records_rejected")

    def process(self, batch):
        parsed = []
        for raw in batch:
            kind, item = parse_raw_record(raw, self.spec.format_options)
            if kind == PARSED:
                parsed.append(item)
            else:
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
        if parsed:
            yield parsed


class _Progress:
    """Logs records done and rate every ``every_s`` seconds (per worker)."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.start = self.last = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            LOG.warning("chatshards: %d records processed by this worker (%.0f records/s)", self.done, rate)


class BuildRowsFn(beam.DoFn):
    """``list[(raw, Conversation)] -> list[row]`` (main, one list per batch) and ``rejected`` (tagged,
    one element per rejected record): the *BuildRows* stage (:meth:`transforms.rows.RowBuilder.build_rows`)."""

    def __init__(self, spec: BuilderSpec):
        self.spec = spec
        self._builder = None

    def setup(self):
        mark("worker_setup_start")
        self._builder = self.spec.create_builder()
        mark("worker_setup_done")
        self._rows = Metrics.counter("chatshards", "rows_written")
        self._rejected = Metrics.counter("chatshards", "records_rejected")
        self._tokens = Metrics.counter("chatshards", "tokens_written")
        self._progress = _Progress()

    def process(self, batch):
        rows = []
        for kind, item in self._builder.build_rows(batch):
            if kind == ROW:
                rows.append(item)
            else:
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, writable_rejection(item))
        self._rows.inc(len(rows))
        self._tokens.inc(sum(int(row["length"]) for row in rows))
        self._progress.add(len(batch))
        mark("batch_done")
        if rows:
            yield rows
