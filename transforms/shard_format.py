"""The on-disk dataset format: Arrow schema, shard names, manifest, and integrity checks.

Layout of a finished dataset (other tools check these names)::

    out/manifest.json                        written last: the commit point of the dataset
    out/data/shard-00000-of-00004.arrow      Arrow IPC *stream* files (``datasets.Dataset.from_file`` opens them)
    out/rejected/*.jsonl                     one line per rejected record

A folder without ``manifest.json`` is an unfinished (or crashed) run and readers refuse it.

Row contract (one row = one training example, unpadded unless ``pad_to == "max_length"``):

=================== ================ =====================================================================
column              type             meaning
=================== ================ =====================================================================
input_ids           list<int32>      token ids of the rendered conversation (chat template applied)
labels              list<int32>      ``input_ids`` on trained positions, ``IGNORE_INDEX`` (-100) elsewhere;
                                     not shifted (the model shifts)
length              int32            number of real (non-pad) tokens
num_loss_tokens     int32            number of positions whose label is not -100
truncated           bool             the row was cut to ``max_length``
source              string           the input file as given on the command line (or matched by its glob)
index               int64            the record's 0-based position in that file
record_id           string           sha256 of the record's canonical JSON (stable content hash)
attention_mask      list<int8>       only with ``pad_to == "max_length"``: 1 on real tokens, 0 on padding
=================== ================ =====================================================================

Audit columns (also always present): ``format`` (string), ``num_turns`` (int32: messages in the
conversation as rendered), ``num_trained_turns`` (int32: assistant turns with at least one trained
token), ``prompt_tokens`` (int32: real tokens that are not trained), ``truncated_tokens`` (int32:
tokens removed by truncation), ``conversation_hash`` (string: sha256 of the normalised conversation,
used for duplicate detection), ``turn`` (int32: -1 when the row holds the whole conversation, else the
index of the assistant message this row supervises: templates that render earlier turns differently
give one row per supervised turn), ``reasoning_tokens`` (int32: trained tokens that are reasoning),
``literal_control_tokens`` (int32: control-token strings of the record's text kept as text),
``row_of_record`` (int32: 0 for a record's first row, 1, 2... for its next rows; records written = rows
with 0), ``split_extra_tokens`` (int32, on a split record's first row: the tokens its rows hold beyond
its longest row, i.e. the prompt tokens that splitting repeats; 0 elsewhere).

Packed datasets (``--pack-length``) hold packed rows instead: several rows per shard row, with
``position_ids``, ``seq_lengths``, ``num_sequences`` and the per-row columns as per-sequence lists (contract:
:mod:`transforms.packing.rows`, ``docs/packing.md``); their manifest has a ``packing`` section.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms.nested_lists import NullableLists, nullable_lists_array

SCHEMA_VERSION = 1
FORMAT_NAME = "chatshards"
IGNORE_INDEX = -100
#: Job row keys that reach the audit but are no shard column (so the shards of a job without such records keep
#: their bytes): the row's turns trained by the prompt-mismatch rule (``chat_render.PromptMismatch.to_json()``
#: each), and, on a record's first row, whether any row of the record has one.
PROMPT_MISMATCH_KEY = "prompt_mismatch"
PROMPT_MISMATCH_RECORD_KEY = "prompt_mismatch_record"
MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"
REJECTED_DIR = "rejected"

_BASE_FIELDS = (
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("labels", pa.list_(pa.int32()), nullable=False),
    pa.field("length", pa.int32(), nullable=False),
    pa.field("num_loss_tokens", pa.int32(), nullable=False),
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("index", pa.int64(), nullable=False),
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    pa.field("num_turns", pa.int32(), nullable=False),
    pa.field("num_trained_turns", pa.int32(), nullable=False),
    pa.field("prompt_tokens", pa.int32(), nullable=False),
    pa.field("truncated_tokens", pa.int32(), nullable=False),
    pa.field("conversation_hash", pa.string(), nullable=False),
    pa.field("turn", pa.int32(), nullable=False),
    pa.field("reasoning_tokens", pa.int32(), nullable=False),
    pa.field("literal_control_tokens", pa.int32(), nullable=False),
    pa.field("row_of_record", pa.int32(), nullable=False),
    pa.field("split_extra_tokens", pa.int32(), nullable=False),
)
_ATTENTION_MASK_FIELD = pa.field("attention_mask", pa.list_(pa.int8()), nullable=False)

# The provenance columns of every task other than chat (``--task text|seq2seq|mlm|...``), before the task's
# own columns (``transforms.tasks.base``): ``length`` (tokens the row holds in ``input_ids``),
# ``num_loss_tokens`` (positions the task trains; see the task), ``truncated``/``truncated_tokens`` (tokens
# cut by truncation, all sides together), ``source``/``index``/``record_id`` (as for chat rows; for a block
# of grouped texts: the document its first token comes from), ``content_hash`` (the task's content key, the
# one ``--dedup`` uses), ``row_of_record`` (0 for a record's first row). The chat task keeps its own schema.
TASK_BASE_FIELDS = (
    pa.field("length", pa.int32(), nullable=False),
    pa.field("num_loss_tokens", pa.int32(), nullable=False),
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("truncated_tokens", pa.int32(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("index", pa.int64(), nullable=False),
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("row_of_record", pa.int32(), nullable=False),
)
# Rows that hold several records (blocks of grouped texts) say how many records they account for: the
# documents whose first token is in the row. Shards with this column count records by its sum.
DOCUMENTS_COLUMN = "documents"


class ManifestError(ValueError):
    """A dataset folder is unfinished, from an incompatible version, or corrupted."""


def arrow_schema(*, padded: bool = False, extra_fields: Sequence[pa.Field] = ()) -> pa.Schema:
    """The Arrow schema of a shard.

    Args:
        padded: add the ``attention_mask`` column (rows written with ``--pad-to max_length``).
        extra_fields: further columns appended after the base ones (e.g. image columns).
    """
    fields = list(_BASE_FIELDS)
    if padded:
        fields.append(_ATTENTION_MASK_FIELD)
    fields.extend(extra_fields)
    return pa.schema(fields, metadata={b"chatshards.schema_version": str(SCHEMA_VERSION).encode()})


def task_arrow_schema(task_fields: Sequence[pa.Field]) -> pa.Schema:
    """The Arrow schema of a shard of a task other than chat: :data:`TASK_BASE_FIELDS`, then ``task_fields``."""
    return pa.schema(list(TASK_BASE_FIELDS) + list(task_fields),
                     metadata={b"chatshards.schema_version": str(SCHEMA_VERSION).encode()})


def shard_file_name(shard_index: int, num_shards: int) -> str:
    """``shard-00000-of-00004.arrow`` (0-based index, zero-padded to 5 digits)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} out of range for {num_shards} shards")
    return f"shard-{shard_index:05d}-of-{num_shards:05d}.arrow"


