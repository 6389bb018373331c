"""Packed rows back to their sequences (for reading tools: the audit command, ``pipeline.inspect``, tests).

:func:`iter_sequences` yields, for every sequence of every packed row of a table, a dict shaped like an
unpacked row: ``input_ids`` / ``labels`` (numpy views; the first label is -100, as packing left it) and
every per-sequence column (``source``, ``index``, ``record_id``, ``truncated``, ...) as a Python value,
plus ``pack`` (the packed row's number in the table) and ``offset`` (where the sequence starts in it).
Concatenated list columns (image columns) are not split.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from transforms.packing.rows import MROPE_POSITION_IDS, NUM_SEQUENCES, POSITION_IDS, ROW_SCALARS, SEQ_LENGTHS
from transforms.shard_format import list_offsets, numpy_values


def per_sequence_columns(schema: pa.Schema) -> list[str]:
    """The columns of a packed schema that hold one value per sequence (scalars of the unpacked rows)."""
    skip = {"input_ids", "labels", POSITION_IDS, SEQ_LENGTHS, MROPE_POSITION_IDS, NUM_SEQUENCES, *ROW_SCALARS}
    return [field.name for field in schema if field.name not in skip and pa.types.is_list(field.type)
            and not (pa.types.is_list(field.type.value_type) or pa.types.is_binary(field.type.value_type)
                     or pa.types.is_large_binary(field.type.value_type))
            and not field.name.startswith("image_")]


def iter_sequences(table: pa.Table, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """The sequences of a packed table, in packed-row order then sequence order."""
    if table.num_rows == 0:
        return
    table = table.combine_chunks()
    names = per_sequence_columns(table.schema) if columns is None else list(columns)

    def flat(name: str) -> tuple[np.ndarray, np.ndarray]:
        array = table.column(name).chunk(0)
        return list_offsets(array), numpy_values(array.flatten())

    ids_offsets, ids = flat("input_ids")
    _, labels = flat("labels")
    seq_offsets, seq_lengths = flat(SEQ_LENGTHS)
    values = {name: table.column(name).chunk(0).flatten().to_pylist() for name in names}
    for pack in range(table.num_rows):
        start = int(ids_offsets[pack])
        for j in range(int(seq_offsets[pack]), int(seq_offsets[pack + 1])):
            length = int(seq_lengths[j])
            row = {name: values[name][j] for name in names}
            row.update(input_ids=ids[start:start + length], labels=labels[start:start + length], length=length,
                       pack=pack, offset=start - int(ids_offsets[pack]))
            yield row
            start += length
