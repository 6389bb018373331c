"""JSON layouts: split one JSON / JSON Lines input into raw records, sniffing the layout and
recovering from bad records (Beam-free).

:func:`iter_json_records` takes an already-decompressed binary stream and yields one
:class:`~transforms.reading.record.RawRecord` per record (the reading step's entry point, which
also sniffs Parquet/Arrow, is :func:`transforms.reading.iter_records`). It never raises on bad
*content*: anything that cannot be parsed becomes a record with ``value=None``, the offending
text in ``raw`` and a human-readable ``error``, so the pipeline can route it to the rejected
output (reason ``invalid_json``).
Only I/O errors raised by the stream itself propagate.

Layout is sniffed from the content, never from the file name (Parquet and Arrow IPC
inputs: :mod:`transforms.reading.columnar`). Decisions:

* **Encoding.** Input must be UTF-8. A leading UTF-8 BOM is stripped. CRLF line ends are
  accepted everywhere (``\\r`` is JSON whitespace, and is stripped from JSON Lines lines).
  A file that starts with a UTF-16/UTF-32 BOM yields a single unparseable record saying so.
  Invalid UTF-8 never crashes: in JSON Lines only the affected line is rejected; in a
  whole-document layout only the records whose text contains the bad bytes are rejected
  (their ``raw`` shows the bad bytes as U+FFFD).
* **Strings may contain raw control characters** (newline, TAB): every parse uses
  ``json.JSONDecoder(strict=False)``. The data is unambiguous and real files contain them
  (openai-cookbook ``01-testing-example.jsonl``). ``NaN``/``Infinity`` are accepted as Python does.
* **JSON Lines** (streamed line by line, never read whole): chosen when the first non-blank line
  is a complete JSON object or array and another non-blank line follows, or when the first line
  is not valid JSON and does not look like the opening of a multi-line value (it does not end
  with ``{``, ``[``, ``,`` or ``:``) and another non-blank line follows, i.e. a JSONL file whose
  first record is broken (a file of one broken line is parsed as a document instead). Blank lines
  are skipped and are not records. Each line must hold exactly one value: a line that does not
  parse, or has extra text after its value, is one unparseable record. Lines may be objects or
  bare lists of messages (xtuner). A line holding a scalar (``null``, number, string, bool) is
  an unparseable record ("expected a JSON object or array").
* **Whole-document layouts**:

  - a **JSON array** of records, compact or pretty-printed, *streamed*: the text is read and decoded
    :data:`ARRAY_READ_BYTES` at a time and only the elements not yet yielded are held, so memory
    stays flat however large the array (one 2 GiB line included; see :data:`FIRST_LINE_LIMIT` for
    how a huge first line is sniffed without reading it whole). Elements are parsed one by one, so a
    bad element is reported on its own and parsing resumes at the next element (the element's
    end is found by bracket matching that respects strings); if no resync is possible the rest
    of the array becomes one unparseable record. A trailing comma before ``]`` is tolerated.
    Text after the closing ``]`` is parsed as further concatenated values (read whole).
    *Exception:* an array whose elements are all message objects (each has ``role`` plus
    ``content``/``tool_calls``, or ``from`` plus ``value``) and none is a record wrapper is one
    conversation in bare-list form, so it is yielded as a single record.
  - a **single JSON object** (axolotl ``conversation.json``): one record.
  - **concatenated / pretty-printed values** (read whole; objects one after another, separated by
    whitespace): each value is one record. After a parse error, parsing resumes at the next
    line that starts (in column 0) with ``{`` or ``[`` and parses; the text skipped over becomes
    one unparseable record, so nothing is silently lost. If nothing parses after the error the
    remaining text is a single unparseable record.

* **Records no later stage can carry are refused here**, so that no single record can end a job:
  a value holding a lone surrogate (``"\\ud800"``: not Unicode, no UTF-8 encoder or Beam coder can
  carry it) anywhere, keys and JSON text inside strings (tool-call arguments) included, is
  unparseable with reason ``invalid_content``; a value nested
  more than :data:`MAX_NESTING` levels deep (it would overflow the recursion of pickle, ``json`` or a
  Beam coder later) and an integer literal longer than Python's 4,300-digit limit are ``invalid_json``.
  The rejected ``raw`` is the record's text, escapes intact (it is always writable).
* **Truncated documents.** A JSON array whose closing ``]`` never comes (the file ends between or
  inside elements), an object cut short at the end of the file, and a last JSON Lines line cut
  inside a value yield an unparseable record with reason ``truncated_input``: elements before the
  cut are kept, and the cut is reported, never a silent short read. (Truncated *compressed* streams
  are detected by the pipeline's file reader, ``pipeline/steps/reading.py``.)
* ``RawRecord.index`` is the 0-based ordinal of the record in the file (unparseable ones
  included); ``raw`` holds the record's text only when it could not be parsed. Very long raw
  text is kept whole: truncating is up to whoever writes the rejected output.
"""
from __future__ import annotations

