"""Write a small, valid chatshards dataset folder without running the job.

Used by the tests, the benchmark and the examples (so that they run before the real job's output
exists). The folder follows :mod:`transforms.shard_format` exactly: Arrow IPC stream shards under
``data/`` built with :func:`~transforms.shard_format.arrow_schema`, and ``manifest.json`` written
last through :func:`~transforms.shard_format.manifest_bytes`.

Rows look like rendered chat examples: random token ids in ``[first_token_id, vocab_size)`` ending
with ``eos_token_id``; the first ``prompt_fraction`` of every row is a prompt whose labels are
``IGNORE_INDEX`` (-100), the rest (the "answer", EOS included) is trained.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
import pyarrow as pa

from .. import shard_format as sf

__all__ = ["write_synthetic_dataset", "lognormal_lengths"]


def lognormal_lengths(
    num_rows: int, *, seed: int = 0, low: int = 50, high: int = 2000, mean: float = 5.8, sigma: float = 0.8
) -> np.ndarray:
    """Realistic chat lengths: lognormal (median ``exp(mean)`` ~ 330 tokens) clipped to ``[low, high]``."""
    rng = np.random.default_rng([seed, 1])
    return np.clip(rng.lognormal(mean, sigma, num_rows), low, high).astype(np.int64)


def _list_column(flat: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), pa.array(flat, value_type))


def _shard_table(
    lengths: np.ndarray,
    first_row: int,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    first_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    prompt_fraction: float,
    pad_to: int | None,
) -> tuple[pa.Table, int]:
    """One shard's table (columns built vectorised, no Python lists of ints); returns (table, real tokens)."""
    n = len(lengths)
    real = lengths.astype(np.int64)
    width = np.full(n, pad_to, dtype=np.int64) if pad_to else real
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(width, out=offsets[1:])
    total = int(offsets[-1])
    # position of every token inside its row
    pos = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], width)
    row_len = np.repeat(real, width)
    ids = rng.integers(first_token_id, vocab_size, size=total, dtype=np.int32)
    ids[pos == row_len - 1] = eos_token_id
    prompt = np.maximum(1, (real * prompt_fraction).astype(np.int64))
    prompt = np.minimum(prompt, real - 1)  # at least one trained token (the EOS)
    labels = ids.copy()
    labels[pos < np.repeat(prompt, width)] = sf.IGNORE_INDEX
    is_pad = pos >= row_len
    ids[is_pad] = pad_token_id
    labels[is_pad] = sf.IGNORE_INDEX
    schema = sf.arrow_schema(padded=bool(pad_to))
    index = np.arange(first_row, first_row + n, dtype=np.int64)
    record_ids = [hashlib.sha256(f"synthetic\x00{i}".encode()).hexdigest() for i in index.tolist()]
    columns = {
        "input_ids": _list_column(ids, offsets, pa.int32()),
        "labels": _list_column(labels, offsets, pa.int32()),
        "length": pa.array(real.astype(np.int32)),
        "num_loss_tokens": pa.array((real - prompt).astype(np.int32)),
        "truncated": pa.array(np.zeros(n, dtype=bool)),
        "source": pa.array(["synthetic.jsonl"] * n, pa.string()),
        "index": pa.array(index),
        "record_id": pa.array(record_ids, pa.string()),
        "format": pa.array(["messages"] * n, pa.string()),
        "num_turns": pa.array(np.full(n, 2, dtype=np.int32)),
        "num_trained_turns": pa.array(np.ones(n, dtype=np.int32)),
        "prompt_tokens": pa.array(prompt.astype(np.int32)),
        "truncated_tokens": pa.array(np.zeros(n, dtype=np.int32)),
        "conversation_hash": pa.array(record_ids, pa.string()),
        "turn": pa.array(np.full(n, -1, dtype=np.int32)),
        "reasoning_tokens": pa.array(np.zeros(n, dtype=np.int32)),
        "literal_control_tokens": pa.array(np.zeros(n, dtype=np.int32)),
        "row_of_record": pa.array(np.zeros(n, dtype=np.int32)),
        "split_extra_tokens": pa.array(np.zeros(n, dtype=np.int32)),
    }
    if pad_to:
        columns["attention_mask"] = _list_column((~is_pad).astype(np.int8), offsets, pa.int8())
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    return table, int(real.sum())


