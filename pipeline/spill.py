"""Spilling record batches to temporary files, so that only small references cross a shuffle.

Why: a local runner (FnApiRunner) holds every PCollection that crosses a GroupByKey/Reshuffle in the
runner process's memory, so reshuffling the records themselves makes the job's memory grow with the
input. Here the reader writes its batches to chunk files under ``<out>/.tmp/spill/`` and emits one
:class:`SpillRef` per batch (a file, an offset, a length); the refs are reshuffled (a few dozen bytes
each), and whichever worker receives a ref reads that one batch back. Peak memory is then one chunk
per reader and one batch per consumer, whatever the input size. On Dataflow the same holds (the refs
are what the shuffle service carries).

Contracts:
* a chunk file is the concatenation of pickled batches; it is complete before any of its refs is
  emitted, and never modified afterwards. A batch of ``RawRecord`` s from one source is pickled
  compactly as ``(PACKED, source, [(index, value, raw, error), ...])`` (pickling the dataclass
  instances costs about 6 times as much); anything else is pickled as it is.
  :func:`read_spilled` returns the batch either way;
* a retried reader writes new chunk files under new names (uuid); the refs of the failed attempt are
  discarded by the runner, so an orphaned chunk is never read; ``<out>/.tmp`` is deleted after the
  manifest is committed.
"""
from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

SPILL_DIR = "spill"
# A chunk file is closed once it holds this many bytes (or its input file ends): few files on object
# stores, little memory in the reader (one batch is pickled at a time, the file is written as it goes).
CHUNK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class SpillRef:
    """One spilled batch: ``length`` bytes at ``offset`` in ``path`` unpickle to ``records`` RawRecords."""

    path: str
    offset: int
    length: int
    records: int


def spill_batches(batches: Iterable[list], *, folder: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[SpillRef]:
    """Write ``batches`` to chunk files under ``folder``; yield each chunk's refs once the chunk is closed.

    Refs come in batch order; a chunk holds whole batches (a batch larger than ``chunk_bytes`` gets a
    chunk of its own).
    """
    handle = path = None
    pending: list[SpillRef] = []
    offset = 0
    for batch in batches:
        if handle is None:
            path = FileSystems.join(folder, f"chunk-{uuid.uuid4().hex}.pkl")
            handle = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
            offset = 0
        data = _pickled(batch)
        handle.write(data)
        pending.append(SpillRef(path, offset, len(data), len(batch)))
        offset += len(data)
        if offset >= chunk_bytes:
            handle.close()
            handle = None
            yield from pending
            pending = []
    if handle is not None:
        handle.close()
        yield from pending


def _pickled(batch: list) -> bytes:
    """The batch pickled; a record too deeply nested to pickle (``RecursionError``) is replaced by an
    unparseable record saying so (reason ``invalid_json``), so that it is rejected, not fatal. (The
    JSON reader already rejects records nested beyond ``transforms.reading.MAX_NESTING``; this
    guards every other source of records.)"""
    try:
        return pickle.dumps(_packed(batch), protocol=pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        pass
    from transforms.reading import RawRecord

    safe = []
    for raw in batch:
        try:
            pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)
            safe.append(raw)
        except RecursionError:
            safe.append(RawRecord(raw.source, raw.index, None, raw="",
                                  error="invalid JSON: nested too deep to process (recursion limit)"))
    return pickle.dumps(safe, protocol=pickle.HIGHEST_PROTOCOL)


def read_spilled(ref: SpillRef) -> list:
    """The batch (``list[RawRecord]``) that ``ref`` points to."""
    with FileSystems.open(ref.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.seek(ref.offset)
        data = handle.read(ref.length)
    if len(data) != ref.length:
        raise IOError(f"spill chunk {ref.path} is truncated: wanted {ref.length} bytes at {ref.offset}, got {len(data)}")
    return _unpacked(pickle.loads(data))


PACKED = "chatshards-raw-records-v2"  # (index, value, raw, error, reason) per record


def _packed(batch):
    """A list of ``RawRecord`` s of one source as plain tuples; anything else unchanged."""
    from transforms.reading import RawRecord

    if not isinstance(batch, list) or not batch:
        return batch
    source = batch[0].source if type(batch[0]) is RawRecord else None
    if source is None or any(type(r) is not RawRecord or r.source != source for r in batch):
        return batch
    return (PACKED, source, [(r.index, r.value, r.raw, r.error, r.reason) for r in batch])


def _unpacked(value):
    if type(value) is tuple and len(value) == 3 and value[0] == PACKED:
        from transforms.reading import RawRecord

        source = value[1]
        return [RawRecord(source, index, item, raw, error, reason) for index, item, raw, error, reason in value[2]]
    return value
