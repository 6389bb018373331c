"""CoNLL text files: one word per line with its tag, a blank line between sentences.

Each sentence is one record ``{"tokens": [word, ...], "tags": [tag, ...]}`` (what the
token-classification task reads). Decisions:

* A line is split on whitespace (spaces or TABs); the **first** column is the word and the **last**
  the tag, so two-column files (GermEval, WNUT) and four-column CoNLL-2003 files (word, POS, chunk,
  NER) both give the NER tag. A line of one column is an error for its sentence.
* ``-DOCSTART-`` lines are document separators, not words (as the CoNLL-2003 loaders treat them);
  they end the sentence before them.
* One or more blank lines end a sentence; a file need not end with one. UTF-8 only (a leading BOM is
  dropped), LF or CRLF.
* A sentence with a line that is not valid UTF-8, or a line of one column, is one unparseable record
  (``invalid_content``) whose ``raw`` is the sentence's text; the next sentence is read as usual.
* ``RawRecord.index`` counts sentences from 0.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

from transforms.errors import INVALID_CONTENT
from transforms.reading.record import RawRecord, RecordCounter

_UTF8_BOM = b"\xef\xbb\xbf"
DOCSTART = "-DOCSTART-"


def iter_conll_records(stream: BinaryIO, *, source: str) -> Iterator[RawRecord]:
    """The sentences of a CoNLL stream as records (see the module)."""
    counter = RecordCounter(source)
    lines: list[str] = []
    problem: str | None = None
    number = 0

    def flush() -> RawRecord | None:
        if not lines:
            return None
        text = "\n".join(lines)
        if problem is not None:
            return counter.bad(text, problem, INVALID_CONTENT)
        columns = [line.split() for line in lines]
        return counter.good({"tokens": [c[0] for c in columns], "tags": [c[-1] for c in columns]})

    while True:
        raw = stream.readline()
        if not raw:
            break
        if number == 0 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM):]
        number += 1
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            problem = problem or f"line {number} is not valid UTF-8"
        columns = line.split()
        if not columns or columns[0] == DOCSTART:
            record = flush()
            if record is not None:
                yield record
            lines, problem = [], None
            continue
        if len(columns) < 2:
            problem = problem or f"line {number} has no tag (one column: {line.strip()[:80]!r})"
        lines.append(line)
    record = flush()
    if record is not None:
        yield record