def shard_relative_path(shard_index: int, num_shards: int) -> str:
    """Path of a shard relative to the dataset root, with ``/`` separators (as in the manifest)."""
    return f"{DATA_DIR}/{shard_file_name(shard_index, num_shards)}"


def row_sort_key(source: str, index: int) -> str:
    """The key that orders rows inside a shard and assigns them to shards.

    A hex digest of the row's provenance: looks shuffled (datasets are interleaved), yet depends
    only on the input, never on the runner, bundle sizes or worker count.
    """
    return hashlib.sha256(f"{source}\x00{index}".encode("utf-8")).hexdigest()


def shard_of(sort_key: str, num_shards: int) -> int:
    """The shard (0-based) a row with this sort key goes to: shards split the 64-bit key prefix range
    into ``num_shards`` equal, contiguous ranges, so a key-sorted run of rows covers consecutive shards."""
    return (int(sort_key[:16], 16) * num_shards) >> 64


# json.dumps with these arguments builds a new encoder per call; one shared encoder gives the same text
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    """Canonical JSON text (sorted keys, no whitespace, UTF-8 kept) used for content hashes: the text of
    ``json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``."""
    return _CANONICAL_ENCODER.encode(value)


def record_id_of(value: Any) -> str:
    """The stable content hash of a raw record: sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


_FLOAT_DTYPES = {16: np.float16, 32: np.float32, 64: np.float64}


def numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype of an Arrow integer or floating-point type (``pa.int32()`` -> ``np.int32``) without
    ``DataType.to_pandas_dtype``, which imports pandas (about 0.2 s at start-up)."""
    if pa.types.is_integer(arrow_type):
        return np.dtype(f"{'int' if pa.types.is_signed_integer(arrow_type) else 'uint'}{arrow_type.bit_width}")
    if pa.types.is_floating(arrow_type):
        return np.dtype(_FLOAT_DTYPES[arrow_type.bit_width])
    return np.dtype(arrow_type.to_pandas_dtype())


