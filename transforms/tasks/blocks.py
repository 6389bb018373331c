"""``--group-texts N``: the documents of a batch concatenated and cut into blocks of ``N`` tokens.

What ``run_clm.py`` / ``run_mlm.py``'s ``group_texts`` do inside each ``datasets.map(batched=True)`` batch
(1,000 texts there): here the batch is the job's batch of records (``--batch-size``, records of one input
file, in file order; the same batches on both engines and any worker count), so a block never spans two
files or two batches and the output does not depend on how the job was run.

Nothing is lost silently at block edges:

* ``--group-remainder keep`` (default): the batch's last, shorter block is kept (the collator pads it;
  its labels are -100 on padding).
* ``--group-remainder drop``: ``run_clm.py``'s rule: when the batch holds at least one full block, the
  tokens after the last full block are dropped; a batch shorter than one block stays one short block.
  The dropped tokens are counted on the last block (``truncated``, ``truncated_tokens``); a document
  whose first token falls in the dropped part has no row at all and is rejected as ``group_remainder``
  (so read = written + rejected still holds).

A document is counted (``documents`` column) in the block that holds its first token; a block's
``source``/``index``/``record_id`` are those of the document its first token comes from, and its
``row_of_record`` counts the earlier blocks that start in that document.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected
from transforms.shard_format import DOCUMENTS_COLUMN, record_id_of, row_sort_key

GROUP_REMAINDER_MODES = ("keep", "drop")


@dataclass
class Document:
    """One record's tokens before grouping: ``arrays`` (``input_ids`` and any other per-token column, equal
    lengths), the record (``raw``) and its position in the batch."""

    raw: Any
    position: int
    arrays: Mapping[str, np.ndarray]

    @property
    def length(self) -> int:
        return len(self.arrays["input_ids"])


def block_digest(ids: np.ndarray) -> str:
    """The ``content_hash`` of a block: sha256 of its token ids (int32, little-endian)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i4").tobytes()).hexdigest()


def group_documents(documents: Sequence[Document], *, block_size: int, remainder: str,
                    num_loss_tokens=None) -> tuple[dict[int, list[dict]], dict[int, Exception]]:
    """Cut the concatenated ``documents`` (batch order, each at least one token) into blocks.

    Returns ``(rows by record position, rejections by record position)``: each block row holds the
    per-token columns, :data:`transforms.shard_format.TASK_BASE_FIELDS` and ``documents``, and a
    ``sort_key`` (the batch's first record's key, then the block number). ``num_loss_tokens(arrays)``
    gives a block's trained positions (default: every token).
    """
    if not documents:
        return {}, {}
    columns = list(documents[0].arrays)
    lengths = np.fromiter((d.length for d in documents), dtype=np.int64, count=len(documents))
    starts = np.zeros(len(documents), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    total = int(lengths.sum())
    concatenated = {name: np.concatenate([d.arrays[name] for d in documents]) for name in columns}
    kept = (total // block_size) * block_size if remainder == "drop" and total >= block_size else total
    first = documents[0].raw
    batch_key = row_sort_key(first.source, first.index)
    rows: dict[int, list[dict]] = {}
    rejected: dict[int, Exception] = {}
    doc_of_start = np.searchsorted(starts, np.arange(0, kept, block_size), side="right") - 1
    starts_in_block = np.bincount(starts[starts < kept] // block_size, minlength=len(doc_of_start))
    seen_in_doc: dict[int, int] = {}
    record_ids: dict[int, str] = {}
    for b, lo in enumerate(range(0, kept, block_size)):
        hi = min(lo + block_size, kept)
        owner = int(doc_of_start[b])
        doc = documents[owner]
        raw = doc.raw
        arrays = {name: concatenated[name][lo:hi] for name in columns}
        ids = arrays["input_ids"]
        last = hi == kept
        cut = total - kept if last else 0
        if owner not in record_ids:
            record_ids[owner] = record_id_of(raw.value)
        row = {
            **arrays,
            "length": hi - lo,
            "num_loss_tokens": (hi - lo) if num_loss_tokens is None else int(num_loss_tokens(arrays)),
            "truncated": cut > 0,
            "truncated_tokens": cut,
            "source": raw.source,
            "index": raw.index,
            "record_id": record_ids[owner],
            "content_hash": block_digest(ids),
            "row_of_record": seen_in_doc.get(owner, 0),
            DOCUMENTS_COLUMN: int(starts_in_block[b]),
            "sort_key": f"{batch_key}:{b:08d}",
        }
        seen_in_doc[owner] = seen_in_doc.get(owner, 0) + 1
        rows.setdefault(doc.position, []).append(row)
    for k in np.flatnonzero(starts >= kept):
        doc = documents[int(k)]
        rejected[doc.position] = RecordRejected(
            errors.GROUP_REMAINDER,
            f"the document starts in the last {total - kept} tokens of its batch of {len(documents)} documents "
            f"({total} tokens), after the last full block of {block_size} tokens; --group-remainder drop drops "
            "them (keep writes a shorter last block)")
    return rows, rejected


def regroup(parsed: Sequence[tuple], built: list, *, block_size: int, remainder: str, num_loss_tokens=None) -> list:
    """:meth:`transforms.tasks.base.Task.finish_batch` for tasks that group texts: ``built`` holds per record
    position ``[Document]`` or an exception; returns per position the blocks that start in that record's
    document (possibly none) or an exception."""
    documents = [item[0] for item in built if not isinstance(item, Exception)]
    rows, rejected = group_documents(documents, block_size=block_size, remainder=remainder,
                                     num_loss_tokens=num_loss_tokens)
    out = []
    for position, item in enumerate(built):
        if isinstance(item, Exception):
            out.append(item)
        elif position in rejected:
            out.append(rejected[position])
        else:
            out.append(rows.get(position, []))
    return out
