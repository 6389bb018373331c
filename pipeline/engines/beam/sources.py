"""Reading input files into :class:`transforms.reading.RawRecord` elements.

One element per matched file is read by one worker (the file is streamed, not loaded, for JSON
Lines); its records are spilled in batches to temporary chunk files and references to the batches are
reshuffled, so that one large file does not pin all later work to the worker that read it.

Listing the inputs at launch (:func:`list_input_sizes`, :func:`expand_input_sizes`, :func:`expand_inputs`)
lives in the Beam-free :mod:`pipeline.io.input_files`; the names are re-exported here.
"""
from __future__ import annotations

from typing import Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from pipeline.io.spill import spill_batches
from pipeline.steps.reading import read_file_batches


class ReadRawRecords(beam.PTransform):
    """``PBegin -> PCollection[Chunk]``: every input's records, spilled in batches, as references.

    Each matched file is read (streamed) by one worker, which writes its records in lists of up to
    ``batch_size`` to chunk files under ``spill_folder`` (:mod:`pipeline.io.spill`) and emits one
    :class:`~pipeline.io.chunks.Chunk` per batch. The chunk references, not the records, are then reshuffled, so one
    large file does not pin later work to the worker that read it, and no runner ever holds the
    records in memory to move them. ``Map(read_spilled)`` turns a ref back into its batch.

    Records travel in lists through the whole job (read, parse, tokenize, shard), which divides Beam's
    per-element cost (serialisation, bundle bookkeeping) by the batch size; tokenization needs
    batches anyway.

    Args:
        patterns: input globs. With ``files`` given (already expanded at launch), those files are
            read; otherwise the patterns are matched when the pipeline runs.
        spill_folder: where chunk files go (the job uses ``<out>/.tmp/spill``).
        batch_size: records per batch.
        spread_records: reshuffle the refs after reading (default). Without it, every later stage
            fused with the read runs on the worker that read the file, so one large file is processed
            by one worker (kept only so tests can show the difference).
    """

    def __init__(self, *, patterns: Sequence[str], spill_folder: str, files: Sequence[str] | None = None,
                 spread_records: bool = True, batch_size: int = 256, task=None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.patterns = tuple(patterns)
        self.files = tuple(files) if files is not None else None
        self.spill_folder = spill_folder
        self.spread_records = spread_records
        self.task = task  # the job's TaskSpec: reads some files its own way (.txt of the text task)

    def expand(self, pbegin):
        if self.files is not None:
            paths = pbegin | "ListFiles" >> beam.Create(list(self.files))
        else:
            paths = (
                pbegin
                | "Patterns" >> beam.Create(list(self.patterns))
                | "MatchAll" >> fileio.MatchAll()
                | "Paths" >> beam.Map(lambda metadata: metadata.path)
                | "DistinctPaths" >> beam.Distinct()
            )
        batch_size, folder, task = self.batch_size, self.spill_folder, self.task
        refs = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.FlatMap(
                lambda path: spill_batches(_counted(read_file_batches(path, batch_size, task)), folder=folder))
        )
        return refs | "SpreadRecords" >> beam.Reshuffle() if self.spread_records else refs


def _counted(batches):
    """The batches unchanged, counting their records in the ``records_read`` metric."""
    records = Metrics.counter("chatshards", "records_read")
    for batch in batches:
        records.inc(len(batch))
        yield batch