def _is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _is_nested_numeric(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_list(arrow_type) and pa.types.is_list(arrow_type.value_type)
            and _is_numeric(arrow_type.value_type.value_type))


def numpy_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """A 1-D numpy array as an Arrow array of the numeric ``arrow_type`` over the same memory (converted to
    its numpy dtype first when needed)."""
    values = np.ascontiguousarray(values, dtype=numpy_dtype(arrow_type))
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def numpy_values(array: pa.Array) -> np.ndarray:
    """The values of a numeric or boolean Arrow array without nulls as a numpy array (a view for numbers,
    a copy for bit-packed booleans), read from its buffers: ``Array.to_numpy`` imports pandas (about 1.2 s
    in a fresh worker process)."""
    n, offset = len(array), array.offset
    if pa.types.is_boolean(array.type):
        bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little", count=offset + n)[offset:].astype(bool)
    values = np.frombuffer(array.buffers()[1], dtype=numpy_dtype(array.type), count=offset + n)
    return values[offset:]


def list_offsets(array: pa.Array) -> np.ndarray:
    """The offsets (``len + 1`` values) of a list array, as numpy, without pandas (see :func:`numpy_values`)."""
    kind = np.int64 if pa.types.is_large_list(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=kind, count=array.offset + len(array) + 1)
    return offsets[array.offset:]


def column_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """A non-null column of Python values (ints, floats, bools, strs) as an Arrow array, built from buffers.

    Same array as ``pa.array(values, type=arrow_type)``, without its first-call cost: ``pa.array`` imports
    pandas to check for pandas objects (about 0.3 s at start-up). Anything else (None, nested or binary
    values) goes through ``pa.array``."""
    n = len(values)
    try:
        if _is_numeric(arrow_type):
            return numpy_array(np.asarray(values, dtype=numpy_dtype(arrow_type)), arrow_type)
        if pa.types.is_boolean(arrow_type) and all(type(v) is bool for v in values):
            bits = np.packbits(np.asarray(values, dtype=np.bool_), bitorder="little")
            return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(bits)])
        if pa.types.is_string(arrow_type) and all(type(v) is str for v in values):
            encoded = [v.encode("utf-8") for v in values]
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
            data = b"".join(encoded)
            return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    except (TypeError, ValueError, OverflowError):  # not plain values of that type: let pa.array decide
        pass
    return pa.array(values, type=arrow_type)


def table_from_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a shard table from row dicts (``input_ids``/``labels`` may be numpy int32 arrays).

    List columns of numbers are assembled from one concatenated values buffer and an offsets array, and
    scalar columns from buffers (:func:`column_array`), so building a shard goes through neither Python
    lists of ints nor ``pa.array`` for the text columns. A ``list<list<number>>`` column whose rows all hold
    :class:`transforms.nested_lists.NullableLists` is assembled from their buffers too
    (:func:`transforms.nested_lists.nullable_lists_array`); with Python lists it goes through ``pa.array``.
    """
    columns = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if _is_nested_numeric(field.type):
            if all(type(v) is NullableLists for v in values):
                column = nullable_lists_array(values, field.type, numpy_dtype(field.type.value_type.value_type))
            else:
                column = pa.array([v.to_pylist() if type(v) is NullableLists else v for v in values], type=field.type)
        elif pa.types.is_list(field.type) and _is_numeric(field.type.value_type):
            value_type = field.type.value_type
            np_dtype = numpy_dtype(value_type)
            arrays = [np.asarray(v, dtype=np_dtype) for v in values]
            lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
            offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np_dtype)
            column = pa.ListArray.from_arrays(numpy_array(offsets, pa.int32()), numpy_array(flat, value_type))
        elif pa.types.is_list(field.type):  # lists of strings or bytes (vision columns)
            value_type = field.type.value_type
            arrays = [np.asarray(v, dtype=object) for v in values]
            lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
            offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=object)
            column = pa.ListArray.from_arrays(numpy_array(offsets, pa.int32()), pa.array(flat, value_type))
        else:
            column = column_array(values, field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def write_ipc_stream(sink: Any, table: pa.Table) -> None:
    """Write ``table`` to ``sink`` (a file-like object) as an uncompressed Arrow IPC stream.

    The rows go in one record batch. A table without rows is written as its schema followed by one
    *empty* record batch (not by the schema alone): readers that assemble their columns from the
    stream's batches, ``datasets.Dataset.from_file`` among them, fail on a stream without any
    ("cannot construct ChunkedArray from empty vector and omitted type").
    """
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if table.num_rows == 0:
            writer.write_batch(empty_record_batch(table.schema))
        else:
            writer.write_table(table, max_chunksize=table.num_rows)


def empty_record_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A record batch with ``schema`` and no rows."""
    return pa.RecordBatch.from_arrays([pa.array([], type=field.type) for field in schema], schema=schema)


