"""Spilling record batches to the :data:`~pipeline.io.chunks.SPILL` chunk store, so that only small
references cross a shuffle.

The reader writes its batches to chunk files under ``<out>/.tmp/spill/`` (:mod:`pipeline.io.chunks`: why,
and the contracts every store keeps) and emits one unkeyed :class:`~pipeline.io.chunks.Chunk` per batch
(``count``: its records); the chunks are reshuffled (a few dozen bytes each), and whichever worker
receives one reads that one batch back (:func:`read_spilled`). Peak memory is then one chunk file per
reader and one batch per consumer, whatever the input size. On Dataflow the same holds (the chunk
references are what the shuffle service carries).

A chunk holds one pickled batch. A batch of ``RawRecord`` s from one source is pickled compactly as
``(PACKED, source, [(index, value, raw, error, reason), ...])`` (pickling the dataclass instances costs
about 6 times as much); anything else is pickled as it is. :func:`read_spilled` returns the batch either way.
"""
from __future__ import annotations

import pickle
from typing import Iterable, Iterator

from pipeline.io.chunks import SPILL, Chunk, ChunkWriter, read_chunk
from transforms.reading import RawRecord

# A chunk file is closed once it holds this many bytes (or its input file ends): few files on object
# stores, little memory in the reader (one batch is pickled at a time, the file is written as it goes).
CHUNK_BYTES = 32 * 1024 * 1024


def spill_batches(batches: Iterable[list], *, folder: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Write ``batches`` to chunk files under ``folder``; yield each file's chunks once it is closed.

    Chunks come in batch order; a file holds whole batches (a batch larger than ``chunk_bytes`` gets a
    file of its own).
    """
    writer = None
    for batch in batches:
        if writer is None:
            writer = ChunkWriter(folder, store=SPILL)
        writer.add(_pickled(batch), count=len(batch))
        if writer.size >= chunk_bytes:
            yield from writer.close()
            writer = None
    if writer is not None:
        yield from writer.close()


def _pickled(batch: list) -> bytes:
    """The batch pickled; a record too deeply nested to pickle (``RecursionError``) is replaced by an
    unparseable record saying so (reason ``invalid_json``), so that it is rejected, not fatal. (The
    JSON reader already rejects records nested beyond ``transforms.reading.MAX_NESTING``; this
    guards every other source of records.)"""
    try:
        return pickle.dumps(_packed(batch), protocol=pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        pass
    safe = []
    for raw in batch:
        try:
            pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)
            safe.append(raw)
        except RecursionError:
            safe.append(RawRecord(raw.source, raw.index, None, raw="",
                                  error="invalid JSON: nested too deep to process (recursion limit)"))
    return pickle.dumps(safe, protocol=pickle.HIGHEST_PROTOCOL)


def read_spilled(chunk: Chunk) -> list:
    """The batch (``list[RawRecord]``) that ``chunk`` holds."""
    return _unpacked(pickle.loads(read_chunk(chunk)))


PACKED = "chatshards-raw-records-v2"  # (index, value, raw, error, reason) per record


def _packed(batch):
    """A list of ``RawRecord`` s of one source as plain tuples; anything else unchanged."""
    if not isinstance(batch, list) or not batch:
        return batch
    source = batch[0].source if type(batch[0]) is RawRecord else None
    if source is None or any(type(r) is not RawRecord or r.source != source for r in batch):
        return batch
    return (PACKED, source, [(r.index, r.value, r.raw, r.error, r.reason) for r in batch])


def _unpacked(value):
    if type(value) is tuple and len(value) == 3 and value[0] == PACKED:
        source = value[1]
        return [RawRecord(source, index, item, raw, error, reason) for index, item, raw, error, reason in value[2]]
    return value
