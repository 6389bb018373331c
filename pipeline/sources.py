"""Reading input files into :class:`transforms.reading.RawRecord` elements.

One element per matched file is read by one worker (the file is streamed, not loaded, for JSON
Lines); its records are spilled in batches to temporary chunk files and references to the batches are
reshuffled, so that one large file does not pin all later work to the worker that read it.

Listing the inputs at launch (:func:`list_input_sizes`, :func:`expand_input_sizes`, :func:`expand_inputs`)
lives in the Beam-free :mod:`pipeline.input_files`; the names are re-exported here.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from pipeline.input_files import (  # noqa: F401  (the listing functions are re-exported)
    CorruptInput,
    TruncatedInput,
    compression_of,
    expand_input_sizes,
    expand_inputs,
    list_input_sizes,
    not_regular_reason,
    open_input,
)
from pipeline.spill import spill_batches
from transforms import errors
from transforms.reading import RawRecord, iter_records


class _StopAtFault:
    """A read-only stream that turns a decompression fault into a clean end of file, remembering it
    (``fault``): the reader then finishes the records before the fault, and the caller reports it."""

    def __init__(self, stream):
        self._stream = stream
        self.fault: Exception | None = None

    def _guard(self, method, *args) -> bytes:
        if self.fault is not None:
            return b""
        try:
            return method(*args)
        except (TruncatedInput, CorruptInput) as exc:
            self.fault = exc
            return b""

    def read(self, size: int = -1) -> bytes:
        return self._guard(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._guard(self._stream.readline, size)

    def seekable(self) -> bool:
        return False


def _unreadable(path: str, index: int, reason: str, detail: str) -> RawRecord:
    return RawRecord(path, index, None, raw="", error=detail, reason=reason)


def read_file(path: str) -> Iterator[RawRecord]:
    """Stream the records of one file (``.gz``/``.bz2`` etc. decompressed by extension; JSON/JSONL,
    Parquet and Arrow IPC files told apart by their first bytes).

    Never a silent short read: a compressed stream cut short or corrupt ends the file's records with
    one more record, rejected as ``truncated_input`` or ``unreadable_input``
    (:mod:`pipeline.input_files`); a path that is not a regular file (a FIFO, a directory) is never
    opened and becomes one ``unreadable_input`` record.
    """
    records = Metrics.counter("chatshards", "records_read")
    reason = not_regular_reason(path)
    if reason is not None:
        records.inc()
        yield _unreadable(path, 0, errors.UNREADABLE_INPUT, f"input {reason}")
        return
    try:
        stream = open_input(path)
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:  # deterministic: retrying cannot help
        records.inc()
        yield _unreadable(path, 0, errors.UNREADABLE_INPUT, f"cannot open the input: {exc}")
        return
    with stream:
        guarded = _StopAtFault(stream) if compression_of(path) else stream
        index = 0
        for raw in iter_records(guarded, source=path):  # JSON layouts, Parquet, Arrow IPC
            records.inc()
            index = raw.index + 1
            yield raw
    fault = getattr(guarded, "fault", None)
    if fault is not None:
        records.inc()
        code = errors.TRUNCATED_INPUT if isinstance(fault, TruncatedInput) else errors.UNREADABLE_INPUT
        yield _unreadable(path, index, code, f"{fault}; the records before this point were read")


def read_file_batches(path: str, batch_size: int) -> Iterator[list[RawRecord]]:
    """The records of one file in lists of at most ``batch_size`` (in file order)."""
    batch: list[RawRecord] = []
    for raw in read_file(path):
        batch.append(raw)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class ReadRawRecords(beam.PTransform):
    """``PBegin -> PCollection[Chunk]``: every input's records, spilled in batches, as references.

    Each matched file is read (streamed) by one worker, which writes its records in lists of up to
    ``batch_size`` to chunk files under ``spill_folder`` (:mod:`pipeline.spill`) and emits one
    :class:`~pipeline.chunks.Chunk` per batch. The chunk references, not the records, are then reshuffled, so one
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
                 spread_records: bool = True, batch_size: int = 256):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.patterns = tuple(patterns)
        self.files = tuple(files) if files is not None else None
        self.spill_folder = spill_folder
        self.spread_records = spread_records

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
        batch_size, folder = self.batch_size, self.spill_folder
        refs = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.FlatMap(
                lambda path: spill_batches(read_file_batches(path, batch_size), folder=folder))
        )
        return refs | "SpreadRecords" >> beam.Reshuffle() if self.spread_records else refs