def ipc_stream_bytes(table: pa.Table) -> bytes:
    """Serialise a table as an uncompressed Arrow IPC stream (memory-mappable, deterministic bytes;
    see :func:`write_ipc_stream`, an empty table included)."""
    sink = io.BytesIO()
    write_ipc_stream(sink, table)
    return sink.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str, *, chunk_size: int = 1 << 22) -> str:
    """sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The exact bytes written to ``manifest.json`` (sorted keys, 2-space indent, trailing newline)."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def load_manifest(root: str) -> dict:
    """Read and validate ``<root>/manifest.json`` of a local dataset folder, as a whole: the manifest itself
    (:func:`validate_manifest`) and its agreement with the folder (:func:`check_data_folder`: ``data/`` holds
    exactly the listed shards).

    Raises:
        ManifestError: no manifest (unfinished or crashed run), unreadable JSON, a schema version
            this code cannot read, missing required keys, counts that disagree, malformed checksums, or a
            ``data/`` folder that holds shards the manifest does not list.
    """
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError(
            f"{root!r} has no {MANIFEST_NAME}: it is not a finished chatshards dataset "
            "(the job writes the manifest last, so a crashed or running job leaves none)"
        )
    try:
        with open(path, "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
    _check_entries(manifest, path)
    shard_paths(root, manifest)  # paths that leave the folder, or name one file twice, before any count
    check_data_folder(root, manifest, where=path)  # a dropped entry is named as such, before the counts
    _check_whole(manifest, path)
    return manifest


_SHA256 = re.compile(r"[0-9a-f]{64}")
_ZERO_SHA256 = "0" * 64
_SPECIAL_TOKENS = ("pad", "eos", "bos")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _check_sha256(value: Any, what: str, where: str) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value) or value == _ZERO_SHA256:
        raise ManifestError(f"{where}: {what} has sha256 {value!r}, not a sha256 digest (64 lowercase hex digits); "
                            "the manifest was edited or damaged")


def _check_tokenizer(tokenizer: Any, where: str) -> None:
    """The ``tokenizer`` block: a vocabulary hash, and for pad/eos (and bos where recorded) an id key that is
    ``null`` or a token id, ``null`` exactly when the token itself is (where the token is recorded too)."""
    if not isinstance(tokenizer, dict):
        raise ManifestError(f"{where}: 'tokenizer' must be an object")
    if not isinstance(tokenizer.get("vocab_hash"), str) or not tokenizer["vocab_hash"]:
        raise ManifestError(f"{where}: tokenizer.vocab_hash is missing or empty")
    vocab_size = tokenizer.get("vocab_size")
    if "vocab_size" in tokenizer and (not _count(vocab_size) or vocab_size == 0):
        raise ManifestError(f"{where}: tokenizer.vocab_size is {vocab_size!r}, not a vocabulary size")
    for role in _SPECIAL_TOKENS:
        key = f"{role}_token_id"
        if key not in tokenizer:
            if role == "bos":
                continue  # older manifests and the synthetic datasets name pad and eos only
            raise ManifestError(f"{where}: tokenizer.{key} is missing (null when the tokenizer has no {role} token)")
        value = tokenizer[key]
        if value is not None and not _count(value):
            raise ManifestError(f"{where}: tokenizer.{key} is {value!r}, not a token id")
        token = tokenizer.get(f"{role}_token", value)
        if f"{role}_token" in tokenizer and (token is None) != (value is None):
            raise ManifestError(f"{where}: tokenizer.{role}_token is {token!r} but tokenizer.{key} is {value!r}; "
                                "the manifest was edited or damaged")


def _check_counts(manifest: dict, where: str) -> None:
    """Counts agree with the shard entries, the rejected files and each other, as far as the manifest has them."""
    counts, shards = manifest["counts"], manifest["shards"]
    if not isinstance(counts, dict):
        raise ManifestError(f"{where}: 'counts' must be an object")
    for key, value in counts.items():
        if not _count(value):
            raise ManifestError(f"{where}: counts.{key} is {value!r}, not a count")
    rows = sum(shard["rows"] for shard in shards)
    # records written: fewer than the rows when a record gives several rows, more when a row is a block of
    # grouped texts from several records (the shard entries' "records" add up to counts.written)
    records = sum(shard.get("records", shard["rows"]) for shard in shards)
    expected = {"written": records, "rows": rows}
    if all("tokens" in shard for shard in shards):
        expected["tokens"] = sum(shard["tokens"] for shard in shards)
    rejected_files = manifest.get("rejected_files")
    if isinstance(rejected_files, list) and all(isinstance(e, dict) and "rows" in e for e in rejected_files):
        expected["rejected"] = sum(entry["rows"] for entry in rejected_files)
    by_reason = manifest.get("rejected_by_reason")
    for key, value in expected.items():
        if key in counts and counts[key] != value:
            what = {"written": f"records (the shards hold {value})", "rows": f"rows (the shards hold {value})",
                    "tokens": f"tokens (the shards hold {value})",
                    "rejected": f"rejections (the rejected files hold {value})"}[key]
            raise ManifestError(f"{where}: counts.{key} is {counts[key]!r} but the manifest lists {what}")
    if isinstance(by_reason, dict) and "rejected" in counts:
        if not all(_count(v) for v in by_reason.values()) or sum(by_reason.values()) != counts["rejected"]:
            raise ManifestError(f"{where}: rejected_by_reason {by_reason!r} does not add up to counts.rejected "
                                f"{counts['rejected']!r}")
    if all(key in counts for key in ("read", "written", "rejected")):
        # a mixture (a job config's datasets list) skips some records and repeats others: it took
        # read - mixture_skipped + mixture_repeats examples, each written or rejected
        taken = counts["read"] - counts.get("mixture_skipped", 0) + counts.get("mixture_repeats", 0)
        if taken != counts["written"] + counts["rejected"]:
            mixture = " - mixture_skipped + mixture_repeats" if "mixture_skipped" in counts else ""
            raise ManifestError(f"{where}: counts.read is {counts['read']!r} but {counts['written']} records were "
                                f"written and {counts['rejected']} rejected (read{mixture} = written + rejected)")
    totals = manifest.get("totals")
    if isinstance(totals, dict):
        for key, column in (("rows", "rows"), ("tokens", "tokens"), ("loss_tokens", "loss_tokens")):
            if key in totals and all(column in shard for shard in shards) and \
                    totals[key] != sum(shard[column] for shard in shards):
                raise ManifestError(f"{where}: totals.{key} is {totals[key]!r} but the shards hold "
                                    f"{sum(shard[column] for shard in shards)}")
    if "num_shards" in manifest and manifest["num_shards"] != len(shards):
        raise ManifestError(f"{where}: num_shards is {manifest['num_shards']!r} but {len(shards)} shard(s) are listed")


def validate_manifest(manifest: Any, *, where: str = MANIFEST_NAME) -> dict:
    """Check the manifest as a whole; return it unchanged.

    Checked: the schema version; the required keys; every shard entry (a plain relative path named once,
    counts that are counts, a well-formed sha256: 64 lowercase hex digits, not all zeros); the rejected files'
    entries the same way; the counts against the shard entries and each other (``written`` = the shards'
    records, ``rows`` = their rows, ``rejected`` = the rejected files' rows = the sum of ``rejected_by_reason``,
    ``read`` = ``written`` + ``rejected``, ``totals``, ``num_shards``; each as far as the manifest records it);
    the tokenizer block (:func:`_check_tokenizer`).

    Raises:
        ManifestError: naming the first problem found.
    """
    _check_entries(manifest, where)
    _check_whole(manifest, where)
    return manifest


def _check_entries(manifest: Any, where: str) -> None:
    """The schema version, the required keys and each shard and rejected-file entry on its own."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: manifest must be a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: schema_version {version!r} is not supported by this chatshards "
            f"(reads version {SCHEMA_VERSION}); re-run the job or install the matching version"
        )
    for key in ("counts", "shards", "tokenizer", "config", "config_fingerprint"):
        if key not in manifest:
            raise ManifestError(f"{where}: required key {key!r} is missing")
    if not isinstance(manifest["shards"], list):
        raise ManifestError(f"{where}: 'shards' must be a list")
    seen: set[str] = set()
    for shard in manifest["shards"]:
        if not isinstance(shard, dict):
            raise ManifestError(f"{where}: shard entry {shard!r} is not an object")
        for key in ("path", "rows", "tokens", "bytes", "sha256"):
            if key not in shard:
                raise ManifestError(f"{where}: shard entry {shard!r} lacks {key!r}")
        check_shard_path(shard["path"], where=where)
        if shard["path"] in seen:
            raise ManifestError(f"{where}: shard {shard['path']!r} is listed twice; refusing to serve its rows twice")
        seen.add(shard["path"])
        for key in ("rows", "bytes", "tokens", "records", "loss_tokens"):
            if key in shard and not _count(shard[key]):
                raise ManifestError(f"{where}: shard {shard['path']!r} has {key}={shard[key]!r}, not a count")
        _check_sha256(shard["sha256"], f"shard {shard['path']!r}", where)
    rejected_files = manifest.get("rejected_files")
    if rejected_files is not None:
        if not isinstance(rejected_files, list) or not all(isinstance(e, dict) for e in rejected_files):
            raise ManifestError(f"{where}: 'rejected_files' must be a list of objects")
        for entry in rejected_files:
            for key in ("rows", "bytes"):
                if key in entry and not _count(entry[key]):
                    raise ManifestError(f"{where}: rejected file {entry.get('path')!r} has {key}={entry[key]!r}, "
                                        "not a count")
            if "sha256" in entry:
                _check_sha256(entry["sha256"], f"rejected file {entry.get('path')!r}", where)


