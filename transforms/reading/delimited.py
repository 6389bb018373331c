"""CSV and TSV files with a header row: one record per data row, ``{column name: cell text}``.

This is how GLUE ships MRPC and STS-B (``train.tsv``: ``Quality``, ``#1 String``, ``#2 String``;
``dev.csv``: ``label,sentence1,sentence2``). Decisions:

* **The first row names the columns.** An empty column name, or a name used twice, makes the file
  one unparseable record (``invalid_content``): no row could be read without guessing.
* **Cells stay text.** No type is guessed per cell (a sentence ``"1999"`` stays a string); the task
  that reads a column decides what it means (a classification label ``"5.000"`` is a number there).
* **CSV** follows RFC 4180 (``"`` quotes fields, ``""`` is a quote inside one, quoted fields may
  span lines); a quoted field still open at the end of the file is ``truncated_input``.
  **TSV** has no quoting at all, as GLUE's files are written: a ``"`` is a character like any other
  (MRPC's ``" The foodservice pie ...`` keeps its quote), a field never holds a TAB or a line break.
* UTF-8 only (a leading BOM is dropped); LF and CRLF line ends; blank lines are skipped and are not
  records. A line with invalid UTF-8, or a row with more or fewer cells than the header, is one
  unparseable record (``invalid_content``) and reading goes on with the next row.
* ``RawRecord.index`` counts data rows (unparseable ones included) from 0; the header is not a record.
"""
from __future__ import annotations

import csv
import functools
from typing import BinaryIO, Callable, Iterator

from transforms.errors import INVALID_CONTENT, TRUNCATED_INPUT
from transforms.reading.record import RawRecord, RecordCounter

_UTF8_BOM = b"\xef\xbb\xbf"


class _Lines:
    """Decoded lines of a binary stream, remembering which line numbers held invalid UTF-8."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.number = 0
        self.bad: set[int] = set()
        self.last_text = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._stream.readline()
        if not line:
            raise StopIteration
        if self.number == 0 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM):]
        self.number += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.bad.add(self.number)
            text = line.decode("utf-8", errors="replace")
        self.last_text = text
        return text


def iter_delimited_records(stream: BinaryIO, *, source: str, delimiter: str) -> Iterator[RawRecord]:
    """The records of a CSV (``delimiter=","``) or TSV (``delimiter="\\t"``) stream (see the module)."""
    if delimiter not in (",", "\t"):
        raise ValueError(f"delimiter must be ',' or TAB, not {delimiter!r}")
    lines = _Lines(stream)
    if delimiter == ",":
        reader = csv.reader(lines, delimiter=",", quotechar='"', doublequote=True, strict=True)
    else:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    counter = RecordCounter(source)
    header: list[str] | None = None
    while True:
        first_line = lines.number + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            text = lines.last_text.rstrip("\r\n")
            end_of_file = "unexpected end of data" in str(exc) or "newline inside string" in str(exc)
            if header is None:
                yield counter.bad(text, f"the header row cannot be read: {exc}", INVALID_CONTENT)
                return
            code = TRUNCATED_INPUT if end_of_file else INVALID_CONTENT
            yield counter.bad(text, f"line {reader.line_num}: {exc}", code)
            if end_of_file:
                return
            continue
        last_line = lines.number
        bad_bytes = any(first_line <= n <= last_line for n in lines.bad)
        if not cells or (len(cells) == 1 and not cells[0].strip() and not bad_bytes):
            continue  # a blank line
        if header is None:
            problem = _header_problem(cells) or ("the header row is not valid UTF-8" if bad_bytes else None)
            if problem is not None:
                yield counter.bad(delimiter.join(cells), problem, INVALID_CONTENT)
                return
            header = cells
            continue
        text = delimiter.join(cells)
        if bad_bytes:
            yield counter.bad(text, f"lines {first_line}-{last_line} are not valid UTF-8", INVALID_CONTENT)
        elif len(cells) != len(header):
            yield counter.bad(text, f"line {first_line} has {len(cells)} cells, the header has {len(header)}",
                              INVALID_CONTENT)
        else:
            yield counter.good(dict(zip(header, cells)))


def _header_problem(cells: list[str]) -> str | None:
    if any(not name.strip() for name in cells):
        return "the header row has an empty column name"
    twice = sorted({name for name in cells if cells.count(name) > 1})
    if twice:
        return f"the header row names column(s) {', '.join(map(repr, twice))} more than once"
    return None


def file_suffix(path: str) -> str:
    """The lower-case extension of ``path`` after any compression suffix (``a.tsv.gz`` -> ``.tsv``)."""
    from transforms.reading.plain_text import _COMPRESSION_SUFFIXES

    name = str(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    dot = name.rfind(".")
    return name[dot:] if dot > name.rfind("/") else ""


def delimited_file_reader(path: str) -> Callable[..., Iterator[RawRecord]] | None:
    """The reader of a ``.csv`` / ``.tsv`` file (also compressed), ``None`` for other files."""
    delimiter = {".csv": ",", ".tsv": "\t"}.get(file_suffix(path))
    return None if delimiter is None else functools.partial(iter_delimited_records, delimiter=delimiter)
