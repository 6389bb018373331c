"""The DoFn that turns batches of raw records into rows and rejections (wraps ``ExampleBuilder``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.config import TokenizeOptions
from transforms.example_builder import PARSED, ROW, ExampleBuilder, parse_record
from transforms.formats import FormatOptions
from transforms.tokenizer_loading import load_tokenizer

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

    def create_builder(self) -> ExampleBuilder:
        tokenizer = load_tokenizer(self.tokenizer, trust_remote_code=self.trust_remote_code)
        tokenizer.chat_template = self.chat_template
        return ExampleBuilder(tokenizer=tokenizer, format_options=self.format_options,
                              tokenize_options=self.tokenize_options)

    def extra_fields(self) -> tuple:
        """Arrow fields added to the shard schema by the builder this spec creates."""
        return ()


class ParseRecordsFn(beam.DoFn):
    """``RawRecord -> (raw, Conversation)`` (main) and ``rejected`` (tagged): the *Parse* stage.

    Format detection and conversion need no tokenizer, so this stage is cheap and rejects most bad
    input before tokenization.
    """

    def __init__(self, spec: BuilderSpec):
        self.spec = spec

    def setup(self):
        self._rejected = Metrics.counter("chatshards", "records_rejected")

    def process(self, raw):
        kind, item = parse_record(raw, self.spec.format_options)
        if kind == PARSED:
            yield item
        else:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)


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


class BuildExamplesFn(beam.DoFn):
    """``list[(raw, Conversation)] -> rows`` (main) and ``rejected`` (tagged): the *Tokenize* stage."""

    def __init__(self, spec: BuilderSpec):
        self.spec = spec
        self._builder = None

    def setup(self):
        self._builder = self.spec.create_builder()
        self._rows = Metrics.counter("chatshards", "rows_written")
        self._rejected = Metrics.counter("chatshards", "records_rejected")
        self._tokens = Metrics.counter("chatshards", "tokens_written")
        self._progress = _Progress()

    def process(self, batch):
        for kind, item in self._builder.build_parsed_batch(batch):
            if kind == ROW:
                self._rows.inc()
                self._tokens.inc(int(item["length"]))
                yield item
            else:
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
        self._progress.add(len(batch))
