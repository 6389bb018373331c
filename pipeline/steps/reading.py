"""Reading one input file into :class:`transforms.reading.RawRecord` elements (Beam-free: the job's
:class:`pipeline.engines.beam.sources.ReadRawRecords` and the local engine read files with
:func:`read_file_batches`)."""
from __future__ import annotations

from typing import Callable, Iterator

from pipeline.io.input_files import (
    CorruptInput,
    TruncatedInput,
    compression_of,
    disk_position,
    not_regular_reason,
    open_input,
)
from transforms import errors
from transforms.mixture import Mixture
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


def read_file(path: str, task=None, opened: Callable | None = None) -> Iterator[RawRecord]:
    """Stream the records of one file (``.gz``/``.bz2`` etc. decompressed by extension; JSON/JSONL,
    Parquet and Arrow IPC files told apart by their first bytes).

    Never a silent short read: a compressed stream cut short or corrupt ends the file's records with
    one more record, rejected as ``truncated_input`` or ``unreadable_input``
    (:mod:`pipeline.io.input_files`); a path that is not a regular file (a FIFO, a directory) is never
    opened and becomes one ``unreadable_input`` record. ``task``: the job's
    :class:`~transforms.tasks.spec.TaskSpec`, which may read some files its own way (``.txt`` files of the
    text and mlm tasks: :meth:`~transforms.tasks.spec.TaskSpec.file_layout`). ``opened``: called with the
    opened stream (progress reports read its position, :func:`pipeline.io.input_files.disk_position`).
    """
    reason = not_regular_reason(path)
    if reason is not None:
        yield _unreadable(path, 0, errors.UNREADABLE_INPUT, f"input {reason}")
        return
    try:
        stream = open_input(path)
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:  # deterministic: retrying cannot help
        yield _unreadable(path, 0, errors.UNREADABLE_INPUT, f"cannot open the input: {exc}")
        return
    if opened is not None:
        opened(stream)
    with stream:
        guarded = _StopAtFault(stream) if compression_of(path) else stream
        index = 0
        layout = task.file_layout(path) if task is not None else None
        records = layout(guarded, source=path) if layout is not None else iter_records(guarded, source=path)
        for raw in records:  # JSON layouts, Parquet, Arrow IPC (or the task's layout)
            index = raw.index + 1
            yield raw
    fault = getattr(guarded, "fault", None)
    if fault is not None:
        code = errors.TRUNCATED_INPUT if isinstance(fault, TruncatedInput) else errors.UNREADABLE_INPUT
        yield _unreadable(path, index, code, f"{fault}; the records before this point were read")


def read_file_batches(path: str, batch_size: int, task=None,
                      position: Callable[[int], None] | None = None) -> Iterator[list[RawRecord]]:
    """The records of one file in lists of at most ``batch_size`` (in file order; ``task``: see :func:`read_file`,
    or the job's :class:`~transforms.mixture.Mixture`). ``position``: called before each batch is yielded with the
    bytes of the file read so far (on disk)."""
    batch: list[RawRecord] = []
    streams: list = []
    if isinstance(task, Mixture):  # a datasets list: the file's dataset's task
        task = task.task_of(path)
    # the chat task reads every file the usual way (read_file(path), as before tasks existed)
    records = read_file(path, None if task is None or task.is_chat else task,
                        opened=streams.append if position is not None else None)
    for raw in records:
        batch.append(raw)
        if len(batch) >= batch_size:
            _report(position, streams)
            yield batch
            batch = []
    if batch:
        _report(position, streams)
        yield batch


def _report(position: Callable[[int], None] | None, streams: list) -> None:
    if position is not None and streams:
        done = disk_position(streams[0])
        if done is not None:
            position(done)
