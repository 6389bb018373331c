"""The *ParseRecords* and *BuildRows* DoFns: batches of raw records -> examples -> rows and rejections
(thin wrappers around :func:`pipeline.steps.records.parse_batch` / :func:`~pipeline.steps.records.build_batch`,
themselves around :mod:`transforms.rows`)."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.io.trace import mark
from pipeline.steps.records import (
    BuilderSpec,
    Progress,
    build_batch,
    parse_batch,
)

REJECTED_TAG = "rejected"


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

    def process(self, batch, selection=None):
        parsed, rejections = parse_batch(batch, self.spec.task_spec, selection)
        for item in rejections:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
        if parsed:
            yield parsed


class BuildRowsFn(beam.DoFn):
    """``list[(raw, Conversation)] -> list[row]`` (main, one list per batch) and ``rejected`` (tagged,
    one element per rejected record): the *BuildRows* stage (:func:`pipeline.steps.records.build_batch`)."""

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
        self._progress = Progress()

    def process(self, batch, selection=None):
        rows, rejections = build_batch(self._builder, batch, selection)
        for item in rejections:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
        self._rows.inc(len(rows))
        self._tokens.inc(sum(int(row["length"]) for row in rows))
        self._progress.add(len(batch))
        mark("batch_done")
        if rows:
            yield rows
