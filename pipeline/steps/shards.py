"""Writing shards deterministically (Beam-free: the job's DoFn :class:`pipeline.engines.beam.sink.WriteShardFn` and the
local engine both call :func:`write_shard`; the manifest: :mod:`pipeline.steps.manifest`; rejected records:
:mod:`pipeline.steps.rejected`).

Beam's file sinks place rows in shards at random, so shards are written here:

1. every row carries a ``sort_key`` (a hash of its provenance); its shard is ``shard_of(sort_key, N)``;
2. rows reach their shard through fragment files (:mod:`pipeline.steps.fragments`), are sorted by
   ``sort_key``, serialised as an Arrow IPC stream, written to a temporary name under ``<out>/.tmp/``
   and renamed into ``<out>/data/`` (a retried bundle rewrites identical bytes under the same final
   name);
3. the manifest is written last (:mod:`pipeline.steps.manifest`): it is the commit point.

With ``--pack-length`` the shard's rows are packed (:func:`transforms.packing.rows.pack_table`) here, after
step 2 fixed the shard's membership (``shard_of(sort_key)``) and order (sorted ``sort_key``): the packed
rows are a pure function of the shard's rows, so they do not depend on the engine, the worker count, the
batch size or the order in which rows were built.

All file access goes through :mod:`pipeline.io.files` (local paths and ``gs://`` alike).
"""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.chunks import Chunk
from pipeline.io.files import atomic_writer, join, tmp_root
from pipeline.steps.fragments import SORT_KEY, payload_schema, read_shard_rows
from transforms import shard_format as sf
from transforms.mixture import DATASET_COLUMN
from transforms.packing.rows import ShardPacking

# A worker holds one shard's rows (sorted) plus its Arrow table while writing it, so the shard size
# bounds worker memory: 64 MiB shards keep that to a few hundred MiB whatever the dataset size
# (benchmarks/bench_memory.py), and are a common size for streamed training shards.
TARGET_SHARD_BYTES = 64 * 1024 * 1024
MAX_AUTO_SHARDS = 4096


def auto_num_shards(total_bytes: int) -> int:
    """Shards of about ``TARGET_SHARD_BYTES`` (at least 1, at most ``MAX_AUTO_SHARDS``)."""
    return max(1, min(MAX_AUTO_SHARDS, math.ceil(total_bytes / TARGET_SHARD_BYTES)))


def write_table_atomically(path: str, table, *, tmp_root: str) -> tuple[int, str]:
    """Stream ``table`` as the Arrow IPC stream :func:`transforms.shard_format.ipc_stream_bytes` would
    return (same bytes) to a temporary file, rename it to ``path``; return ``(bytes, sha256)``.

    The serialised shard is never held in memory (a shard's rows and table already are).
    """
    with atomic_writer(path, tmp_root=tmp_root) as sink:
        sf.write_ipc_stream(sink, table)  # an empty shard too holds one (empty) record batch
    return sink.size, sink.hexdigest()


def shard_entry(index: int, num_shards: int, rows: int, tokens: int, loss_tokens: int, data: bytes | None = None,
                *, size: int | None = None, sha256: str | None = None, records: int | None = None,
                sequences: int | None = None) -> dict:
    """The manifest entry of a shard, from its bytes or from their ``size`` and ``sha256``.

    ``records``: how many input records its rows come from (a record split into one row per supervised
    turn counts once; the rows of a record are always in one shard). ``sequences``: packed shards only,
    the rows (sequences) its packed rows hold."""
    entry = {
        "path": sf.shard_relative_path(index, num_shards),
        "rows": rows,
        "records": rows if records is None else records,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "bytes": len(data) if data is not None else size,
        "sha256": sf.sha256_hex(data) if data is not None else sha256,
    }
    if sequences is not None:
        entry["sequences"] = sequences
    return entry


def merge_fragments(chunks: list[Chunk], schema: pa.Schema, *, shard: int, num_shards: int) -> pa.Table:
    """Shard ``shard``'s rows from its fragment chunks (see :mod:`pipeline.engines.beam.fragments`): merged, sorted by
    ``sort_key``, ``sort_key`` dropped; one chunk, shard schema."""
    tables = read_shard_rows(chunks, shard=shard, num_shards=num_shards)
    table = pa.concat_tables(tables) if tables else payload_schema(schema).empty_table()
    if table.num_rows == 0:  # same bytes as the empty shards the manifest step writes
        return schema.empty_table()
    table = table.take(pc.sort_indices(table, sort_keys=[(SORT_KEY, "ascending")]))
    return table.drop_columns([SORT_KEY]).combine_chunks().cast(schema)


def records_in(table: pa.Table) -> int:
    """Distinct records among a shard's rows (sorted, so the rows of one record are adjacent); for rows that
    hold several records (blocks of grouped texts), the sum of their ``documents`` column; in a job with a datasets
    list (a ``dataset`` column: a repeated record's copies are records of their own, wherever their keys sort), the
    rows with ``row_of_record`` 0."""
    if table.num_rows == 0:
        return 0
    if sf.DOCUMENTS_COLUMN in table.column_names:
        return int(pc.sum(table[sf.DOCUMENTS_COLUMN]).as_py() or 0)
    if DATASET_COLUMN in table.column_names:
        return int(pc.sum(pc.equal(table["row_of_record"], 0)).as_py() or 0)
    source, index = table["source"].to_pylist(), table["index"].to_pylist()
    return 1 + sum(1 for k in range(1, len(source)) if source[k] != source[k - 1] or index[k] != index[k - 1])


def write_shard(chunks, *, output: str, index: int, num_shards: int, padded: bool = False, extra_fields=(),
                schema: pa.Schema | None = None, packing: ShardPacking | None = None) -> dict:
    """Write ``data/shard-<index>-of-<num_shards>.arrow`` under ``output`` from its fragment chunks (those
    :func:`pipeline.io.chunks.chunks_by_shard` names for it); return its manifest entry (:func:`shard_entry`).
    ``schema``: the rows' schema (the job plan's), else the chat schema of ``padded`` / ``extra_fields``.
    ``packing`` (``--pack-length``): the shard's sorted rows are packed before writing; the entry then has
    ``sequences`` and the shard's packing figures under ``packing`` (the commit step takes them out).

    The bytes depend only on the rows (those with ``shard_of(sort_key, num_shards) == index``), never on
    how they were fragmented or in which order the chunks come (packed: same rows in, same packed rows out)."""
    if schema is None:
        schema = sf.arrow_schema(padded=padded, extra_fields=tuple(extra_fields))
    table = merge_fragments(list(chunks), schema, shard=index, num_shards=num_shards)
    records = records_in(table)
    sequences = figures = None
    if packing is not None:
        sequences = table.num_rows
        table, figures = packing.pack(table)
    path = join(output, *sf.shard_relative_path(index, num_shards).split("/"))
    # streamed to the file: the serialised shard (same bytes as ipc_stream_bytes) is never in memory
    size, sha256 = write_table_atomically(path, table, tmp_root=tmp_root(output))
    entry = shard_entry(
        index, num_shards, table.num_rows, int(pc.sum(table["length"]).as_py() or 0),
        int(pc.sum(table["num_loss_tokens"]).as_py() or 0), size=size, sha256=sha256,
        records=records, sequences=sequences,
    )
    if figures is not None:
        entry["packing"] = figures
    return entry
