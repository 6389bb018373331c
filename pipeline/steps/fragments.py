"""Row fragments: how rows reach their shard without crossing a shuffle themselves (Beam-free; the job's
buffering DoFn is :class:`pipeline.engines.beam.fragments.WriteFragmentsFn`).

The build stage converts each batch of rows to Arrow at once and keeps them until about ``FRAGMENT_BYTES``
are buffered (or its bundle ends); it then writes one *fragment*: a chunk file of the
:data:`~pipeline.io.chunks.FRAGMENTS` store (:mod:`pipeline.io.chunks`) holding those rows sorted by
``sort_key``, in keyed chunks of at most ``BATCH_ROWS`` rows, each chunk one Arrow IPC stream of the
payload schema; it emits the :class:`~pipeline.io.chunks.ChunkFile` (its ``nbytes``: the rows' Arrow bytes).
Shards split the key range into contiguous ranges (:func:`transforms.shard_format.shard_of`), so once the
shard count is known (it can depend on the total bytes of every fragment), each shard's rows are a run of
consecutive chunks in every fragment: only ``(shard, chunk)`` references are grouped by shard
(:func:`pipeline.io.chunks.chunks_by_shard`), and the shard writer reads those chunks, keeps its rows
(:func:`read_shard_rows`), merges and writes the shard.

So peak memory is one fragment in a building worker and one shard in a writing worker, whatever the
dataset size, and no runner holds rows to move them. The bytes of a shard do not depend on how rows were
fragmented: its rows are exactly those with ``shard_of(sort_key, N) == shard``, sorted by the unique
``sort_key``.
"""
from __future__ import annotations

import io
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.chunks import FRAGMENTS, Chunk, ChunkFile, ChunkWriter, read_chunks
from transforms import shard_format as sf

# Buffered Arrow bytes at which a building worker writes a fragment: bounds its memory.
FRAGMENT_BYTES = 32 * 1024 * 1024
# Rows per chunk in a fragment: a shard writer reads whole chunks, so this bounds what it reads beyond
# its own rows (at most one chunk per fragment at each end of its key range).
BATCH_ROWS = 1024
SORT_KEY = "sort_key"


def payload_schema(schema: pa.Schema) -> pa.Schema:
    """The shard schema plus the ``sort_key`` column that orders rows (dropped when writing shards)."""
    return schema.append(pa.field(SORT_KEY, pa.string(), nullable=False))


def _stream_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))
    return sink.getvalue()


def write_fragment(table: pa.Table, *, folder: str, batch_rows: int = BATCH_ROWS) -> ChunkFile:
    """Write ``table`` (payload schema) sorted by ``sort_key`` as one fragment under ``folder``."""
    table = table.take(pc.sort_indices(table, sort_keys=[(SORT_KEY, "ascending")])).combine_chunks()
    keys = table[SORT_KEY]
    with ChunkWriter(folder, store=FRAGMENTS) as writer:
        for start in range(0, table.num_rows, batch_rows):
            part = table.slice(start, batch_rows)
            writer.add(_stream_bytes(part), count=part.num_rows,
                       first=keys[start].as_py(), last=keys[start + part.num_rows - 1].as_py())
    return ChunkFile(writer.path, writer.close(), table.nbytes)


def read_shard_rows(chunks: Iterable[Chunk], *, shard: int, num_shards: int) -> list[pa.Table]:
    """The rows of ``shard`` in the given fragment chunks (payload schema), one table per distinct chunk
    in (path, offset) order; each fragment file is opened once."""
    return [_shard_slice(pa.ipc.open_stream(pa.py_buffer(data)).read_all(), shard, num_shards)
            for _, data in read_chunks(chunks)]


def _shard_slice(table: pa.Table, shard: int, num_shards: int) -> pa.Table:
    """The run of ``table``'s rows (sorted by key) that belong to ``shard``."""
    keys = table[SORT_KEY].to_pylist()
    first = next((i for i, key in enumerate(keys) if sf.shard_of(key, num_shards) == shard), len(keys))
    end = first
    while end < len(keys) and sf.shard_of(keys[end], num_shards) == shard:
        end += 1
    return table.slice(first, end - first)