import codecs
import json
import re
from typing import Any, BinaryIO, Callable, Iterator

from transforms.errors import INVALID_CONTENT, INVALID_JSON, TRUNCATED_INPUT
from transforms.reading.record import RawRecord, RecordCounter, json_type_name

_DECODER = json.JSONDecoder(strict=False)
_WS = re.compile(r"[ \t\n\r]*")
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
)
# Characters produced by the ``surrogateescape`` handler for undecodable bytes.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")
# Start of a top-level value at the beginning of a line (resync points for concatenated values).
_LINE_VALUE_START = re.compile(r"(?:^|\n)([{\[])")
_SPECIAL = re.compile(r'["\\{}\[\],]')
_RECORD_WRAPPER_KEYS = frozenset(
    {"messages", "conversations", "instruction", "prompt", "completion", "output"})
# Deepest nesting of objects/arrays a record may have (real chat records nest about ten levels; pickle
# and Beam's coders recurse once or more per level and hit Python's recursion limit near 500).
MAX_NESTING = 100
# A JSON escape that decodes to a surrogate code point (a pair is fine, a lone one is not Unicode).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_SURROGATES = re.compile("[\ud800-\udfff]")
#: Bytes read at a time while a JSON array document is streamed (a value longer than what is held makes the
#: next read as large as what is held, so a long element is parsed again a logarithmic number of times).
ARRAY_READ_BYTES = 1 << 20
#: The layout is sniffed from the first line, read whole unless it is longer than this: a longer first line
#: that opens an array (``[``, one huge single-line array) is streamed as an array document; any other is
#: then read whole (a JSON Lines record, or a single object). A JSON Lines file whose first line is a bare
#: list of messages longer than this is read as the same records, through the document path.
FIRST_LINE_LIMIT = 8 << 20


def iter_json_records(stream: BinaryIO, *, source: str) -> Iterator[RawRecord]:
    """Yield the records of one (already decompressed) input file; see the module docstring."""
    counter = _Counter(source)
    readline = stream.readline

    def limited_line() -> tuple[bytes, bool]:
        """The next line, or its first FIRST_LINE_LIMIT bytes; and whether it goes on past them."""
        line = readline(FIRST_LINE_LIMIT)
        return line, len(line) >= FIRST_LINE_LIMIT and not line.endswith(b"\n")

    # Find the first non-blank line, stripping a BOM from the very start of the file.
    first, cut = limited_line()
    for bom, name in _OTHER_BOMS:
        if first.startswith(bom):
            yield counter.bad(
                _decode_replace(first[:200]),
                f"file is {name} encoded (byte order mark found); re-encode it as UTF-8")
            return
    if first.startswith(_UTF8_BOM):
        first = first[len(_UTF8_BOM):]
        if not first and cut:
            first, cut = limited_line()
    while first and not first.strip():
        first, cut = limited_line()
    if not first:
        return  # empty file: no records
    if cut:  # a long first line, not read whole yet
        if first.lstrip()[:1] == b"[":
            yield from _document(first, stream, counter)  # one huge single-line array: streamed
            return
        first += readline()

    first_text, first_err = _decode_line(first)
    first_value, first_parse_err = (None, first_err) if first_err else _parse_line(first_text)

    if first_parse_err is None and isinstance(first_value, (dict, list)):
        second = readline()
        while second and not second.strip():
            second = readline()
        if not second:
            # A one-line file: a document (a record, or an array of records).
            if isinstance(first_value, list):
                yield from _array_records(first_value, counter, first_text)
            else:
                yield counter.good(first_value, first_text)
            return
        yield counter.good(first_value, first_text)
        yield from _jsonl(second, readline, counter)
        return

    if not _line_raw(first).rstrip().endswith(("{", "[", ",", ":")):
        # Not the opening of a multi-line value: JSON Lines whose first record is broken...
        second = readline()
        while second and not second.strip():
            second = readline()
        if second:
            yield counter.bad(_line_raw(first), first_parse_err)
            yield from _jsonl(second, readline, counter)
            return
        # ...unless it is the only line: then it is a (broken) one-line document, e.g. an
        # array with a trailing comma, parsed element by element below.

    # Whole-document layouts: JSON array (streamed) or (concatenated) pretty-printed objects.
    yield from _document(first, stream, counter)