def _check_whole(manifest: dict, where: str) -> None:
    """What the entries must agree on: the counts and totals, and the tokenizer block."""
    _check_counts(manifest, where)
    _check_tokenizer(manifest["tokenizer"], where)


# Files a library writes beside the files it reads: Hugging Face datasets' cache-<fingerprint>.arrow (with
# _NNNNN_of_NNNNN before .arrow under num_proc) when a Dataset.from_file(shard) is mapped, shuffled or filtered,
# and its tempfile names while it writes one. Derived from the shards, never data of their own: a folder holding
# them stays readable, and --overwrite deletes them (pipeline/launch/output_folder.py; docs/huggingface.md).
DERIVED_FILE = re.compile(r"cache-[A-Za-z0-9_.-]+\.arrow|tmp[a-z0-9_]{8}")


def check_data_folder(root: str, manifest: Mapping[str, Any], *, where: str = MANIFEST_NAME) -> None:
    """Raise :class:`ManifestError` when ``<root>/data/`` holds a file that no shard entry names (a shard
    dropped from a hand-edited manifest, or another run's file). Files are compared by real path, so a listed
    shard that is a symbolic link to another file of ``data/`` names that file too; names starting with ``.``
    and files a library derived from the shards (:data:`DERIVED_FILE`) are ignored. Missing shards are reported
    where they are opened."""
    data = os.path.join(root, DATA_DIR)
    try:
        names = sorted(os.listdir(data))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise ManifestError(f"{data}: cannot be listed: {exc}") from exc
    listed = {os.path.realpath(os.path.join(root, *shard["path"].split("/"))) for shard in manifest["shards"]}
    for name in names:
        path = os.path.join(data, name)
        if name.startswith(".") or DERIVED_FILE.fullmatch(name) or not os.path.isfile(path):
            continue
        if os.path.realpath(path) not in listed:
            raise ManifestError(f"{where}: {DATA_DIR}/{name} is not listed in the manifest ({len(listed)} shard(s) "
                                "listed): a shard entry was dropped or another run's file was left there; refusing "
                                "to serve a partial dataset")


