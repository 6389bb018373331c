"""Rows' values for ``list<list<number>>`` shard columns whose inner lists may be null, held in numpy buffers.

A row can hold such a value as Python lists (``[[0, 4], None, [5, 9]]``), which costs a Python list per
inner list to build and a ``pa.array`` conversion per shard batch. :class:`NullableLists` holds the same
value as three numpy arrays instead, and :func:`nullable_lists_array` assembles a column of them straight
from those buffers (:func:`transforms.shard_format.table_from_rows` does so for every ``list<list<number>>``
column whose rows all hold one). The Arrow array it builds is the one ``pa.array`` builds from the Python
lists (same buffers, so the same IPC bytes): null inner lists take no items, no validity bitmap when no
inner list is null, none on the outer list or on the items.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

_INT32_MAX = np.iinfo(np.int32).max


class NullableLists(Sequence):
    """One row's value of a ``list<list<number>>`` column: ``n`` inner lists, each a list of numbers or null.

    Attributes:
        values: 1-D numpy array, the items of the non-null inner lists, concatenated in order.
        lengths: integer numpy array ``[n]``, the number of items of each inner list (0 for a null one).
        valid: bool numpy array ``[n]``, False where the inner list is null.

    Inner lists of one width can be given as a matrix (:meth:`rows_of`): then ``values`` and ``lengths`` are
    derived when read, and :func:`nullable_lists_array` drops the null rows of all the rows' matrices at once.

    As a sequence it reads as the Python lists (``value[i]`` is a list of Python numbers or ``None``) and
    compares equal to them, so code that reads rows does not care which form a row holds.
    """

    __slots__ = ("_values", "_lengths", "valid", "matrix")

    def __init__(self, values: np.ndarray, lengths: np.ndarray, valid: np.ndarray):
        self._values = values
        self._lengths = lengths
        self.valid = valid
        self.matrix = None

    @classmethod
    def rows_of(cls, matrix: np.ndarray, valid: np.ndarray) -> "NullableLists":
        """Inner lists of one width: row ``i`` of the 2-D ``matrix`` ``[n, width]`` where ``valid[i]``, else null
        (``matrix`` and ``valid`` are kept, not copied)."""
        if matrix.ndim != 2 or valid.dtype != np.bool_ or matrix.shape[:1] != valid.shape:
            raise ValueError(f"rows_of needs a [n, width] matrix and n bool flags, got {matrix.shape} and "
                             f"{valid.dtype}{valid.shape}")
        value = cls.__new__(cls)
        value._values = value._lengths = None
        value.valid = valid
        value.matrix = matrix
        return value

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = self.matrix[self.valid].reshape(-1)
        return self._values

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = self.valid * np.int64(self.matrix.shape[1])
        return self._lengths

    @classmethod
    def from_lists(cls, items: Sequence[Sequence[Any] | None], dtype) -> "NullableLists":
        """The value of Python lists (``None`` for a null inner list) with items of numpy ``dtype``."""
        valid = np.fromiter((item is not None for item in items), dtype=np.bool_, count=len(items))
        lengths = np.fromiter((0 if item is None else len(item) for item in items), dtype=np.int64, count=len(items))
        values = np.asarray([x for item in items if item is not None for x in item], dtype=dtype)
        return cls(values, lengths, valid)

    def __len__(self) -> int:
        return len(self.valid)

    def _offsets(self) -> np.ndarray:
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        return offsets

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        k = range(len(self))[index]  # negative indices, IndexError
        if not self.valid[k]:
            return None
        offsets = self._offsets()
        return self.values[offsets[k]:offsets[k + 1]].tolist()

    def __iter__(self) -> Iterator[list | None]:
        offsets = self._offsets().tolist()
        values = self.values.tolist()
        for k, ok in enumerate(self.valid.tolist()):
            yield values[offsets[k]:offsets[k + 1]] if ok else None

    def to_pylist(self) -> list[list | None]:
        return list(self)

    def __eq__(self, other) -> bool:
        if isinstance(other, (NullableLists, list, tuple)):
            return self.to_pylist() == list(other)
        return NotImplemented

    __hash__ = None  # mutable numpy buffers, like a list

    def __repr__(self) -> str:
        return f"NullableLists({self.to_pylist()!r})"

    def __reduce__(self):
        if self.matrix is not None:
            return NullableLists.rows_of, (self.matrix, self.valid)
        return NullableLists, (self._values, self._lengths, self.valid)


def nullable_lists_array(rows: Sequence[NullableLists], arrow_type: pa.DataType, item_dtype) -> pa.Array:
    """The ``list<list<number>>`` array (``arrow_type``, items of numpy ``item_dtype``) of one
    :class:`NullableLists` per row, from concatenated buffers: equal to ``pa.array`` of the rows' Python
    lists, buffer for buffer.

    Raises:
        ValueError: a null inner list with items, lengths that do not add up to the values, values that
            change when converted to ``item_dtype``, or more items than 32-bit offsets address.
    """
    item_dtype = np.dtype(item_dtype)
    n = len(rows)
    counts = np.fromiter((len(row.valid) for row in rows), dtype=np.int64, count=n)
    outer = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=outer[1:])
    widths = {row.matrix.shape[1] if row.matrix is not None else None for row in rows}
    if n and len(widths) == 1 and None not in widths:  # all of one width: drop the null rows in one go
        valid = np.concatenate([row.valid for row in rows])
        lengths = valid * np.int64(widths.pop())
        values = np.concatenate([row.matrix for row in rows])[valid].reshape(-1)
    elif n:
        valid = np.concatenate([row.valid for row in rows]).astype(np.bool_, copy=False)
        lengths = np.concatenate([row.lengths for row in rows]).astype(np.int64, copy=False)
        values = np.concatenate([row.values for row in rows])
    else:
        valid, lengths, values = np.zeros(0, np.bool_), np.zeros(0, np.int64), np.zeros(0, item_dtype)
    if len(valid) != len(lengths) or len(valid) != outer[-1]:
        raise ValueError("each inner list needs one length and one validity flag")
    if (lengths < 0).any() or lengths[~valid].any():
        raise ValueError("a null inner list holds no items, and lengths are >= 0")
    inner = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=inner[1:])
    if inner[-1] != len(values) or values.ndim != 1:
        raise ValueError(f"the inner lists' lengths add up to {inner[-1]}, the values are {len(values)}")
    if max(outer[-1], inner[-1]) > _INT32_MAX:
        raise ValueError("too many items for a list column's 32-bit offsets")
    if values.dtype != item_dtype:
        converted = values.astype(item_dtype)
        if not np.array_equal(converted, values):
            raise ValueError(f"values of dtype {values.dtype} do not fit {item_dtype}")
        values = converted
    values = np.ascontiguousarray(values)
    m = len(valid)
    null_count = int(m - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    items = pa.Array.from_buffers(arrow_type.value_type.value_type, len(values), [None, pa.py_buffer(values)])
    inner_array = pa.Array.from_buffers(arrow_type.value_type, m, [bitmap, pa.py_buffer(inner.astype(np.int32))],
                                        null_count=null_count, children=[items])
    return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(outer.astype(np.int32))], null_count=0,
                                 children=[inner_array])
