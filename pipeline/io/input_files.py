"""Opening input files so that every byte is accounted for (``.gz`` and friends included).

Beam's own decompression (``CompressionTypes.AUTO``) stops silently when a compressed stream is cut
short: a ``.jsonl.gz`` missing its tail reads as a shorter file. Here compressed inputs are
decompressed with the standard decoders (gzip, bzip2, xz/lzma, raw deflate, zstd), which know where
a stream must end: :class:`CheckedDecompression` raises :class:`TruncatedInput` when the file ends
inside a stream and :class:`CorruptInput` when the bytes are not a valid stream. Multi-member files
(``cat a.gz b.gz``) are read member after member, as ``gzip`` does.

The job's reader (:func:`pipeline.engines.beam.sources.read_file`) turns those errors into one more rejected
record of the file (reasons ``truncated_input`` / ``unreadable_input``) after the records read before
the fault, so a bad file never ends the job and is never a silent short read. At launch,
:func:`launch_problem` checks local inputs (a directory, an unreadable file, a ``.gz`` that is not
gzip) so that those are configuration errors (exit status 2) before any work starts.

Compression is chosen by file name, as Beam does (``.gz``, ``.bz2``, ``.xz``/``.lzma``, ``.deflate``,
``.zst``/``.zstd``, any letter case); other files are read as they are.

Listing the inputs: :func:`expand_input_sizes` (``{path: size}`` of what the ``--input`` patterns
match, :mod:`pipeline.io.globs`: Beam's matching, without Beam for local patterns).

Nothing here imports Beam for local paths.
"""
from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import zlib
from typing import Callable, Sequence

from pipeline.io.files import is_local, open_binary
from pipeline.io.globs import match_patterns

READ_CHUNK = 1 << 20
# Compressed bytes fed to a decoder at once: bounds what one call can expand to (deflate: ~1000x).
COMPRESSED_CHUNK = 64 * 1024


class TruncatedInput(EOFError):
    """The file ends inside a compressed stream (its end marker never came)."""


class CorruptInput(OSError):
    """The bytes are not a valid compressed stream of the kind the file name says."""


def _zstd_decompressor():
    import zstandard

    return zstandard.ZstdDecompressor(max_window_size=2 ** 31).decompressobj()


# Compression kinds, named as Beam's ``CompressionTypes`` names them.
GZIP, BZIP2, LZMA, DEFLATE, ZSTD = "gzip", "bzip2", "lzma", "deflate", "zstd"
_DECOMPRESSORS: dict[str, tuple[str, Callable]] = {
    GZIP: ("gzip", lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)),
    BZIP2: ("bzip2", bz2.BZ2Decompressor),
    LZMA: ("xz/lzma", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_AUTO)),
    DEFLATE: ("deflate", zlib.decompressobj),
    ZSTD: ("zstd", _zstd_decompressor),
}
# File name endings (lower case) -> compression: Beam's ``CompressionTypes.detect_compression_type``.
_BY_SUFFIX = {".bz2": BZIP2, ".deflate": DEFLATE, ".gz": GZIP, ".zst": ZSTD, ".zstd": ZSTD, ".xz": LZMA,
              ".lzma": LZMA}
_DECODE_ERRORS = (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError)


def compression_of(path: str) -> str | None:
    """The compression a file name implies (Beam's rule: the name's ending, any letter case), or ``None``
    for an uncompressed file."""
    name = path.lower()
    return next((kind for suffix, kind in _BY_SUFFIX.items() if name.endswith(suffix)), None)