def _stream_bytes(table: pa.Table, chunk_rows: int | None) -> bytes:
    if not chunk_rows or table.num_rows == 0:
        return sf.ipc_stream_bytes(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=chunk_rows)
    return sink.getvalue().to_pybytes()


def write_synthetic_dataset(
    root: str | os.PathLike,
    *,
    num_rows: int = 256,
    num_shards: int = 2,
    lengths: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    vocab_size: int = 512,
    pad_token_id: int | None = 0,
    eos_token_id: int = 2,
    bos_token_id: int | None = 1,
    first_token_id: int = 3,
    prompt_fraction: float = 0.4,
    pad_to: int | None = None,
    chunk_rows: int | None = None,
) -> dict:
    """Write a finished dataset folder at ``root`` and return its manifest.

    Args:
        num_rows: rows in total (ignored when ``lengths`` is given).
        num_shards: rows are split into this many contiguous shards (``data/shard-XXXXX-of-YYYYY.arrow``).
        lengths: token count of every row (default: :func:`lognormal_lengths` clipped to 8..64,
            small enough for fast tests). Every length must be >= 2.
        pad_token_id / eos_token_id / bos_token_id: written to the manifest's ``tokenizer`` block;
            rows end with ``eos_token_id``. ``pad_token_id`` may equal ``eos_token_id``.
        pad_to: write rows padded to this width with an ``attention_mask`` column (``--pad-to max_length``).
        chunk_rows: write each shard as several record batches of at most this many rows.
    """
    root = os.fspath(root)
    if lengths is None:
        lengths = lognormal_lengths(num_rows, seed=seed, low=8, high=64, mean=3.2, sigma=0.5)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.min() < 2:
        raise ValueError("synthetic rows need at least 2 tokens (a prompt token and the EOS)")
    if pad_to is not None and len(lengths) and lengths.max() > pad_to:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({lengths.max()})")
    num_rows = len(lengths)
    os.makedirs(os.path.join(root, sf.DATA_DIR), exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    bounds = np.linspace(0, num_rows, num_shards + 1).astype(np.int64)
    shards = []
    total_tokens = 0
    for k in range(num_shards):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        table, tokens = _shard_table(
            lengths[lo:hi], lo, rng, vocab_size=vocab_size, first_token_id=first_token_id,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id if pad_token_id is not None else eos_token_id,
            prompt_fraction=prompt_fraction, pad_to=pad_to,
        )
        data = _stream_bytes(table, chunk_rows)
        rel = sf.shard_relative_path(k, num_shards)
        with open(os.path.join(root, *rel.split("/")), "wb") as handle:
            handle.write(data)
        shards.append({"path": rel, "rows": hi - lo, "tokens": tokens, "bytes": len(data),
                       "sha256": sf.sha256_hex(data)})
        total_tokens += tokens
        del table, data
    config = {"max_length": int(pad_to or (lengths.max() if num_rows else 0)),
              "pad_to": "max_length" if pad_to else None,
              "num_shards": num_shards, "synthetic_seed": seed}
    manifest = {
        "format": sf.FORMAT_NAME,
        "schema_version": sf.SCHEMA_VERSION,
        "tokenizer": {"name": "synthetic-wordlevel", "vocab_hash": f"synthetic-{vocab_size}", "vocab_size": vocab_size,
                      "pad_token_id": pad_token_id, "eos_token_id": eos_token_id, "bos_token_id": bos_token_id},
        "shards": shards,
        "counts": {"rows": num_rows, "tokens": total_tokens, "rejected": 0},
        "config": config,
        "config_fingerprint": sf.sha256_hex(sf.canonical_json(config).encode()),
    }
    with open(os.path.join(root, sf.MANIFEST_NAME), "wb") as handle:
        handle.write(sf.manifest_bytes(manifest))
    return manifest
