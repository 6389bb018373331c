"""Map-style access to a finished chatshards dataset folder, zero copy.

A :class:`ShardDataset` reads ``<root>/manifest.json`` (refusing a folder without a valid one),
memory-maps the Arrow IPC stream shards it lists (``pa.memory_map`` + ``pa.ipc.open_stream``) and
returns, for row ``i``, numpy *views* into the mapped buffers: nothing is copied and no Python list
of ints is built. Token data is therefore never held in anonymous (heap) memory; the pages the OS
maps in while you read are file-backed page cache that the kernel can drop at any time, and
``max_open_shards`` bounds how many shards stay mapped (unmapping the least recently used one
releases its pages from the process's resident set).

Open files: a shard's file descriptor is closed as soon as its stream is parsed (the mapping, and
every view into it, outlives the descriptor), so a dataset holds no open file between calls
whatever its shard count or ``ulimit -n``. Mappings are bounded by ``max_open_shards`` (by default
:func:`default_max_open_shards`, well under the kernel's per-process mapping limit). Failing to
open or map a file for lack of resources (``EMFILE``, ``ENFILE``, ``ENOMEM``) or permission raises
``OSError`` saying so, never :class:`ManifestError`: only a missing or malformed shard is reported as
a damaged dataset.

One run, pinned: a dataset folder can be rebuilt under an open reader (``--overwrite`` deletes the shards
and writes new files under the same names). When a :class:`ShardDataset` is built it records, per shard,
the file's identity ``(st_dev, st_ino, st_size, st_mtime_ns)`` (after checking the size against the
manifest); every process that maps a shard (the main process, forked or spawned ``DataLoader`` workers)
compares the identity of the file it actually mapped (``fstat`` of the mapped descriptor) with the pin
and raises :class:`DatasetChanged` on a mismatch, so rows of two runs are never mixed. Shards mapped
before the rebuild keep serving the pinned run's bytes (the old files live on while mapped). The pin is
file identity, not a run id written into the shards: reruns of a job stay byte-identical.
"""
from __future__ import annotations

import bisect
import collections
import errno
import functools
import hashlib
import operator
import os
import stat
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch.utils.data

from .. import shard_format as sf
from ..packing.rows import SEQ_LENGTHS, is_packed_schema, packed_schema
from ..shard_format import ManifestError
from . import heads, partition
from .partition import ShardIterableDataset
from .value_summaries import register_column

__all__ = ["ShardDataset", "ManifestError", "DatasetChanged", "default_max_open_shards"]

_VERSION_KEY = b"chatshards.schema_version"
_TOKEN_COLUMNS = ("input_ids", "labels")
#: Columns a row can carry that are not stored: ``sample_index`` (the row's index in the dataset, int) and
#: ``epoch`` (the dataset's epoch, :meth:`ShardDataset.set_epoch`): what run-time masking seeds from
#: (:class:`~transforms.runtime.mlm.MaskingCollator`).
SAMPLE_INDEX, EPOCH = "sample_index", "epoch"
VIRTUAL_COLUMNS = (SAMPLE_INDEX, EPOCH)
# errors that say something about the process or the machine, not about the shard's bytes
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EACCES, errno.EPERM, errno.EAGAIN})
_MAX_DEFAULT_OPEN_SHARDS = 4096