class CheckedDecompression(io.RawIOBase):
    """A read-only raw stream of the decompressed bytes of ``raw`` (a binary file object).

    Raises :class:`TruncatedInput` when ``raw`` ends inside a stream, :class:`CorruptInput` when its
    bytes do not decode (including trailing garbage after a complete stream).
    """

    def __init__(self, raw, compression: str, *, name: str = ""):
        super().__init__()
        self._raw = raw
        self._label, self._make = _DECOMPRESSORS[compression]
        self._name = name
        self._decompressor = self._make()
        self._started = False  # the current stream has consumed input
        self._pending = b""  # input not yet fed
        self._out = b""
        self._at = 0  # read position in _out
        self._consumed = 0  # compressed bytes read so far (for messages)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at >= len(self._out):
            if not self._fill():
                return 0
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def _fill(self) -> bool:
        """Decompress more; ``False`` at the clean end of the input."""
        if not self._pending:
            self._pending = self._raw.read(COMPRESSED_CHUNK) or b""
            self._consumed += len(self._pending)
            if not self._pending:
                if self._started and not self._decompressor.eof:
                    raise TruncatedInput(
                        f"{self._name}: the {self._label} stream ends before its end marker after "
                        f"{self._consumed} compressed bytes (the file is truncated)")
                return False
        data, self._pending = self._pending, b""
        if self._decompressor.eof:  # a new member / frame follows a complete one
            self._decompressor = self._make()
            self._started = False
        try:
            self._out, self._at = self._decompressor.decompress(data), 0
        except _DECODE_ERRORS as exc:
            raise CorruptInput(f"{self._name}: not a valid {self._label} stream near compressed byte "
                               f"{self._consumed}: {exc}") from exc
        self._started = True
        if self._decompressor.eof:
            self._pending = self._decompressor.unused_data
        return True

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_input(path: str):
    """A buffered binary stream of ``path``'s content, decompressed and checked (see module doc)."""
    raw = open_binary(path)
    compression = compression_of(path)
    if compression is None:
        return raw
    return io.BufferedReader(CheckedDecompression(raw, compression, name=path), READ_CHUNK)


def disk_position(stream) -> int | None:
    """How many bytes of the file on disk a stream of :func:`open_input` has consumed (compressed bytes for a
    compressed file), or ``None`` when it cannot tell (for progress reports only)."""
    try:
        inner = getattr(stream, "raw", None)
        if isinstance(inner, CheckedDecompression):
            return inner._raw.tell()
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def not_regular_reason(path: str) -> str | None:
    """Why a local ``path`` cannot be read as a file (a directory, a FIFO, a socket, a device), or
    ``None``. Never opens it (opening a FIFO blocks until a writer comes)."""
    if not is_local(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"is {kind}, not a regular file (never read: it could block forever)"


def launch_problem(path: str) -> str | None:
    """A configuration error for a local input file, found before any work: a directory, a file that
    cannot be opened, a compressed file whose first bytes do not decode. ``None`` when it looks
    readable (or is not local: object-store inputs are checked when read). Non-regular files other
    than directories are not an error here: the job rejects them (:func:`not_regular_reason`)."""
    if not is_local(path):
        return None
    reason = not_regular_reason(path)
    if reason == "is a directory":
        return f"--input {path!r} is a directory; give a glob for its files, e.g. '{path.rstrip('/')}/*.jsonl'"
    if reason is not None and reason.startswith("cannot stat"):
        return f"--input {path!r}: {reason}"
    if reason is not None:
        return None
    try:
        with open_input(path) as stream:
            stream.read(64)
    except TruncatedInput:
        return None  # readable up to the cut: the job reads what is there and rejects the rest
    except CorruptInput as exc:
        return f"--input {path!r} cannot be read: {exc}"
    except OSError as exc:
        return f"--input {path!r} cannot be read: {exc.strerror or exc}"
    return None


def storage_error_text(exc: Exception, limit: int = 300) -> str:
    """One line saying why a Beam filesystem call failed (``BeamIOError`` carries one exception per path)."""
    details = getattr(exc, "exception_details", None)
    if isinstance(details, dict) and details:
        path, cause = next(iter(details.items()))
        text = f"{path}: {type(cause).__name__}: {cause}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# listing the inputs at launch

def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Match every pattern now (launch time) and return the sorted, de-duplicated file list.

    Raises:
        FileNotFoundError: a pattern matches no file (the message names the pattern).
    """
    return sorted(expand_input_sizes(patterns))


def expand_input_sizes(patterns: Sequence[str]) -> dict[str, int]:
    """:func:`expand_inputs` with each file's size in bytes (``{path: size}``, in listing order).

    Every pattern is matched before any is found empty, so a listing failure
    (:func:`pipeline.io.files.storage_errors`) wins over "matches no file", as with one ``FileSystems.match``
    call."""
    patterns = list(patterns)
    files: dict[str, int] = {}
    for pattern, found in zip(patterns, match_patterns(patterns)):
        if not found:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        files.update((info.path, info.size) for info in found)
    return files
