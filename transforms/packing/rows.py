"""Packing rows: a table of shard rows -> a table of packed rows (pure: pyarrow + numpy).

:func:`pack_table` takes rows in a fixed order (the job: one shard's rows, sorted by ``sort_key``),
plans the bins (:func:`transforms.packing.bins.plan_bins`) and concatenates each bin's rows into one
packed row. The result depends only on the rows, their order and the options.

Packed row contract (schema: :func:`packed_schema`; every row of the input is one *sequence*):

=================== ================ =====================================================================
column              type             meaning
=================== ================ =====================================================================
input_ids           list<int32>      the sequences' tokens, concatenated (at most ``length`` tokens;
                                     not padded: the runtime pads to the pack length)
labels              list<int32>      the sequences' labels, concatenated, unshifted; the *first* label of
                                     every sequence is -100 (no sequence is trained to continue the one
                                     before it; a causal LM never uses position 0's label of a sequence)
position_ids        list<int32>      0, 1, 2, ... restarting at 0 at every sequence
seq_lengths         list<int32>      tokens of each sequence, in order (sum = ``length``)
length              int32            real tokens of the packed row
num_loss_tokens     int32            labels other than -100 in the packed row
num_sequences       int32            sequences in the packed row
mrope_position_ids  list<int32>      Qwen-VL jobs only: ``[3, length]`` plane-major (temporal, height,
                                     width planes one after another), each sequence's 3-D M-RoPE
                                     positions computed for it alone (:mod:`transforms.packing.mrope`)
=================== ================ =====================================================================

Every other column of the row schema carries over by kind:

* a scalar column becomes a per-sequence list of its type, in sequence order: ``source``, ``index``,
  ``record_id`` (provenance), ``truncated``, ``truncated_tokens``, ``turn``, ``row_of_record``,
  ``num_images``, ...;
* a list column is concatenated over the sequences (image columns: ``image_bytes``/``image_pixels``,
  ``image_sha256``, ``image_hw``, ``image_grid_thw``, ``image_token_counts``, ... in row and token
  order, the order in which the model consumes image features); ``image_index`` (an index into the
  row's payload list) is shifted by the payloads of the sequences before it.

Rows written padded (``attention_mask``) cannot be packed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from transforms.packing.bins import plan_bins
from transforms.packing.mrope import MropeSpec, packed_mrope_positions
from transforms.packing.options import PackingOptions
from transforms.packing.stats import shard_packing_stats
from transforms.shard_format import IGNORE_INDEX, list_offsets, numpy_array, numpy_values

POSITION_IDS = "position_ids"
SEQ_LENGTHS = "seq_lengths"
NUM_SEQUENCES = "num_sequences"
MROPE_POSITION_IDS = "mrope_position_ids"
#: row-level scalar columns of a packed row (every other scalar becomes a per-sequence list)
ROW_SCALARS = ("length", "num_loss_tokens")
#: list columns that index into another list column of the same row: shifted when rows are concatenated
INDEX_COLUMNS = {"image_index": ("image_bytes", "image_pixels")}
PACKED_METADATA_KEY = b"chatshards.pack_length"

_INT32_LIST = pa.list_(pa.int32())


def packed_schema(row_schema: pa.Schema, options: PackingOptions | None = None, *, mrope: bool = False) -> pa.Schema:
    """The schema of packed rows made from rows of ``row_schema`` (see the module docstring); its metadata
    records ``options.length`` (none without ``options``)."""
    if "attention_mask" in row_schema.names:
        raise ValueError("rows written padded (--pad-to max_length) cannot be packed")
    fields = []
    for field in row_schema:
        name = field.name
        if name in ("input_ids", "labels"):
            fields.append(field)
            if name == "labels":
                fields += [pa.field(POSITION_IDS, _INT32_LIST, nullable=False),
                           pa.field(SEQ_LENGTHS, _INT32_LIST, nullable=False)]
        elif name in ROW_SCALARS:
            fields.append(field)
            if name == ROW_SCALARS[-1]:
                fields.append(pa.field(NUM_SEQUENCES, pa.int32(), nullable=False))
        elif pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            fields.append(field)
        else:
            fields.append(pa.field(name, pa.list_(field.type), nullable=False))
    if mrope:
        fields.append(pa.field(MROPE_POSITION_IDS, _INT32_LIST, nullable=False))
    metadata = dict(row_schema.metadata or {})
    if options is not None:
        metadata[PACKED_METADATA_KEY] = str(options.length).encode()
    return pa.schema(fields, metadata=metadata)


def is_packed_schema(schema: pa.Schema) -> bool:
    """Whether a shard schema is one of packed rows."""
    return SEQ_LENGTHS in schema.names


def _list_array(offsets: np.ndarray, values: pa.Array, field_type: pa.DataType) -> pa.Array:
    array = pa.ListArray.from_arrays(numpy_array(offsets, pa.int32()), values)
    return array if array.type == field_type else array.cast(field_type)


def _value_counts(array: pa.Array) -> np.ndarray:
    """int64: the number of values of every row of a list array."""
    return np.diff(list_offsets(array)).astype(np.int64)


def _group_offsets(per_item: np.ndarray, pack_item_offsets: np.ndarray) -> np.ndarray:
    """Offsets of packs into the concatenated values, from every item's value count."""
    cumulative = np.zeros(len(per_item) + 1, dtype=np.int64)
    np.cumsum(per_item, out=cumulative[1:])
    return cumulative[pack_item_offsets]


