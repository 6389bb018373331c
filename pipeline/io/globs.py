"""Matching file patterns (``--input`` globs, folder listings) the way Beam's ``FileSystems.match`` does,
without importing Beam for local patterns.

Pattern grammar (Beam's): ``*`` is any run of characters other than ``/`` and ``\\``; ``**`` is any run
of characters (``/`` included); ``?`` is any one character; ``[abc]``, ``[a-z]``, ``[!abc]`` are
character classes (an unclosed ``[`` is a literal ``[``); every other character stands for itself (no
quoting). A pattern is matched against whole paths, spelled as the listing spells them.

Local patterns (no ``scheme://`` prefix, :func:`pipeline.io.files.is_local`) are matched here, with the
results ``FileSystems.match`` gives for them (same paths, same spelling, same order, same sizes):

* a pattern ending in ``/`` (or ``\\``) gets a ``*``;
* a pattern without ``*``, ``?`` or ``[`` names one path: that path if it exists (a folder too);
* otherwise the folder that holds the part before the first glob character (``os.path.dirname`` of it;
  ``""`` for a bare relative ``*.jsonl``, which therefore matches nothing, as in Beam) is walked
  recursively (``os.walk``: symbolic links to folders are not followed, unreadable folders are
  skipped, files that vanish or whose size cannot be read are left out) and each file path
  ``os.path.join(folder, name)`` is kept when the pattern's regular expression matches it.

Remote patterns go through Beam's ``FileSystems.match``, imported only then. Failures raise
:class:`StorageError` (local; :mod:`pipeline.io.files` raises it too) or Beam's ``BeamIOError`` (remote),
both carrying ``exception_details`` (``{pattern: cause}``); no match is an empty list, not an error.
This module imports nothing of the project but :func:`transforms.tokenizer_loading.is_remote_path`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from transforms.tokenizer_loading import is_remote_path

_LITERAL_HEAD = re.compile(r"[^\[*?]*")  # the part of a pattern before its first glob character
_NAME_CHARS = r"[^/\\]*"  # what one "*" stands for


class StorageError(OSError):
    """A storage operation on local paths failed: the local counterpart of Beam's ``BeamIOError`` (raised
    where ``LocalFileSystem`` raises that), with the same ``exception_details`` (``{path: cause}``)."""

    def __init__(self, message: str, exception_details: dict | None = None):
        self.exception_details = dict(exception_details or {})
        super().__init__(f"{message} with exceptions {self.exception_details}" if exception_details else message)


@dataclass(frozen=True)
class FileInfo:
    """A matched file: its path (as the listing spells it) and its size in bytes."""

    path: str
    size: int


def glob_regex(pattern: str) -> str:
    """The regular expression (for ``re.match``) of a glob ``pattern``: the same expression as Beam's
    ``FileSystem.translate_pattern``, so a path matches here exactly when it matches in Beam."""
    parts: list[str] = []
    literal_from = 0
    i, n = 0, len(pattern)

    def flush(upto: int) -> None:
        if upto > literal_from:
            parts.append(re.escape(pattern[literal_from:upto]))

    while i < n:
        char = pattern[i]
        if char == "*":
            flush(i)
            double = pattern.startswith("**", i)
            parts.append(".*" if double else _NAME_CHARS)
            i += 2 if double else 1
            literal_from = i
        elif char == "?":
            flush(i)
            parts.append(".")
            i += 1
            literal_from = i
        elif char == "[" and (end := _class_end(pattern, i + 1)) is not None:
            flush(i)
            parts.append(_class_regex(pattern[i + 1:end]))
            i = end + 1
            literal_from = i
        else:
            i += 1  # a literal character (an unclosed "[" included)
    flush(n)
    return "(?ms)" + "".join(parts) + r"\Z"


def _class_end(pattern: str, start: int) -> int | None:
    """Index of the ``]`` closing a character class whose body starts at ``start``; ``None`` when
    unclosed. A ``]`` right after ``[`` or ``[!`` belongs to the body."""
    j = start
    if pattern.startswith("!", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    end = pattern.find("]", j)
    return None if end < 0 else end


def _class_regex(body: str) -> str:
    body = body.replace("\\", "\\\\")
    if body.startswith("!"):
        body = "^" + body[1:]
    elif body.startswith("^"):
        body = "\\" + body
    return f"[{body}]"


def has_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a glob character (``*``, ``?``, ``[``)."""
    return _LITERAL_HEAD.match(pattern).group(0) != pattern


def match(pattern: str) -> list[FileInfo]:
    """The files ``pattern`` matches (local: here, as described in the module doc; remote: Beam)."""
    return match_patterns([pattern])[0]


def match_patterns(patterns: Sequence[str]) -> list[list[FileInfo]]:
    """:func:`match` for each pattern, in order. The remote ones are matched by one
    ``FileSystems.match`` call (Beam picks the filesystem of the first of them for all)."""
    results: list[list[FileInfo] | None] = [None] * len(patterns)
    remote = []
    for index, pattern in enumerate(patterns):
        if not is_remote_path(pattern):  # pipeline.io.files.is_local
            results[index] = match_local(pattern)
        else:
            remote.append(index)
    if remote:
        from apache_beam.io.filesystems import FileSystems

        found = FileSystems.match([patterns[index] for index in remote])
        for index, result in zip(remote, found):
            results[index] = [FileInfo(m.path, int(m.size_in_bytes or 0)) for m in result.metadata_list]
    return results  # type: ignore[return-value]


def match_local(pattern: str) -> list[FileInfo]:
    """The files a local ``pattern`` matches (see the module doc). Raises :class:`StorageError`
    (``{pattern: cause}``) when the pattern is not a valid expression or the listing fails."""
    try:
        return _match_local(pattern + "*" if pattern.endswith(("/", "\\")) else pattern)
    except Exception as exc:
        raise StorageError("Match operation failed", {pattern: exc}) from exc


def _match_local(pattern: str) -> list[FileInfo]:
    head = _LITERAL_HEAD.match(pattern).group(0)
    regex = re.compile(glob_regex(pattern))
    if head == pattern:  # no glob character: the path itself
        candidates: Iterator[FileInfo] | list[FileInfo] = (
            [FileInfo(pattern, os.path.getsize(pattern))] if os.path.exists(pattern) else [])
    else:
        candidates = walk_files(os.path.dirname(head))
    return [info for info in candidates if regex.match(info.path)]


def walk_files(folder: str) -> Iterator[FileInfo]:
    """Every file under ``folder``, recursively, in ``os.walk`` order, as ``os.path.join(dirpath, name)``
    with its size; nothing when ``folder`` does not exist (``""`` included). Raises
    :class:`StorageError` (``{folder: cause}``) when the walk itself fails."""
    if not os.path.exists(folder):
        return
    try:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    size = os.path.getsize(path)
                except OSError:  # vanished meanwhile, or a broken symbolic link
                    continue
                yield FileInfo(path, size)
    except Exception as exc:
        raise StorageError("List operation failed", {folder: exc}) from exc