def check_shard_path(path: Any, *, where: str = MANIFEST_NAME) -> None:
    """Refuse a manifest shard path that could name a file outside the dataset folder.

    A shard path is relative to the dataset root, ``/``-separated, without empty, ``.`` or ``..``
    parts, backslashes, NUL bytes or a drive letter (the job writes ``data/shard-...arrow``).
    Symbolic links are checked where the path is resolved (:func:`shard_paths`).
    """
    if not isinstance(path, str) or not path:
        raise ManifestError(f"{where}: shard path {path!r} is not a non-empty string")
    parts = path.split("/")
    if (path.startswith("/") or "\\" in path or "\x00" in path or (path[1:2] == ":" and path[0].isalpha())
            or any(part in ("", ".", "..") for part in parts)):
        raise ManifestError(
            f"{where}: shard path {path!r} leaves the dataset folder or is not a plain relative path "
            "('/'-separated, no '.', '..' or empty parts, not absolute); refusing to read it"
        )


def verify_shard_file(path: str, *, expected_sha256: str, expected_bytes: int | None = None) -> None:
    """Raise :class:`ManifestError` naming ``path`` when the file is missing or differs from the manifest."""
    if not os.path.isfile(path):
        raise ManifestError(f"shard {path} listed in the manifest is missing")
    if expected_bytes is not None and os.path.getsize(path) != expected_bytes:
        raise ManifestError(
            f"shard {path} is corrupted: {os.path.getsize(path)} bytes, manifest says {expected_bytes}"
        )
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ManifestError(f"shard {path} is corrupted: sha256 {actual} != manifest {expected_sha256}")