def pack_table(table: pa.Table, options: PackingOptions, *, mrope: MropeSpec | None = None,
               schema: pa.Schema | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Pack the rows of ``table`` (in its order) into packed rows; returns ``(packed table, figures)``.

    ``figures``: this table's packing statistics (:func:`transforms.packing.stats.shard_packing_stats`).
    ``mrope``: set for Qwen-VL rows (adds ``mrope_position_ids``). ``schema``: the packed schema
    (default: :func:`packed_schema` of the table's schema).

    Raises:
        ValueError: a row longer than ``options.length`` (the job truncates or rejects those first).
    """
    schema = schema if schema is not None else packed_schema(table.schema, options, mrope=mrope is not None)
    n = table.num_rows
    if n == 0:
        return schema.empty_table(), shard_packing_stats(
            shard_lengths=np.zeros(0, np.int64), pack_tokens=np.zeros(0, np.int64), pack_sizes=np.zeros(0, np.int64),
            capacity=options.length, trained_tokens=0, first_labels_masked=0, truncated_sequences=0,
            truncated_tokens=0)
    table = table.combine_chunks()
    lengths = _value_counts(table.column("input_ids").chunk(0))
    bins = plan_bins(lengths, options.length, options.strategy)
    order = np.fromiter((i for members in bins for i in members), dtype=np.int64, count=n)
    sizes = np.fromiter((len(members) for members in bins), dtype=np.int64, count=len(bins))
    pack_items = np.zeros(len(bins) + 1, dtype=np.int64)  # offsets of packs into the ordered rows
    np.cumsum(sizes, out=pack_items[1:])
    taken = table.take(numpy_array(order, pa.int64())).combine_chunks()

    seq_lengths = lengths[order]
    token_offsets = _group_offsets(seq_lengths, pack_items)  # packs into the concatenated tokens
    seq_starts = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(seq_lengths[:-1], out=seq_starts[1:])
    total = int(seq_lengths.sum())

    def column(name: str) -> pa.Array:  # one chunk: the table has rows and its chunks are combined
        return taken.column(name).chunk(0)

    ids = numpy_values(column("input_ids").flatten()).astype(np.int32, copy=False)
    labels = numpy_values(column("labels").flatten()).astype(np.int32, copy=True)
    nonempty = seq_starts[seq_lengths > 0]
    first_labels_masked = int(np.count_nonzero(labels[nonempty] != IGNORE_INDEX))
    labels[nonempty] = IGNORE_INDEX
    positions = np.arange(total, dtype=np.int64) - np.repeat(seq_starts, seq_lengths)
    trained = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(labels != IGNORE_INDEX, out=trained[1:])
    pack_trained = trained[token_offsets[1:]] - trained[token_offsets[:-1]]
    pack_tokens = np.diff(token_offsets)

    built: dict[str, pa.Array] = {
        "input_ids": _list_array(token_offsets, numpy_array(ids, pa.int32()), _INT32_LIST),
        "labels": _list_array(token_offsets, numpy_array(labels, pa.int32()), _INT32_LIST),
        POSITION_IDS: _list_array(token_offsets, numpy_array(positions, pa.int32()), _INT32_LIST),
        SEQ_LENGTHS: _list_array(pack_items, numpy_array(seq_lengths, pa.int32()), _INT32_LIST),
        "length": numpy_array(pack_tokens, pa.int32()),
        "num_loss_tokens": numpy_array(pack_trained, pa.int32()),
        NUM_SEQUENCES: numpy_array(sizes, pa.int32()),
    }
    for field in schema:
        name = field.name
        if name in built or name == MROPE_POSITION_IDS:
            continue
        source = column(name)
        if pa.types.is_list(source.type) or pa.types.is_large_list(source.type):
            counts = _value_counts(source)
            values = source.flatten()
            if name in INDEX_COLUMNS:
                values = _shift_indices(values, counts, _payload_counts(taken, name), pack_items, sizes)
            built[name] = _list_array(_group_offsets(counts, pack_items), values, field.type)
        else:
            built[name] = _list_array(pack_items, source, field.type)
    if MROPE_POSITION_IDS in schema.names:
        built[MROPE_POSITION_IDS] = _mrope_column(taken, ids, seq_lengths, token_offsets, pack_items, mrope)
    packed = pa.Table.from_arrays([built[field.name] for field in schema], schema=schema)

    names = table.column_names
    truncated = numpy_values(table.column("truncated").chunk(0)) if "truncated" in names else np.zeros(n, bool)
    removed = numpy_values(table.column("truncated_tokens").chunk(0)) if "truncated_tokens" in names else \
        np.zeros(n, np.int64)
    figures = shard_packing_stats(
        shard_lengths=lengths, pack_tokens=pack_tokens, pack_sizes=sizes, capacity=options.length,
        trained_tokens=int(pack_trained.sum()), first_labels_masked=first_labels_masked,
        truncated_sequences=int(np.count_nonzero(truncated)), truncated_tokens=int(np.asarray(removed).sum()))
    return packed, figures


def _payload_counts(taken: pa.Table, index_column: str) -> np.ndarray:
    """Entries of the payload list that ``index_column`` indexes, per row."""
    for name in INDEX_COLUMNS[index_column]:
        if name in taken.column_names:
            return _value_counts(taken.column(name).chunk(0))
    raise ValueError(f"{index_column} has none of its payload columns {INDEX_COLUMNS[index_column]}")


def _shift_indices(values: pa.Array, counts: np.ndarray, payloads: np.ndarray, pack_items: np.ndarray,
                   sizes: np.ndarray) -> pa.Array:
    """``values`` (per row: indices into the row's payload list) shifted by the payloads of the rows
    before it in its pack."""
    before = np.zeros(len(payloads) + 1, dtype=np.int64)
    np.cumsum(payloads, out=before[1:])
    pack_base = np.repeat(before[pack_items[:-1]], sizes)
    shift = before[:-1] - pack_base
    array = numpy_values(values).astype(np.int64) + np.repeat(shift, counts)
    return numpy_array(array, values.type)


def _mrope_column(taken: pa.Table, ids: np.ndarray, seq_lengths: np.ndarray, token_offsets: np.ndarray,
                  pack_items: np.ndarray, spec: MropeSpec) -> pa.Array:
    n = taken.num_rows
    if "image_grid_thw" in taken.column_names:
        grids = taken.column("image_grid_thw").chunk(0)
        grid_values = numpy_values(grids.flatten()).astype(np.int64).reshape(-1, 3)
        per_row = _value_counts(grids) // 3
    else:
        grid_values, per_row = np.zeros((0, 3), dtype=np.int64), np.zeros(n, dtype=np.int64)
    image_offsets = _group_offsets(per_row, pack_items)
    parts = []
    for p in range(len(pack_items) - 1):
        lo, hi = int(pack_items[p]), int(pack_items[p + 1])
        tokens = ids[token_offsets[p]:token_offsets[p + 1]]
        planes = packed_mrope_positions(tokens, seq_lengths[lo:hi], grid_values[image_offsets[p]:image_offsets[p + 1]],
                                        per_row[lo:hi], spec)
        parts.append(planes.reshape(-1))
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return _list_array(3 * token_offsets, numpy_array(values, pa.int32()), _INT32_LIST)


@dataclass(frozen=True)
class ShardPacking:
    """What the job's shard writer needs to pack a shard (picklable): the options, and the M-RoPE rule
    for Qwen-VL rows (``None`` otherwise)."""

    options: PackingOptions
    mrope: MropeSpec | None = None

    def schema(self, row_schema: pa.Schema) -> pa.Schema:
        """The packed schema of rows of ``row_schema``."""
        return packed_schema(row_schema, self.options, mrope=self.mrope is not None)

    def pack(self, table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        """:func:`pack_table` with these options."""
        return pack_table(table, self.options, mrope=self.mrope)