# --------------------------------------------------------------------------------------------
# helpers


class _Counter(RecordCounter):
    """Hands out consecutive record indexes, refusing values no later stage can carry."""

    __slots__ = ()

    def good(self, value: Any, text: str | None = None, start: int = 0, end: int | None = None) -> RawRecord:
        """A parsed record; ``text[start:end]`` is its JSON text (when known), used to find values no
        later stage can carry (:func:`_value_problem`), which make the record unparseable instead."""
        if text is not None:
            end = len(text) if end is None else end
            problem = _value_problem(value, *_suspects(text, start, end))
            if problem is not None:
                return self.bad(_clean_raw(text[start:end].strip()), problem[1], problem[0])
        return super().good(value)


def _suspects(text: str, start: int, end: int) -> tuple[bool, bool]:
    """``(may hold a lone surrogate, may nest too deep)`` from the JSON text (C-speed scans), so that
    the value walks of :func:`_value_problem` run only for the rare records that need them."""
    return (_SURROGATE_ESCAPE.search(text, start, end) is not None,
            text.count("{", start, end) + text.count("[", start, end) > MAX_NESTING)


def _value_problem(value: Any, surrogates: bool, deep: bool) -> tuple[str, str] | None:
    """``(reason, detail)`` when a parsed value cannot travel through the job: a lone surrogate in a
    string or key, or nesting deeper than :data:`MAX_NESTING`."""
    if surrogates:
        where = _lone_surrogate_at(value)
        if where is not None:
            return INVALID_CONTENT, f"{where} contains a lone surrogate (not valid Unicode)"
    if deep and _nested_deeper(value, MAX_NESTING):
        return INVALID_JSON, f"invalid JSON: nested more than {MAX_NESTING} levels deep"
    return None


def _escaped_json(value: Any) -> str:
    """A value's JSON text with every non-ASCII character escaped (writable whatever it holds)."""
    try:
        return json.dumps(value, ensure_ascii=True, default=str)
    except (RecursionError, ValueError):
        return repr(value)[:10000]


