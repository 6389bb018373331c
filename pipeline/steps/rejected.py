"""The rejected output (``rejected/rejected-*.jsonl``; Beam-free: the job's DoFns in
:mod:`pipeline.engines.beam.rejected` and the local engine share it), written without moving the
rejections through a shuffle.

Like rows (:mod:`pipeline.steps.fragments`), rejections are buffered per bundle and written as chunk files of the
:data:`~pipeline.io.chunks.REJECTED` store (:mod:`pipeline.io.chunks`) under ``<out>/.tmp/rejected/``: JSON lines
sorted by the record's sort key, each prefixed with ``"<sort_key> <reason> "``, in keyed chunks of at most
``CHUNK_LINES`` lines. Only ``(file index, chunk)`` references are grouped
(:func:`pipeline.io.chunks.chunks_by_shard`); the writer of rejected file ``i`` merges its lines from those
chunks (a streaming k-way merge: it holds one line per chunk) into the file, hashing and counting reasons
as it goes.

Rejected file ``i`` of ``N`` holds the rejections whose sort key has ``shard_of(key, N) == i``
(``N`` = the shard count), sorted by that key; a file exists only when it has lines.
"""
from __future__ import annotations

import heapq
import json
from itertools import chain
from typing import Any, Iterable, Iterator, Mapping

from pipeline.io.chunks import REJECTED, Chunk, ChunkFile, ChunkWriter, read_chunk
from pipeline.io.files import atomic_writer, join, tmp_root
from transforms import shard_format as sf
from transforms.mixture import rejection_sort_key

FRAGMENT_BYTES = 16 * 1024 * 1024
CHUNK_LINES = 1000


def rejected_line(item: Mapping[str, Any]) -> str:
    """One line of the rejected output (without the newline); always UTF-8 encodable: a rejection
    holding characters UTF-8 cannot carry (lone surrogates) is written with ASCII escapes."""
    try:
        line = json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)
        line.encode("utf-8")
        return line
    except UnicodeEncodeError:
        return json.dumps(item, ensure_ascii=True, sort_keys=True, default=str)
    except (RecursionError, ValueError):
        return json.dumps(writable_rejection(item), ensure_ascii=True, sort_keys=True, default=str)


def _escaped_text(value: Any) -> str:
    """``value`` as text that any encoder carries: JSON with non-ASCII escaped, or an escaped repr."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        return json.dumps(value, ensure_ascii=True, sort_keys=True, default=str)
    except (RecursionError, ValueError):
        return repr(value)[:100_000].encode("ascii", "backslashreplace").decode("ascii")


def writable_rejection(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """``item`` itself when its line can be written as UTF-8 (and so crosses Beam's coders: they
    encode text as UTF-8); otherwise a copy whose ``record`` is its escaped JSON text (the raw
    characters stay visible as ``\\udXXX`` escapes) and whose other text fields are escaped alike.
    Never raises: no rejection can end the job."""
    try:
        json.dumps(item, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
        return item
    except (UnicodeEncodeError, RecursionError, ValueError, TypeError):
        pass
    fixed = {key: value if isinstance(value, (int, float, bool, type(None))) else _escaped_text(value)
             for key, value in item.items()}
    fixed["detail"] = (f"{fixed.get('detail', '')} (the record is shown as escaped JSON text: it holds "
                       "characters UTF-8 cannot encode, or nests too deep to write)")
    return fixed


def rejection_line_bytes(item: Mapping[str, Any]) -> int:
    """A rough size of a rejection's line (its record's text plus the fields): what rejected fragments are
    flushed by."""
    return len(str(item.get("record", ""))) + 256


def rejected_file_name(index: int, count: int) -> str:
    return f"{sf.REJECTED_DIR}/rejected-{index:05d}-of-{count:05d}.jsonl"


def sort_key_of(item: Mapping[str, Any]) -> str:
    """The rejection's record's sort key (a repeat of a mixture's record: its copy's key)."""
    return rejection_sort_key(item)


def write_rejected_fragment(items: list[Mapping[str, Any]], *, folder: str,
                            chunk_lines: int = CHUNK_LINES) -> ChunkFile:
    """Write rejections sorted by sort key as one chunk file under ``folder``."""
    keyed = sorted((sort_key_of(item), str(item["reason"]), rejected_line(item)) for item in items)
    with ChunkWriter(folder, store=REJECTED) as writer:
        for start in range(0, len(keyed), chunk_lines):
            part = keyed[start:start + chunk_lines]
            data = "".join(f"{key} {reason} {line}\n" for key, reason, line in part).encode("utf-8")
            writer.add(data, count=len(part), first=part[0][0], last=part[-1][0])
    return ChunkFile(writer.path, writer.close(), writer.size)


def _chunk_lines(chunk: Chunk, *, index: int, num_files: int) -> Iterator[tuple[str, str, str]]:
    """``(sort_key, reason, line)`` of the chunk's lines that belong to rejected file ``index``, in order."""
    for text in read_chunk(chunk).decode("utf-8").splitlines():
        key, reason, line = text.split(" ", 2)
        if sf.shard_of(key, num_files) == index:
            yield key, reason, line


def merged_lines(chunks: Iterable[Chunk], *, index: int, num_files: int) -> Iterator[tuple[str, str, str]]:
    """``(sort_key, reason, line)`` of rejected file ``index``, sorted by sort key, from its chunks."""
    return heapq.merge(*(_chunk_lines(chunk, index=index, num_files=num_files) for chunk in sorted(set(chunks))))


def write_rejected_file(chunks: Iterable[Chunk], *, output: str, index: int, num_files: int) -> dict | None:
    """Merge the lines of rejected file ``index`` of ``num_files`` from its chunks into
    ``rejected/rejected-<index>-of-<N>.jsonl`` under ``output``; return ``{"path", "rows", "bytes", "sha256",
    "by_reason"}``, or ``None`` (and no file) when no line belongs to it."""
    lines = merged_lines(chunks, index=index, num_files=num_files)
    first = next(lines, None)
    if first is None:
        return None
    relative = rejected_file_name(index, num_files)
    rows, by_reason = 0, {}
    with atomic_writer(join(output, *relative.split("/")), tmp_root=tmp_root(output)) as sink:
        for _, reason, line in chain([first], lines):
            sink.write((line + "\n").encode("utf-8"))
            rows += 1
            by_reason[reason] = by_reason.get(reason, 0) + 1
    return {"path": relative, "rows": rows, "bytes": sink.size, "sha256": sink.hexdigest(), "by_reason": by_reason}
