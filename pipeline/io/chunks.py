"""The keyed-chunk store: how data moves between workers without crossing a shuffle itself.

A local runner (FnApiRunner) holds every PCollection that crosses a GroupByKey/Reshuffle in the runner
process's memory, so the job never shuffles records, rows or rejections. A producing worker writes them
to a *chunk file* under ``<out>/.tmp/<store>/`` (one folder per store: :data:`SPILL`, :data:`FRAGMENTS`,
:data:`REJECTED`) and emits small :class:`Chunk` references (a path, a byte range, an item count and, for
keyed stores, the first and last sort key); only references cross shuffles, and whichever worker receives
one reads that byte range back (:func:`read_chunks`). The three users differ only in what a chunk's bytes
are: a pickled record batch (:mod:`pipeline.io.spill`), an Arrow IPC stream of rows sorted by sort key
(:mod:`pipeline.engines.beam.fragments`), sorted rejected lines (:mod:`pipeline.engines.beam.rejected`).

Contracts:

* a chunk file is the concatenation of its chunks; it is complete (closed) before any of its chunks is
  emitted and never modified afterwards;
* in a keyed chunk the items are sorted by sort key and ``first``/``last`` are the smallest and largest;
  since shards split the key range into contiguous runs (:func:`transforms.shard_format.shard_of`),
  :func:`chunks_by_shard` names every shard a chunk has items of, and only those;
* a retried writer writes new files under new names (uuid); the chunks of the failed attempt are
  discarded by the runner, so an orphaned file is never read; ``<out>/.tmp`` is deleted after the
  manifest is committed.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from itertools import groupby
from typing import Iterable, Iterator

from pipeline.io.files import TMP_DIR, create, join, open_binary, read_range
from transforms import shard_format as sf

# The stores, one folder each under <out>/.tmp/
SPILL = "spill"
FRAGMENTS = "fragments"
REJECTED = "rejected"
STORES = (SPILL, FRAGMENTS, REJECTED)
CHUNK_SUFFIX = ".chunks"


def store_folder(output: str, store: str) -> str:
    """``<output>/.tmp/<store>``: where the chunk files of ``store`` go."""
    if store not in STORES:
        raise ValueError(f"unknown chunk store {store!r} (one of {STORES})")
    return join(output, TMP_DIR, store)


@dataclass(frozen=True, order=True)
class Chunk:
    """``length`` bytes at ``offset`` in the chunk file ``path``, holding ``count`` items; in keyed stores
    ``first`` and ``last`` are their smallest and largest sort key (``""`` in unkeyed ones)."""

    path: str
    offset: int
    length: int
    count: int
    first: str = ""
    last: str = ""


@dataclass(frozen=True)
class ChunkFile:
    """The chunks of one closed chunk file, and ``nbytes``: the size of its items as their producer
    measures it (fragments: Arrow bytes, which size the shards)."""

    path: str
    chunks: tuple[Chunk, ...]
    nbytes: int

    @property
    def count(self) -> int:
        return sum(chunk.count for chunk in self.chunks)


class ChunkWriter:
    """Appends chunks to one new chunk file under ``folder`` (named ``<store>-<uuid>.chunks``).

    Use as a context manager or call :meth:`close`; ``chunks`` are usable once the file is closed.
    """

    def __init__(self, folder: str, *, store: str):
        self.path = join(folder, f"{store}-{uuid.uuid4().hex}{CHUNK_SUFFIX}")
        self._handle = create(self.path)
        self.size = 0
        self.chunks: list[Chunk] = []

    def add(self, data: bytes, *, count: int, first: str = "", last: str = "") -> Chunk:
        self._handle.write(data)
        chunk = Chunk(self.path, self.size, len(data), count, first, last)
        self.chunks.append(chunk)
        self.size += len(data)
        return chunk

    def close(self) -> tuple[Chunk, ...]:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return tuple(self.chunks)

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_chunk(chunk: Chunk) -> bytes:
    """The bytes of one chunk (``IOError`` when its file is shorter than the chunk says)."""
    with open_binary(chunk.path) as handle:
        return read_range(handle, chunk.path, chunk.offset, chunk.length)


def read_chunks(chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, bytes]]:
    """``(chunk, bytes)`` for each distinct chunk, in (path, offset) order; each file is opened once."""
    for path, same_file in groupby(sorted(set(chunks)), key=lambda chunk: chunk.path):
        with open_binary(path) as handle:
            for chunk in same_file:
                yield chunk, read_range(handle, path, chunk.offset, chunk.length)


def chunks_by_shard(chunks: Iterable[Chunk], num_shards: int) -> Iterator[tuple[int, Chunk]]:
    """``(shard, chunk)`` for every shard of ``num_shards`` that a keyed chunk has items of (the shards of
    its key range ``first..last``)."""
    for chunk in chunks:
        for shard in range(sf.shard_of(chunk.first, num_shards), sf.shard_of(chunk.last, num_shards) + 1):
            yield shard, chunk