def _lone_surrogate_at(value: Any) -> str | None:
    """Where (``messages[0].content``, ``a key of meta``) the first lone surrogate of ``value`` is."""
    stack: list[tuple[Any, str]] = [(value, "the record")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATES.search(item) and _has_lone_surrogate(item):
                return where
            if _SURROGATE_ESCAPE.search(item) and item.lstrip()[:1] in ("{", "[", '"'):
                # JSON inside a string (tool-call arguments, tools, messages given as text) is decoded
                # later (transforms.formats): look at what it decodes to
                try:
                    stack.append((_DECODER.decode(item), f"{where} (as JSON)"))
                except (ValueError, RecursionError):
                    pass
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _SURROGATES.search(key) and _has_lone_surrogate(key):
                    return f"a key of {where}"
                stack.append((child, f"{where}.{key}" if where != "the record" else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _structure(text: str, pos: int) -> Iterator[tuple[int, str]]:
    """``(index, char)`` of each bracket and comma outside strings from ``pos`` on, plus ``(index, '"')``
    where a string closes (escapes respected)."""
    in_string = False
    i = pos
    while True:
        m = _SPECIAL.search(text, i)  # jump between interesting characters
        if m is None:
            return
        i = m.start()
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
                yield i, ch
        elif ch == '"':
            in_string = True
        elif ch != "\\":
            yield i, ch
        i += 1


def _unterminated(text: str, pos: int) -> bool:
    """Whether the value starting at ``text[pos]`` (an object, array or string) is still open when the
    text ends: the file was cut inside it."""
    if pos >= len(text) or text[pos] not in "{[\"":
        return False
    depth = 0
    for _, ch in _structure(text, pos):
        if ch == '"':
            if depth == 0:
                return False
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return False
    return True


def _decode_replace(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _decode_line(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, (f"invalid UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start} "
                      f"of the line cannot be decoded")


def _line_raw(line: bytes) -> str:
    return _decode_replace(line).rstrip("\r\n")




def _parse_line(text: str) -> tuple[Any, str | None]:
    """Parse one JSONL line; returns (value, None) or (None, error)."""
    start = _WS.match(text).end()
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "invalid JSON: nesting too deep"
    except ValueError as exc:  # an integer literal beyond Python's int/str conversion limit
        return None, f"invalid JSON: {exc}"
    end = _WS.match(text, end).end()
    if end != len(text):
        return None, f"invalid JSON: extra data after the value at column {end + 1}"
    if not isinstance(value, (dict, list)):
        return None, f"expected a JSON object or array, got a {json_type_name(value)}"
    return value, None


def _jsonl(line: bytes, readline, counter: _Counter) -> Iterator[RawRecord]:
    """Stream JSON Lines starting with ``line`` (already read) then the rest of the stream."""
    while line:
        if line.strip():
            text, err = _decode_line(line)
            if err is None:
                value, err = _parse_line(text)
            if err is None:
                yield counter.good(value, text)
            elif not line.endswith(b"\n") and text is not None and _unterminated(text, _WS.match(text).end()):
                # the last line, cut inside its value: the file ends early
                yield counter.bad(_line_raw(line), f"truncated input: the file ends inside this line's value ({err})",
                                  TRUNCATED_INPUT)
            else:
                yield counter.bad(_line_raw(line), err)
        line = readline()


class _Window:
    """The text of a binary stream, decoded as it is read (UTF-8; undecodable bytes become lone surrogates,
    ``bad_bytes`` says whether any did), held from an absolute offset ``base`` on: a document is parsed
    through it from the front, reading more where a value goes on (:meth:`more`) and dropping what was
    yielded (:meth:`drop`). Positions given to its methods are indexes into :attr:`text`."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.text = ""
        self.base = 0
        self.eof = False
        self.bad_bytes = False
        self._newlines = 0  # newlines in the dropped text
        self._line_start = 0  # absolute offset where the line holding ``base`` starts
        self._append(self._decoder.decode(head))

    def _append(self, chunk: str) -> None:
        if not self.bad_bytes and _ESCAPED_BYTES.search(chunk):
            self.bad_bytes = True
        self.text += chunk

    def more(self) -> bool:
        """Read on (at least as much as is held); ``False`` once the stream is exhausted."""
        if self.eof:
            return False
        data = self._stream.read(max(ARRAY_READ_BYTES, len(self.text)))
        if data:
            self._append(self._decoder.decode(data))
            return True
        self.eof = True
        self._append(self._decoder.decode(b"", True))  # an incomplete sequence at the end: escaped bytes
        return False

    def read_all(self) -> None:
        while self.more():
            pass

    def drop(self, upto: int) -> None:
        """Forget ``text[:upto]`` (positions shift down by ``upto``)."""
        dropped = self.text[:upto]
        newlines = dropped.count("\n")
        if newlines:
            self._newlines += newlines
            self._line_start = self.base + dropped.rfind("\n") + 1
        self.text = self.text[upto:]
        self.base += upto

    def position(self, text: str, pos: int) -> str:
        """``line L column C`` of ``self.text[pos]`` in the whole document (``text`` is ``self.text``)."""
        line = self._newlines + text.count("\n", 0, pos) + 1
        newline = text.rfind("\n", 0, pos)
        start = self.base + newline + 1 if newline >= 0 else self._line_start
        return f"line {line} column {self.base + pos - start + 1}"

    def skip_ws(self, pos: int) -> int:
        """The first position from ``pos`` on that is not JSON whitespace (``len(text)`` only at the end)."""
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text) or not self.more():
                return pos

    def decode(self, pos: int) -> tuple[Any, int, str | None]:
        """:func:`_decode_value` at ``pos``, reading on until the value (or the element that holds the error)
        is complete or the stream ends."""
        while True:
            value, end, err = _decode_value(self.text, pos, self.position)
            if self.eof:
                return value, end, err
            if err is None:
                if isinstance(value, (dict, list, str)) or end + 2 < len(self.text) or (
                        end < len(self.text) and self.text[end] in " \t\n\r,]}"):
                    return value, end, err  # closed by its bracket or quote, or followed by what ends it
                # a number near the end of what is read may go on ("-2" of "-2.5e3")
            elif _skip_element(self.text, pos) is not None:
                return value, end, err  # the whole element is here: the error is the element's own
            self.more()


def _is_message(value: Any) -> bool:
    if not isinstance(value, dict) or _RECORD_WRAPPER_KEYS.intersection(value):
        return False
    return ("role" in value and ("content" in value or "tool_calls" in value)) or (
        "from" in value and "value" in value)


def _array_records(items: list, counter: _Counter, text: str) -> Iterator[RawRecord]:
    """Records of an already parsed top-level array (``text``: the array's JSON text)."""
    if items and all(_is_message(item) for item in items):
        yield counter.good(items, text)  # one conversation as a bare list of messages
        return
    suspects = _suspects(text, 0, len(text))  # once for the whole array: linear, not per element
    for item in items:
        if isinstance(item, (dict, list)):
            problem = _value_problem(item, *suspects) if any(suspects) else None
            if problem is None:
                yield counter.good(item)
            else:  # the element's own JSON (escapes kept) is the evidence
                yield counter.bad(_escaped_json(item), problem[1], problem[0])
        else:
            yield counter.bad(json.dumps(item, ensure_ascii=not isinstance(item, str) or _has_lone_surrogate(item)),
                              f"expected a JSON object or array, got a {json_type_name(item)}")


def _position(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {col}"


def _clean_raw(raw: str) -> str:
    """Raw text for the rejected output: undecodable bytes shown as U+FFFD."""
    return _ESCAPED_BYTES.sub("\ufffd", raw)


_Where = Callable[[str, int], str]


def _decode_value(text: str, pos: int, where: _Where = _position) -> tuple[Any, int, str | None]:
    try:
        value, end = _DECODER.raw_decode(text, pos)
        return value, end, None
    except json.JSONDecodeError as exc:
        return None, pos, f"invalid JSON: {exc.msg} at {where(text, exc.pos)}"
    except RecursionError:
        return None, pos, f"invalid JSON: nesting too deep at {where(text, pos)}"
    except ValueError as exc:  # an integer literal beyond Python's int/str conversion limit
        return None, pos, f"invalid JSON: {exc} at {where(text, pos)}"


def _document(head: bytes, stream: BinaryIO, counter: _Counter) -> Iterator[RawRecord]:
    """A whole-document layout: ``head`` (already read) and the rest of ``stream``. An array is streamed
    element by element (:func:`_array_document`); what follows it, or a document of concatenated values, is
    read whole."""
    window = _Window(head, stream)
    pos = window.skip_ws(0)
    if window.text.startswith("[", pos):
        pos = yield from _array_document(window, pos, counter)
    window.read_all()
    yield from _concatenated(window.text, pos, window.bad_bytes, counter, window.position)


def _checked(text: str, start: int, end: int, value: Any, had_bad_bytes: bool,
             counter: _Counter, where: _Where = _position) -> RawRecord:
    """A parsed value as a record, unless its text contains undecodable bytes."""
    if had_bad_bytes:
        m = _ESCAPED_BYTES.search(text, start, end)
        if m:
            return counter.bad(
                _clean_raw(text[start:end]),
                f"invalid UTF-8: undecodable byte 0x{ord(m.group()) - 0xdc00:02x} at "
                f"{where(text, m.start())}")
    if not isinstance(value, (dict, list)):
        return counter.bad(text[start:end], f"expected a JSON object or array, got a {json_type_name(value)}")
    return counter.good(value, text, start, end)


#: While an array is streamed, the text before the current element is dropped once this much of it is held
#: (the last :data:`_KEPT_TAIL` characters are kept: a truncation report quotes the end of the text).
_DROP_CHARS = 1 << 20
_KEPT_TAIL = 256


def _array_document(window: _Window, pos: int, counter: _Counter):
    """Parse a top-level array starting at ``window.text[pos] == '['``; returns the position after it.

    Elements are yielded as they are parsed (and the text before them dropped), except that the array is
    buffered when its first element looks like a message (to decide whether the array is one bare-list
    conversation).
    """
    where = window.position
    pos += 1
    buffered: list[tuple[int, int, Any]] | None = None  # (start, end, value) while undecided

    def flush_buffer():
        nonlocal buffered
        if buffered is not None:
            for b_start, b_end, b_value in buffered:
                yield _checked(window.text, b_start, b_end, b_value, window.bad_bytes, counter, where)
            buffered = None

    first = True
    unterminated = False
    while True:
        if buffered is None and pos >= _DROP_CHARS + _KEPT_TAIL:
            window.drop(pos - _KEPT_TAIL)
            pos = _KEPT_TAIL
        pos = window.skip_ws(pos)
        text = window.text
        if pos >= len(text):
            unterminated = True  # the file ends before "]": the elements parsed so far are kept
            break
        if text[pos] == "]":
            pos += 1
            break
        if not first:
            if text[pos] == ",":
                pos = window.skip_ws(pos + 1)
                text = window.text
                if pos < len(text) and text[pos] == "]":  # trailing comma
                    pos += 1
                    break
                if pos >= len(text):
                    unterminated = True
                    break
            else:
                # Missing comma between elements (or garbage): treat like a bad element.
                pass
        start = pos
        value, end, err = window.decode(start)
        text = window.text
        if err is None:
            if first and _is_message(value):
                buffered = []
            if buffered is not None:
                if _is_message(value):
                    buffered.append((start, end, value))
                else:
                    yield from flush_buffer()
                    yield _checked(text, start, end, value, window.bad_bytes, counter, where)
            else:
                yield _checked(text, start, end, value, window.bad_bytes, counter, where)
            pos = end
            first = False
            continue
        # A bad element: find its end by bracket matching and resume after it.
        yield from flush_buffer()
        first = False
        elem_end = _skip_element(text, start)
        if elem_end is None:
            # No resync possible: the rest of the array is one unparseable record.
            window.read_all()
            text = window.text
            rest = text[start:].rstrip()
            if rest.endswith("]"):
                rest = rest[:-1].rstrip()
            if _unterminated(text, start):  # the file ends inside this element
                yield counter.bad(_clean_raw(rest),
                                  f"truncated input: the file ends inside a JSON array element ({err})",
                                  TRUNCATED_INPUT)
            else:
                yield counter.bad(_clean_raw(rest), err)
            return len(text)
        if elem_end == start:  # a stray "}" where an element should start: consume it (always progress)
            elem_end = start + 1
        raw = text[start:elem_end].rstrip()
        yield counter.bad(_clean_raw(raw), err)
        pos = elem_end
    text = window.text
    if buffered is not None:
        values = [v for _, _, v in buffered]
        b_start, b_end = buffered[0][0], buffered[-1][1]
        buffered = None
        if unterminated:  # a conversation (bare list of messages) cut short: never trained as if whole
            yield counter.bad(_clean_raw(text[b_start:].rstrip()),
                              "truncated input: the file ends before the closing ] of this list of messages",
                              TRUNCATED_INPUT)
            return pos
        yield _checked(text, b_start, b_end, values, window.bad_bytes, counter, where)
    elif unterminated:
        yield counter.bad(_clean_raw(text[max(0, len(text) - 200):].strip()),
                          "truncated input: the file ends before the JSON array's closing ] (records after "
                          "the last complete element are missing)", TRUNCATED_INPUT)
    return pos


def _skip_element(text: str, pos: int) -> int | None:
    """End of the array element starting at ``pos``: the index of the ``,`` or ``]`` that ends it
    at nesting depth 0 (strings respected). ``None`` when the text ends first."""
    depth = 0
    for i, ch in _structure(text, pos):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            if depth == 0:
                return i  # the closing bracket of the enclosing array
            depth -= 1
        elif ch == "," and depth == 0:
            return i
    return None


def _concatenated(text: str, pos: int, had_bad_bytes: bool, counter: _Counter,
                  where: _Where = _position) -> Iterator[RawRecord]:
    """Values one after another (single object, pretty-printed objects, JSONL-like)."""
    n = len(text)
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= n:
            return
        value, end, err = _decode_value(text, pos, where)
        if err is None:
            yield _checked(text, pos, end, value, had_bad_bytes, counter, where)
            pos = end
            continue
        # Resync at the next line that starts with '{' or '[' and parses.
        bad_start = pos
        search_from = pos + 1
        while True:
            m = _LINE_VALUE_START.search(text, search_from)
            if m is None:
                if _unterminated(text, bad_start):  # a document cut short
                    yield counter.bad(_clean_raw(text[bad_start:].rstrip()),
                                      f"truncated input: the file ends inside this JSON value ({err})", TRUNCATED_INPUT)
                else:
                    yield counter.bad(_clean_raw(text[bad_start:].rstrip()), err)
                return
            cand = m.start(1)
            value, end, cand_err = _decode_value(text, cand, where)
            if cand_err is None:
                yield counter.bad(_clean_raw(text[bad_start:cand].rstrip()), err)
                pos = cand
                break
            search_from = cand + 1
