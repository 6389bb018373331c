"""Plain text files (``.txt``) as records ``{"text": ...}``: the text and mlm tasks read them.

Two units (``--text-file-unit``):

* ``line`` (default): one record per line that holds more than whitespace (the line without its ``\\n`` /
  ``\\r\\n``; blank lines separate nothing and are not records, as blank lines of a JSON Lines file are
  not). ``RawRecord.index`` is the ordinal of the record among the file's non-blank lines. This is the
  layout of LLaMA-Factory's ``wiki_demo.txt`` (one document per line) and of ``run_mlm.py
  --line_by_line``, which drops empty and whitespace-only lines too.
* ``file``: the whole file is one record (index 0), blank or not (a blank file is rejected as
  ``empty_text`` by the task, never dropped).

Bytes that are not UTF-8 make that line (or the file) an unparseable record rejected as
``invalid_content``, never a crash; the other lines are read.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

from transforms.errors import INVALID_CONTENT
from transforms.reading.record import RawRecord, RecordCounter

TEXT_FILE_UNITS = ("line", "file")
TEXT_SUFFIXES = (".txt",)
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".deflate", ".lzma")


def is_text_file(path: str) -> bool:
    """Whether ``path`` names a plain text file (``.txt``, also compressed: ``.txt.gz``)."""
    name = str(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.endswith(TEXT_SUFFIXES)


def _decoded(counter: RecordCounter, data: bytes) -> RawRecord:
    try:
        return counter.good({"text": data.decode("utf-8")})
    except UnicodeDecodeError as exc:
        return counter.bad(data.decode("utf-8", errors="replace")[:1000],
                           f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", INVALID_CONTENT)


def iter_text_lines(stream: BinaryIO, *, source: str) -> Iterator[RawRecord]:
    """One record per non-blank line of ``stream`` (see the module docstring)."""
    counter = RecordCounter(source)
    first = True
    while True:
        line = stream.readline()
        if not line:
            return
        if first:
            first = False
            if line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark is not text
                line = line[3:]
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        if not line.strip():
            continue
        yield _decoded(counter, line)


def iter_text_file(stream: BinaryIO, *, source: str) -> Iterator[RawRecord]:
    """The whole of ``stream`` as one record."""
    data = stream.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    yield _decoded(RecordCounter(source), data)


def text_file_reader(unit: str):
    """The reader of one unit (:data:`TEXT_FILE_UNITS`)."""
    if unit == "line":
        return iter_text_lines
    if unit == "file":
        return iter_text_file
    raise ValueError(f"--text-file-unit must be one of {', '.join(TEXT_FILE_UNITS)}, got {unit!r}")
