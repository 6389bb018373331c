"""Row fragments: how rows reach their shard without crossing a shuffle themselves.

The tokenize stage converts each batch of rows to Arrow at once and keeps them until about
``FRAGMENT_BYTES`` are buffered (or its bundle ends); it then writes one *fragment*: an Arrow IPC
file under ``<out>/.tmp/fragments/`` holding those rows sorted by ``sort_key``, in record batches of
at most ``BATCH_ROWS`` rows, and emits one :class:`FragmentRef` (path, rows, bytes, and the first and
last key of each record batch). Shards split the key range into contiguous ranges
(:func:`transforms.shard_format.shard_of`), so once the shard count is known (it can depend on the
total bytes of every fragment), each shard's rows are a run of consecutive record batches in every
fragment: only ``(shard, (path, batch))`` pairs are grouped by shard, and the shard writer reads those
batches, keeps its rows, merges and writes the shard.

So peak memory is one fragment in a tokenizing worker and one shard in a writing worker, whatever
the dataset size, and no runner holds rows to move them (a local FnApiRunner keeps everything that
crosses a GroupByKey in its own process). The bytes of a shard do not depend on how rows were
fragmented: its rows are exactly those with ``shard_of(sort_key, N) == shard``, sorted by the unique
``sort_key``.

Retries: a failed bundle's fragments were written under fresh uuid names and its refs are discarded
by the runner, so they are never read; ``<out>/.tmp`` is deleted once the manifest is committed.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import shard_format as sf

FRAGMENT_DIR = "fragments"
# Buffered Arrow bytes at which a tokenizing worker writes a fragment: bounds its memory.
FRAGMENT_BYTES = 32 * 1024 * 1024
# Rows per record batch in a fragment: a shard writer reads whole batches, so this bounds what it
# reads beyond its own rows (at most one batch per fragment at each end of its key range).
BATCH_ROWS = 1024
SORT_KEY = "sort_key"


def payload_schema(schema: pa.Schema) -> pa.Schema:
    """The shard schema plus the ``sort_key`` column that orders rows (dropped when writing shards)."""
    return schema.append(pa.field(SORT_KEY, pa.string(), nullable=False))


@dataclass(frozen=True)
class FragmentRef:
    """A fragment file: ``rows`` rows sorted by ``sort_key``, ``nbytes`` Arrow bytes, and per record
    batch the ``(first, last)`` sort key."""

    path: str
    rows: int
    nbytes: int
    bounds: tuple[tuple[str, str], ...]

    def shard_batches(self, num_shards: int) -> Iterator[tuple[int, tuple[str, int]]]:
        """``(shard, (path, batch))`` for every shard that has rows in each record batch."""
        for batch, (first, last) in enumerate(self.bounds):
            for shard in range(sf.shard_of(first, num_shards), sf.shard_of(last, num_shards) + 1):
                yield shard, (self.path, batch)


class DigestingSink:
    """A write-only file object that forwards to ``handle`` while counting bytes (``tell()``, which
    Arrow's writers need) and hashing them (``digest``, sha256)."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def write_fragment(table: pa.Table, *, folder: str, batch_rows: int = BATCH_ROWS) -> FragmentRef:
    """Write ``table`` (payload schema) sorted by ``sort_key`` as one fragment file under ``folder``."""
    table = table.take(pc.sort_indices(table, sort_keys=[(SORT_KEY, "ascending")])).combine_chunks()
    path = FileSystems.join(folder, f"fragment-{uuid.uuid4().hex}.arrow")
    keys = table[SORT_KEY]
    bounds = []
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        with pa.ipc.new_file(DigestingSink(handle), table.schema) as writer:
            for start in range(0, table.num_rows, batch_rows):
                part = table.slice(start, batch_rows)
                writer.write_batch(part.to_batches()[0])  # one chunk: the table was combined
                bounds.append((keys[start].as_py(), keys[start + part.num_rows - 1].as_py()))
    return FragmentRef(path, table.num_rows, table.nbytes, tuple(bounds))


def read_shard_batches(path: str, batches, *, shard: int, num_shards: int) -> list[pa.Table]:
    """The rows of ``shard`` in the given record batches of the fragment ``path`` (payload schema),
    one table per batch; the file (and its footer) is opened once."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        reader = pa.ipc.open_file(handle)
        return [_shard_slice(pa.Table.from_batches([reader.get_batch(batch)]), shard, num_shards)
                for batch in batches]


def read_shard_rows(path: str, batch: int, *, shard: int, num_shards: int) -> pa.Table:
    """The rows of ``shard`` in record batch ``batch`` of the fragment ``path`` (payload schema)."""
    return read_shard_batches(path, [batch], shard=shard, num_shards=num_shards)[0]


def _shard_slice(table: pa.Table, shard: int, num_shards: int) -> pa.Table:
    """The run of ``table``'s rows (sorted by key) that belong to ``shard``."""
    keys = table[SORT_KEY].to_pylist()
    first = next((i for i, key in enumerate(keys) if sf.shard_of(key, num_shards) == shard), len(keys))
    end = first
    while end < len(keys) and sf.shard_of(keys[end], num_shards) == shard:
        end += 1
    return table.slice(first, end - first)


class BundleBufferFn(beam.DoFn):
    """Buffers a bundle's elements and writes them in groups of about ``flush_bytes`` (and the rest at
    the bundle's end), emitting what ``write`` returns for each group (a file reference).

    Subclasses give ``prepare(element) -> (item, size in bytes)`` and ``write(items) -> reference``.
    """

    flush_bytes: int

    def start_bundle(self):
        self._items: list = []
        self._bytes = 0

    def process(self, element):
        item, size = self.prepare(element)
        self._items.append(item)
        self._bytes += size
        if self._bytes >= self.flush_bytes:
            yield self._flush()

    def finish_bundle(self):
        if self._items:  # outputs of finish_bundle need an explicit window
            yield WindowedValue(self._flush(), MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self):
        items, self._items, self._bytes = self._items, [], 0
        return self.write(items)

    def prepare(self, element):
        raise NotImplementedError

    def write(self, items):
        raise NotImplementedError


class WriteFragmentsFn(BundleBufferFn):
    """``list[row] -> FragmentRef``: rows converted to Arrow per batch, buffered until
    ``fragment_bytes`` (or the bundle's end), then written as one fragment under ``folder``."""

    def __init__(self, *, folder: str, schema: pa.Schema, fragment_bytes: int = FRAGMENT_BYTES):
        self.folder = folder
        self.schema = payload_schema(schema)
        self.flush_bytes = fragment_bytes

    def prepare(self, rows):
        table = sf.table_from_rows(rows, self.schema)
        return table, table.nbytes

    def write(self, tables) -> FragmentRef:
        return write_fragment(pa.concat_tables(tables), folder=self.folder)
