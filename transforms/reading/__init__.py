"""Reading input files into raw records (Beam-free): the job's *Read* step.

Entry points: :func:`iter_records` (one already-decompressed binary stream, any supported layout:
Parquet / Arrow IPC sniffed from the first bytes, else the JSON layouts) and
:func:`iter_raw_records_from_path` (a local path; ``*.gz`` is decompressed). Each yields one
:class:`RawRecord` per record and never raises on bad content: a record that cannot be used has
``value=None``, its text, an error and a reject code.

Modules: :mod:`~transforms.reading.record` (``RawRecord``), :mod:`~transforms.reading.json_layouts`
(JSON / JSON Lines sniffing and recovery, the decisions on bad input), :mod:`~transforms.reading.columnar`
(Parquet and Arrow).
"""
from __future__ import annotations

import gzip
import io
from typing import BinaryIO, Iterator

from transforms.reading.columnar import columnar_kind, iter_columnar_records
from transforms.reading.json_layouts import MAX_NESTING, iter_json_records
from transforms.reading.record import RawRecord, json_type_name

__all__ = ["MAX_NESTING", "RawRecord", "iter_records", "iter_raw_records_from_path", "json_type_name"]


def iter_records(stream: BinaryIO, *, source: str) -> Iterator[RawRecord]:
    """Every supported layout: Parquet / Arrow IPC (sniffed from the first bytes) or the JSON layouts
    of :func:`~transforms.reading.json_layouts.iter_json_records`."""
    head = stream.read(8) or b""
    kind = columnar_kind(head)
    if kind is None:
        yield from iter_json_records(_Prefixed(head, stream), source=source)
        return
    seekable = getattr(stream, "seekable", None)
    if callable(seekable) and seekable():
        stream.seek(0)
        yield from iter_columnar_records(stream, source=source, kind=kind)
        return
    yield from iter_columnar_records(io.BytesIO(head + stream.read()), source=source, kind=kind)



def iter_raw_records_from_path(path: str) -> Iterator[RawRecord]:
    """:func:`iter_records` for a local path; ``*.gz`` files are decompressed."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as stream:
        yield from iter_records(stream, source=str(path))



class _Prefixed:
    """A read-only binary stream: ``head`` (already read) followed by the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read() if size is None or size < 0 else self._stream.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._stream.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._stream.read(size - len(data))
        return data

    def readline(self, size: int = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        if not self._head:
            return self._stream.readline() if limit is None else self._stream.readline(limit)
        cut = self._head.find(b"\n")
        end = cut + 1 if cut >= 0 else len(self._head)
        if limit is not None:
            end = min(end, limit)
        line, self._head = self._head[:end], self._head[end:]
        if line.endswith(b"\n") or (limit is not None and len(line) >= limit) or self._head:
            return line
        rest = self._stream.readline() if limit is None else self._stream.readline(limit - len(line))
        return line + rest