def shard_paths(root: str, manifest: Mapping[str, Any]) -> list[str]:
    """Local paths (``root`` joined with each entry's path) of the shards listed in the manifest, in
    manifest order.

    Raises:
        ManifestError: a path that is not a plain relative path (:func:`check_shard_path`), that
            resolves outside ``root`` once symbolic links are followed, or two entries that name the
            same file (through a link, for example).
    """
    return _paths_inside(root, [shard["path"] for shard in manifest["shards"]], "shard")


def rejected_paths(root: str, manifest: Mapping[str, Any]) -> list[str]:
    """Local paths of the manifest's ``rejected_files``, checked as :func:`shard_paths` checks shards."""
    entries = manifest.get("rejected_files") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise ManifestError(f"{MANIFEST_NAME}: 'rejected_files' must be a list of objects with a 'path'")
    return _paths_inside(root, [entry["path"] for entry in entries], "rejected file")


def check_dataset_paths(root: str, manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` unless every file the manifest lists (shards, rejected files) is a
    plain relative path that stays inside ``root`` with symbolic links followed, each named once. Tools
    that open a dataset's files by the manifest's paths (``pipeline.audit``, ``pipeline.inspect``) call
    this before reading any of them."""
    shard_paths(root, manifest)
    rejected_paths(root, manifest)


def _paths_inside(root: str, relatives: list, what: str) -> list[str]:
    real_root = os.path.realpath(root)
    paths: list[str] = []
    seen: dict[str, str] = {}
    for relative in relatives:
        check_shard_path(relative)
        path = os.path.join(root, *relative.split("/"))
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise ManifestError(
                f"{what} {relative!r} resolves to {real}, outside the dataset folder {real_root} "
                "(a symbolic link pointing out?); refusing to read it"
            )
        if real in seen:
            raise ManifestError(f"{what}s {seen[real]!r} and {relative!r} are the same file {real}; "
                                "refusing to read its rows twice")
        seen[real] = relative
        paths.append(path)
    return paths
