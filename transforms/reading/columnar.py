"""Parquet and Arrow inputs (Beam-free).

Sniffed from the first bytes like everything else: ``PAR1`` (Parquet), ``ARROW1`` (Arrow IPC
file) or an IPC continuation marker ``FF FF FF FF`` (Arrow IPC stream, what ``datasets``'
``save_to_disk`` writes). Every table row is one record: a dict of its columns as Python values
(structs -> dicts, lists -> lists). Values are made JSON-safe so that records hash, dedup and go
to the rejected output like JSON records: binary values become base64 data URIs
(``data:application/octet-stream;base64,...``, which is how the ``datasets`` Image feature
``{"bytes", "path"}`` reaches the image loader), dates/times become ISO text, decimals floats.
A file that cannot be opened, or breaks while read, yields one unparseable record saying so.
"""
from __future__ import annotations

from typing import Any, BinaryIO, Iterator

from transforms.reading.record import RawRecord, RecordCounter

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
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


def iter_columnar_records(stream: BinaryIO, *, source: str, kind: str) -> Iterator[RawRecord]:
    """One record per row of a Parquet / Arrow IPC file (``kind`` from :func:`columnar_kind`)."""
    import pyarrow as pa

    counter = RecordCounter(source)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(stream).iter_batches(batch_size=_COLUMNAR_BATCH_ROWS)
        elif kind == "arrow_file":
            reader = pa.ipc.open_file(stream)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(pa.ipc.open_stream(stream))
        for batch in batches:
            for row in batch.to_pylist():
                yield counter.good(_jsonable(row))
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield counter.bad("", f"cannot read {kind.replace('_', ' ')} file: {type(exc).__name__}: {exc}")
