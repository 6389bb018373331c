"""``list<list<number>>`` columns with null inner lists built from numpy buffers (transforms/nested_lists.py):
the array, and the shard's IPC bytes, equal what ``pa.array`` gives for the same Python lists."""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import shard_format as sf
from transforms.nested_lists import NullableLists, nullable_lists_array

ITEM_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64(), pa.float32(),
              pa.float64())


def items_of(arrow_type: pa.DataType):
    if pa.types.is_floating(arrow_type):  # values float32 holds exactly
        return st.integers(-(2 ** 20), 2 ** 20).map(lambda k: k / 8)
    dtype = np.dtype(sf.numpy_dtype(arrow_type))
    return st.integers(int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))


@st.composite
def columns(draw):
    """A ``list<list<T>>`` type and its rows, each in both forms: Python lists and a :class:`NullableLists`
    (built from the lists, or as a matrix with :meth:`NullableLists.rows_of` when every inner list has one width)."""
    arrow_type = draw(st.sampled_from(ITEM_TYPES))
    dtype = sf.numpy_dtype(arrow_type)
    width = draw(st.none() | st.integers(0, 3))
    inner = st.lists(items_of(arrow_type), min_size=width or 0, max_size=4 if width is None else width)
    rows = draw(st.lists(st.lists(st.none() | inner, max_size=6), max_size=8))
    values = []
    for row in rows:
        if width is not None and draw(st.booleans()):
            matrix = np.array([item if item is not None else [0] * width for item in row], dtype=dtype)
            matrix = matrix.reshape(len(row), width)
            valid = np.array([item is not None for item in row], dtype=np.bool_)
            values.append(NullableLists.rows_of(matrix, valid))
        else:
            values.append(NullableLists.from_lists(row, dtype))
    return pa.list_(pa.list_(arrow_type)), rows, values


@settings(max_examples=60, deadline=None)
@given(columns())
def test_buffers_give_pa_arrays_array(column):
    arrow_type, rows, values = column
    built = nullable_lists_array(values, arrow_type, sf.numpy_dtype(arrow_type.value_type.value_type))
    built.validate(full=True)
    reference = pa.array(rows, type=arrow_type)
    assert built.equals(reference)
    assert built.to_pylist() == rows
    for ours, theirs in zip(built.buffers(), reference.buffers()):  # same buffers, so the same IPC bytes
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours.to_pybytes() == theirs.to_pybytes()
    assert [value.to_pylist() for value in values] == rows
    assert values == rows  # as a sequence it is the Python lists
    assert [list(value) for value in values] == rows
    assert all(value[k] == row[k] for value, row in zip(values, rows) for k in range(-len(row), len(row)))
    assert pickle.loads(pickle.dumps(values)) == rows


@settings(max_examples=25, deadline=None)
@given(columns())
def test_shard_tables_of_buffer_rows_have_pa_arrays_bytes(column):
    arrow_type, rows, values = column
    schema = pa.schema([pa.field("n", pa.int32(), nullable=False), pa.field("nested", arrow_type, nullable=False)])
    table = sf.table_from_rows([{"n": k, "nested": value} for k, value in enumerate(values)], schema)
    reference = pa.Table.from_arrays([pa.array(range(len(rows)), pa.int32()), pa.array(rows, type=arrow_type)],
                                     schema=schema)
    assert table.equals(reference)
    assert sf.ipc_stream_bytes(table) == sf.ipc_stream_bytes(reference)
    # rows holding Python lists (some or all) give the same table through pa.array
    mixed = [{"n": k, "nested": row if k % 2 else value} for k, (row, value) in enumerate(zip(rows, values))]
    assert sf.ipc_stream_bytes(sf.table_from_rows(mixed, schema)) == sf.ipc_stream_bytes(reference)


def test_inconsistent_buffers_are_refused():
    arrow_type = pa.list_(pa.list_(pa.int32()))
    with pytest.raises(ValueError, match="null inner list"):  # a null list that holds items
        nullable_lists_array([NullableLists(np.arange(2, dtype=np.int32), np.array([2]), np.array([False]))],
                             arrow_type, np.int32)
    with pytest.raises(ValueError, match="add up"):
        nullable_lists_array([NullableLists(np.arange(3, dtype=np.int32), np.array([2]), np.array([True]))],
                             arrow_type, np.int32)
    with pytest.raises(ValueError, match="do not fit"):
        nullable_lists_array([NullableLists(np.array([2 ** 40]), np.array([1]), np.array([True]))], arrow_type,
                             np.int32)
    with pytest.raises(ValueError, match="matrix"):
        NullableLists.rows_of(np.zeros((3, 2), np.int32), np.ones(2, np.bool_))
