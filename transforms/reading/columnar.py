"""Parquet and Arrow inputs (Beam-free).

Sniffed from the first bytes like everything else: ``PAR1`` (Parquet), ``ARROW1`` (Arrow IPC
file) or an IPC continuation marker ``FF FF FF FF`` (Arrow IPC stream, what ``datasets``'
``save_to_disk`` writes). Every table row is one record: a dict of its columns as Python values
(structs -> dicts, lists -> lists). Values are made JSON-safe so that records hash, dedup and go
to the rejected output like JSON records: binary values become base64 data URIs
(``data:application/octet-stream;base64,...``, which is how the ``datasets`` Image feature
``{"bytes", "path"}`` reaches the image loader), dates/times become ISO text, decimals floats.
A file that cannot be opened, or breaks while read, yields one unparseable record saying so, with the
reason code of what happened: ``truncated_input`` when the file is cut short (a Parquet or Arrow IPC file
whose closing magic bytes are missing, an Arrow IPC stream that breaks and lacks its end-of-stream marker),
``unreadable_input`` otherwise (a corrupt file, whole; an Arrow IPC stream whose reading stops at a
damaged message length before the end of the file). The rows before the cut are kept where the layout
allows it: an Arrow IPC file cut short is read as the stream it holds, up to the cut; a Parquet file cannot
be read without its footer. An Arrow IPC stream that ends without an end-of-stream marker (writers add it
when they close the stream; the 4 zero bytes of the legacy format count) is ``truncated_input`` after its
rows, even when it was cut exactly between two messages. Arrow IPC record batches are validated in full
before their rows are read (IPC buffers are not checked on read; a damaged offset would crash the process).
"""
from __future__ import annotations

from typing import Any, BinaryIO, Iterator

from transforms.errors import TRUNCATED_INPUT, UNREADABLE_INPUT
from transforms.reading.record import RawRecord, RecordCounter

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
#: what a complete file of each kind ends with
_CLOSING = {"parquet": (_PARQUET_MAGIC,), "arrow_file": (_ARROW_FILE_MAGIC,), "arrow_stream": (_ARROW_EOS,)}
_COLUMNAR_BATCH_ROWS = 256


def columnar_kind(head: bytes) -> str | None:
    """``"parquet"``, ``"arrow_file"``, ``"arrow_stream"`` or ``None`` from a file's first bytes."""
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC):
        return "arrow_file"
    if head.startswith(_ARROW_STREAM_MAGIC):
        return "arrow_stream"
    return None



def _jsonable(value: Any) -> Any:
    import base64
    import datetime
    import decimal

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "data:application/octet-stream;base64," + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _size_and_tail(stream: BinaryIO) -> tuple[int, bytes] | None:
    """``(size, last 8 bytes)`` of the seekable ``stream`` (its position kept); ``None`` when it cannot tell."""
    try:
        position = stream.tell()
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(max(size - 8, 0))
        tail = stream.read(8)
        stream.seek(position)
    except (OSError, ValueError, AttributeError):
        return None
    return size, tail


def _is_cut(stream: BinaryIO, kind: str) -> bool:
    """Whether the (seekable) ``stream`` lacks the bytes a complete file of ``kind`` ends with."""
    found = _size_and_tail(stream)
    return found is not None and not found[1].endswith(_CLOSING[kind])


def _batches(stream: BinaryIO, kind: str):
    """The file's record batches; Arrow IPC batches are validated in full first (IPC buffers are not checked
    when read: a damaged offset would crash the process when the rows are converted)."""
    import pyarrow as pa

    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(stream).iter_batches(batch_size=_COLUMNAR_BATCH_ROWS)
        return
    if kind == "arrow_file":
        reader = pa.ipc.open_file(stream)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(pa.ipc.open_stream(stream))
    for batch in batches:
        batch.validate(full=True)
        yield batch


def _stream_end_problem(stream: BinaryIO) -> tuple[str, str] | None:
    """``(reason, detail)`` when an Arrow IPC stream that was read to its end-of-stream marker is not whole:
    bytes after the marker (a damaged message length read as the end), or no marker at the end of the file."""
    position = stream.tell() if hasattr(stream, "tell") else None
    found = _size_and_tail(stream)
    if position is None or found is None:
        return None
    size, tail = found
    if position < size:
        return UNREADABLE_INPUT, (f"the Arrow IPC stream ends at byte {position} of {size}: the rest cannot be read "
                                  "(a damaged message read as the end of the stream)")
    if not tail.endswith(_CLOSING["arrow_stream"]) and not tail.endswith(b"\x00\x00\x00\x00"):
        return TRUNCATED_INPUT, ("the Arrow IPC stream is cut short: it ends without the end-of-stream marker that "
                                 "writers add when they close a stream")
    return None


def iter_columnar_records(stream: BinaryIO, *, source: str, kind: str) -> Iterator[RawRecord]:
    """One record per row of a Parquet / Arrow IPC file (``kind`` from :func:`columnar_kind`); a file that
    breaks ends with one unparseable record (``truncated_input`` or ``unreadable_input``, see the module)."""
    import pyarrow as pa

    counter = RecordCounter(source)
    name = {"parquet": "Parquet file", "arrow_file": "Arrow IPC file", "arrow_stream": "Arrow IPC stream"}[kind]
    try:
        for batch in _batches(stream, kind):
            for row in batch.to_pylist():
                yield counter.good(_jsonable(row))
    except (pa.ArrowException, OSError, ValueError) as exc:
        if not _is_cut(stream, kind):
            yield counter.bad("", f"cannot read the {name}: {type(exc).__name__}: {exc}", UNREADABLE_INPUT)
            return
        if kind == "arrow_file" and counter.next == 0:
            # the file's body is an IPC stream after 8 bytes (magic and padding): keep the rows before the cut
            try:
                stream.seek(8)
                for batch in pa.ipc.open_stream(stream):
                    batch.validate(full=True)
                    for row in batch.to_pylist():
                        yield counter.good(_jsonable(row))
            except (pa.ArrowException, OSError, ValueError):
                pass
        kept = f"; the {counter.next} row(s) before the cut were read" if counter.next else \
            ("; no row can be read without the footer" if kind == "parquet" else "")
        yield counter.bad("", f"the {name} is cut short (it lacks the bytes a complete file ends with): "
                              f"{type(exc).__name__}: {exc}{kept}", TRUNCATED_INPUT)
        return
    if kind == "arrow_stream":
        problem = _stream_end_problem(stream)
        if problem is not None:
            reason, detail = problem
            kept = f"; the {counter.next} row(s) before were read" if counter.next else ""
            yield counter.bad("", detail + kept, reason)