@functools.lru_cache(maxsize=1)
def default_max_open_shards() -> int:
    """The number of shards a :class:`ShardDataset` keeps mapped when ``max_open_shards`` is ``None``.

    4096 (the job's largest automatic shard count, so a global shuffle over such a dataset never
    re-maps), or an eighth of the kernel's per-process limit on memory mappings
    (``/proc/sys/vm/max_map_count``, 65530 by default on Linux) where that is lower. Open file
    descriptors do not enter into it: a mapped shard holds none.
    """
    try:
        with open("/proc/sys/vm/max_map_count") as handle:
            limit = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _MAX_DEFAULT_OPEN_SHARDS
    return max(1, min(_MAX_DEFAULT_OPEN_SHARDS, limit // 8))


def _resource_error(path: str, exc: OSError) -> OSError:
    """An ``OSError`` (same errno) saying that ``path`` could not be opened for lack of resources."""
    detail = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            hint = f" (this process's limit, ulimit -n, is {soft})"
        except (ImportError, OSError, ValueError):
            pass
        hint += "; chatshards holds no open file per shard, so other code holds them"
    return OSError(exc.errno, f"cannot open shard {path}: {detail}{hint}. The dataset is not damaged")


class DatasetChanged(ManifestError):
    """A shard file is no longer the one the :class:`ShardDataset` pinned when it was built: the folder was
    rewritten (another run, ``--overwrite``) under the open dataset."""


#: a shard file's identity: ``(st_dev, st_ino, st_size, st_mtime_ns)``
FileIdentity = tuple


def file_identity(info: os.stat_result) -> FileIdentity:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _check_pin(path: str, pin: FileIdentity | None, found: FileIdentity) -> None:
    if pin is not None and tuple(pin) != found:
        raise DatasetChanged(
            f"shard {path} is not the file this ShardDataset opened (device, inode, size, mtime "
            f"{tuple(pin)} then, {found} now): the dataset folder was rewritten since (another run, --overwrite), "
            "and reading on would mix the rows of two runs. Open the dataset again to read the new run")


def _map_stream(path: str, pin: FileIdentity | None = None) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """Memory-map ``path``, check the mapped file against ``pin`` (its identity when the dataset was built),
    parse its Arrow IPC stream and close the file (the mapping stays alive as long as the returned batches or
    views into them do).

    Raises:
        DatasetChanged: the mapped file is not the pinned one.
        ManifestError: the file is missing or is not a readable Arrow IPC stream.
        OSError: the file could not be opened or mapped for lack of resources or permission.
    """
    try:
        source = pa.memory_map(path, "r")
    except FileNotFoundError as exc:
        raise ManifestError(f"shard {path} listed in the manifest is missing") from exc
    except OSError as exc:
        if exc.errno in _RESOURCE_ERRNOS:
            raise _resource_error(path, exc) from exc
        raise ManifestError(f"shard {path} cannot be read: {exc}") from exc
    if pin is not None:
        try:
            found = file_identity(os.fstat(source.fileno()))
        except BaseException:
            source.close()
            raise
        if tuple(pin) != found:
            source.close()
            _check_pin(path, pin, found)
    try:
        reader = pa.ipc.open_stream(source)
        return reader.schema, list(reader)
    except OSError as exc:
        if exc.errno in _RESOURCE_ERRNOS:
            raise _resource_error(path, exc) from exc
        raise ManifestError(f"shard {path} is corrupted or not an Arrow IPC stream: {exc}") from exc
    except (pa.ArrowException, ValueError) as exc:
        raise ManifestError(f"shard {path} is corrupted or not an Arrow IPC stream: {exc}") from exc
    finally:
        source.close()  # the descriptor only: the batches keep the mapped region alive


class _MappedShard:
    """One memory-mapped shard: per record batch, numpy views of the requested columns.

    Holds no open file: only the mapping, through the views."""

    __slots__ = ("path", "chunk_starts", "chunks")

    def __init__(self, path: str, *, expected_rows: int, columns: Sequence[str], chat: bool = True,
                 pin: FileIdentity | None = None):
        self.path = path
        schema, batches = _map_stream(path, pin)
        _check_schema(path, schema, columns, chat=chat)
        rows = sum(b.num_rows for b in batches)
        if rows != expected_rows:
            raise ManifestError(f"shard {path} is corrupted: {rows} rows, manifest says {expected_rows}")
        self.chunk_starts = [0]
        self.chunks = []
        try:
            for batch in batches:
                batch.validate()
                self.chunk_starts.append(self.chunk_starts[-1] + batch.num_rows)
                self.chunks.append(_chunk_views(batch, columns))
        except (pa.ArrowException, ValueError) as exc:
            raise ManifestError(f"shard {path} is corrupted: {exc}") from exc
        self.chunk_starts.pop()

    def row(self, j: int) -> dict[str, Any]:
        c = bisect.bisect_right(self.chunk_starts, j) - 1 if len(self.chunks) > 1 else 0
        j -= self.chunk_starts[c]
        out = {}
        for name, kind, a, b in self.chunks[c]:
            if kind == 0:  # list column: (offsets, values) views
                out[name] = b[a[j]:a[j + 1]]
            elif kind == 1:  # fixed-width scalar column: numpy view
                out[name] = a[j].item()
            else:  # anything else (strings, binary, nested): pyarrow scalar conversion
                out[name] = a[j].as_py()
        return out

    def list_lengths(self, name: str = "input_ids") -> np.ndarray:
        parts = [np.diff(a) for chunk in self.chunks for (n, kind, a, _b) in chunk if n == name and kind == 0]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def flat_values(self, name: str) -> Iterator[np.ndarray]:
        for chunk in self.chunks:
            for n, kind, a, b in chunk:
                if n == name and kind == 0 and len(a):
                    yield b[a[0]:a[-1]]


def _check_schema(path: str, schema: pa.Schema, columns: Sequence[str], *, chat: bool = True) -> None:
    """The shard's schema version and requested columns; ``chat``: their types are the chat schema's (a task's
    dataset has its task's own types, e.g. a classification ``labels`` int32 per row)."""
    version = (schema.metadata or {}).get(_VERSION_KEY)
    if version is not None and version != str(sf.SCHEMA_VERSION).encode():
        raise ManifestError(
            f"shard {path} has schema version {version.decode(errors='replace')}, "
            f"this chatshards reads version {sf.SCHEMA_VERSION}"
        )
    expected = sf.arrow_schema(padded=True)
    if is_packed_schema(schema):  # packed rows: per-sequence lists where rows have scalars
        expected = packed_schema(sf.arrow_schema())
    for name in columns:
        if name not in schema.names:
            raise ManifestError(f"shard {path} has no column {name!r} (columns: {schema.names})")
        if chat and name in expected.names and schema.field(name).type != expected.field(name).type:
            raise ManifestError(
                f"shard {path}: column {name!r} is {schema.field(name).type}, expected {expected.field(name).type}"
            )


def _chunk_views(batch: pa.RecordBatch, columns: Sequence[str]) -> list[tuple]:
    views = []
    for name in columns:
        arr = batch.column(name)
        if (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and (
            pa.types.is_integer(arr.type.value_type) or pa.types.is_floating(arr.type.value_type)
        ):
            if arr.null_count:
                raise ValueError(f"column {name!r} has null rows")
            offsets = arr.offsets.to_numpy(zero_copy_only=True)
            values = arr.values.to_numpy(zero_copy_only=True)
            if len(offsets) and (offsets[0] < 0 or offsets[-1] > len(values) or np.any(np.diff(offsets) < 0)):
                raise ValueError(f"column {name!r} has invalid list offsets")
            register_column(values)  # rows are its slices: the collator may check it once (value_summaries)
            views.append((name, 0, offsets, values))
        elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
            views.append((name, 1, arr.to_numpy(zero_copy_only=False), None))
        else:
            views.append((name, 2, arr, None))
    return views


class ShardDataset(torch.utils.data.Dataset):
    """Map-style dataset over a finished chatshards folder; ``ds[i]`` is a dict of numpy views.

    ``ds[i]`` returns ``{"input_ids": int32[L], "labels": int32[L]}`` (plus ``attention_mask``
    int8[L] when the shards were written padded, ``seq_lengths`` int32[k] when they hold packed rows,
    and any extra ``columns`` requested). The arrays
    are read-only views of the memory-mapped shard: ``labels`` is ``IGNORE_INDEX`` (-100) on
    positions that are not trained and equals ``input_ids`` elsewhere; labels are *not* shifted
    (the model shifts). Rows are numbered in manifest order (shard 0's rows, then shard 1's, ...).

    Pickling (DataLoader workers with ``spawn``) sends only the path, the manifest, options and the
    shards' pinned identities; every process maps the shards itself on first access (a forked worker
    re-maps too) and checks each mapped file against its pin (see the module docstring).

    Args:
        path: the dataset folder (the one holding ``manifest.json``).
        verify: check every shard's sha256 against the manifest now (reads all bytes once). Without
            it, only file presence and sizes are checked up front; a shard whose Arrow structure is
            broken still raises :class:`ManifestError` naming the file when first opened.
        columns: columns returned per row. Default: ``input_ids``, ``labels`` and, when present,
            ``attention_mask``; for a dataset of a task other than chat, the manifest's
            ``task.columns`` (``input_ids`` for text; ``input_ids``, ``labels`` for seq2seq; ...).
            List columns come back as numpy views, fixed-width scalars as Python numbers, other types
            through ``pyarrow``'s ``as_py()``. :data:`VIRTUAL_COLUMNS` are not stored: ``sample_index``
            (the row's index) and ``epoch`` (see :meth:`set_epoch`).
        max_open_shards: keep at most this many shards mapped (least recently used is unmapped).
            ``None`` (default): :func:`default_max_open_shards` (4096, fewer where the kernel's
            mapping limit is low), so every shard of a typical dataset stays mapped once touched.
            Bound it lower to keep the resident set small when iterating a large dataset shard by
            shard. No open file is held either way (see the module docstring).

    Raises:
        ManifestError: no/invalid manifest, unsupported schema version, a shard path that leaves the
            dataset folder (``..``, absolute, a symbolic link pointing out), a shard listed twice,
            missing or wrong-sized shard, sha256 mismatch (``verify=True``), or a shard that is not
            a readable Arrow stream. :class:`DatasetChanged` (a ``ManifestError``) when a shard is
            mapped (in any process) after the folder was rewritten.
        OSError: a shard could not be opened or mapped for lack of resources (too many open
            files, memory) or permission; the dataset itself is not damaged.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        verify: bool = False,
        columns: Sequence[str] | None = None,
        max_open_shards: int | None = None,
    ):
        self.root = os.fspath(path)
        self.manifest = sf.load_manifest(self.root)
        self._chat = heads.task_section(self.manifest) is None
        self.paths = sf.shard_paths(self.root, self.manifest)
        entries = self.manifest["shards"]
        self._pins: list[FileIdentity] = []
        for p, entry in zip(self.paths, entries):
            if verify:
                sf.verify_shard_file(p, expected_sha256=entry["sha256"], expected_bytes=entry["bytes"])
            try:
                info = os.stat(p)
            except FileNotFoundError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                raise ManifestError(f"shard {p} listed in the manifest is missing")
            if info.st_size != entry["bytes"]:
                raise ManifestError(f"shard {p} is corrupted: {info.st_size} bytes, manifest says {entry['bytes']}")
            self._pins.append(file_identity(info))
        self._starts = [0]
        for entry in entries:
            self._starts.append(self._starts[-1] + int(entry["rows"]))
        if max_open_shards is None:
            max_open_shards = default_max_open_shards()
        elif isinstance(max_open_shards, bool) or operator.index(max_open_shards) < 1:
            raise ValueError("max_open_shards must be >= 1 or None")
        self.max_open_shards = int(max_open_shards)
        self.columns = tuple(columns) if columns is not None else self._default_columns()
        self._stored = tuple(c for c in self.columns if c not in VIRTUAL_COLUMNS)
        self._virtual = tuple(c for c in self.columns if c in VIRTUAL_COLUMNS)
        self.epoch = 0
        self._open: collections.OrderedDict[int, _MappedShard] = collections.OrderedDict()
        self._pid = os.getpid()
        self._lengths: np.ndarray | None = None

    # -- pickling: never send mapped buffers --------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = collections.OrderedDict()
        state["_lengths"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- properties ---------------------------------------------------------------------------
    @property
    def tokenizer_info(self) -> dict:
        """The manifest's ``tokenizer`` block (``name``, ``vocab_hash``, ``pad/eos/bos_token_id``)."""
        return dict(self.manifest["tokenizer"])

    @property
    def num_shards(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        """int64[len(self)]: number of positions of every row (``len(ds[i]["input_ids"])``).

        This is the width a padded collator sees (for shards written padded it is the padded
        width; the ``length`` column holds real tokens). Computed once from the list offsets.
        """
        if self._lengths is None:
            parts = [self._shard(k).list_lengths("input_ids") for k in range(self.num_shards)]
            self._lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._lengths

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = operator.index(index)
        n = self._starts[-1]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {index} out of range for a dataset of {n} rows")
        k = bisect.bisect_right(self._starts, i) - 1
        row = self._shard(k).row(i - self._starts[k])
        if self._virtual:
            if SAMPLE_INDEX in self._virtual:
                row[SAMPLE_INDEX] = i
            if EPOCH in self._virtual:
                row[EPOCH] = self.epoch
        return row

    def set_epoch(self, epoch: int) -> None:
        """The epoch rows report in their ``epoch`` column (when requested); trainers call it every epoch
        (``Trainer`` through the data loader, :class:`~transforms.runtime.ShardIterableDataset` too)."""
        self.epoch = int(epoch)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch used by ``DataLoader`` (same as ``[ds[i] for i in indices]``)."""
        return [self[i] for i in indices]

    def flat_values(self, column: str = "input_ids") -> Iterator[np.ndarray]:
        """Yield the concatenated values of a list column, one numpy view per record batch.

        Cheap whole-dataset scans, e.g. ``max(int(v.max()) for v in ds.flat_values())`` for the
        largest token id.
        """
        for k in range(self.num_shards):
            yield from self._shard(k, columns=(column,)).flat_values(column)

    def iterable(self, **options: Any):
        """An iterable view for multi-node training: see :class:`transforms.runtime.ShardIterableDataset`."""
        return ShardIterableDataset(self, **options)

    def to_hf_dataset(self, columns: Sequence[str] | None = None):
        """A Hugging Face ``datasets.Dataset`` over the same memory-mapped shards, without copying them.

        What ``trl.SFTTrainer`` (and anything else that wants a ``datasets.Dataset``) takes: the rows in manifest
        order, the stored ``columns`` (default: this dataset's ``columns`` without the virtual ones; pass
        ``self.manifest["columns"]`` for every column) with their Arrow types (``input_ids``/``labels`` int32
        lists; ``labels`` unshifted, -100 where not trained). Building it reads no token data: the table's
        buffers are the mapped files' pages (``datasets`` only wraps them).

        The dataset is *in memory* for ``datasets`` (it has no ``cache_files``), so nothing derived from it is
        ever written into the dataset folder: ``.map``/``.filter``/``.shuffle`` keep their results in memory
        (or where ``cache_file_name=`` says), where a ``Dataset.from_file(shard)`` would write ``cache-*.arrow``
        files beside the shards. The price: pickling it (``num_proc`` in ``.map``, DataLoader workers started
        with ``spawn``) copies the rows; forked workers (Linux's default) share the mapping.
        Needs the ``datasets`` package (not a dependency of the runtime).
        """
        import datasets
        from datasets.table import InMemoryTable

        stored = tuple(c for c in (self.columns if columns is None else columns) if c not in VIRTUAL_COLUMNS)
        tables = []
        for path in self.paths:
            schema, batches = _map_stream(path)
            missing = [c for c in stored if c not in schema.names]
            if missing:
                raise ManifestError(f"shard {path} has no column {missing[0]!r} (columns: {schema.names})")
            tables.append(pa.Table.from_batches(batches, schema=schema).select(list(stored)))
        if tables:
            table = pa.concat_tables(tables)
        else:  # no shard at all: the manifest's columns, no rows
            raise ManifestError(f"{self.root}: the manifest lists no shard")
        fingerprint = hashlib.sha256(
            (str(self.manifest.get("config_fingerprint")) + "".join(e["sha256"] for e in self.manifest["shards"])
             + ",".join(stored)).encode()).hexdigest()[:16]
        return datasets.Dataset(InMemoryTable(table), split=datasets.Split.TRAIN, fingerprint=fingerprint)

    def close(self) -> None:
        """Drop every mapping this object holds (views already returned stay valid)."""
        self._open.clear()

    # -- internals ----------------------------------------------------------------------------
    def _default_columns(self) -> tuple[str, ...]:
        task_columns = heads.default_columns(self.manifest)
        if task_columns is not None:
            return task_columns
        if not self.paths:
            return _TOKEN_COLUMNS
        names = _map_stream(self.paths[0], self._pins[0])[0].names
        if SEQ_LENGTHS in names:  # packed rows: the collator needs every row's sequence boundaries
            return _TOKEN_COLUMNS + (SEQ_LENGTHS,)
        return _TOKEN_COLUMNS + (("attention_mask",) if "attention_mask" in names else ())

    def _shard(self, k: int, columns: Sequence[str] | None = None) -> _MappedShard:
        if columns is not None:  # one-off scan with other columns: not cached
            return _MappedShard(self.paths[k], expected_rows=self._starts[k + 1] - self._starts[k], columns=columns,
                                chat=self._chat, pin=self._pins[k])
        if self._pid != os.getpid():  # forked or unpickled in a worker: map again here
            self._open = collections.OrderedDict()
            self._pid = os.getpid()
        shard = self._open.get(k)
        if shard is None:
            rows = self._starts[k + 1] - self._starts[k]
            shard = _MappedShard(self.paths[k], expected_rows=rows, columns=self._stored, chat=self._chat,
                                 pin=self._pins[k])
            self._open[k] = shard
            if len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(k)
        return shard

    def __repr__(self) -> str:
        return f"ShardDataset({self.root!r}, rows={len(self)}, shards={self.num_shards}, columns={list(self.columns)})"


partition.open_dataset = ShardDataset  # ShardIterableDataset("out/") opens the folder (see .partition)
