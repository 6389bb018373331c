"""Row assembly: the one place a shard row (see :mod:`transforms.shard_format`) is built.

:func:`assemble_row` takes a truncated row's token arrays and the record's provenance and returns
the row dict: the base columns, the columns a part adds (images), a ``sort_key`` used for sharding,
and ``attention_mask`` when rows are padded.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np

from transforms.chat_render import WHOLE_CONVERSATION
from transforms.formats import Conversation
from transforms.labels import count_trained_turns, labels_from_mask, pad_row
from transforms.reading import RawRecord
from transforms.shard_format import canonical_json, record_id_of, row_sort_key
from transforms.truncation import Truncated


def conversation_hash(conversation: Conversation) -> str:
    """sha256 of the normalised conversation: roles, whitespace-collapsed text, tool calls, tools.

    Two records with the same hash are exact duplicates for training purposes even when they differ
    in irrelevant fields (ids, metadata) or in surrounding whitespace.
    """
    normalised = []
    for message in conversation.messages:
        item = {"role": message.get("role"), "content": " ".join(str(message.get("content", "")).split())}
        if message.get("tool_calls"):
            item["tool_calls"] = message["tool_calls"]
        normalised.append(item)
    content = {"messages": normalised, "tools": list(conversation.tools or [])}
    if conversation.images:  # same text with other images is not a duplicate
        content["images"] = list(conversation.images)
    payload = canonical_json(content)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def row_sort_key_of(source: str, index: int, turn: int) -> str:
    """The sort key of a row: the record's key, then its turn (rows of one record stay together, in order)."""
    key = row_sort_key(source, index)
    return key if turn == WHOLE_CONVERSATION else f"{key}:{turn:08d}"


def assemble_row(*, raw: RawRecord, conversation: Conversation, truncated: Truncated, turn: int, loss: str,
                 reasoning_trained: bool, digest: str, literal_control_tokens: int,
                 pad_to: int | None = None, pad_token_id: int | None = None,
                 extra_columns: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The shard row of one truncated token row.

    Args:
        raw, conversation: the record and its example (provenance, format, message counts).
        truncated: the token arrays and the kept window (:func:`transforms.truncation.truncate`).
        turn: the supervised turn of this row (``WHOLE_CONVERSATION`` for the whole conversation).
        loss: ``--loss``; under ``all`` every assistant message counts as a trained turn.
        reasoning_trained: whether the row's reasoning tokens are trained (counted in ``reasoning_tokens``).
        digest: the ``conversation_hash`` column.
        literal_control_tokens: control-token strings kept as text in the record.
        pad_to: pad the row to this many tokens (``--pad-to max_length``), with ``pad_token_id``.
        extra_columns: columns a part adds (images).

    ``row_of_record`` and ``split_extra_tokens`` are 0; the builder sets them for records of several rows.
    """
    arrays = truncated.arrays
    lo, hi = truncated.window
    full_length = truncated.full_length
    input_ids, mask = arrays.input_ids[lo:hi], arrays.mask[lo:hi]
    labels = labels_from_mask(input_ids, mask)
    length = len(input_ids)
    num_loss = int(np.count_nonzero(mask))
    if loss == "all":
        trained_turns = sum(1 for m in conversation.messages if m.get("role") == "assistant")
    else:
        trained_turns = count_trained_turns(arrays.turn_ranges, arrays.mask, truncated.window)
    row = {
        "input_ids": input_ids,
        "labels": labels,
        "length": length,
        "num_loss_tokens": num_loss,
        "truncated": full_length > length,
        "source": raw.source,
        "index": raw.index,
        "record_id": record_id_of(raw.value),
        "format": conversation.format,
        "num_turns": arrays.num_messages,
        "num_trained_turns": trained_turns,
        "prompt_tokens": length - num_loss,
        "truncated_tokens": full_length - length,
        "conversation_hash": digest,
        "turn": turn,
        "reasoning_tokens": int(np.count_nonzero(arrays.reasoning[lo:hi] & mask)) if reasoning_trained else 0,
        "literal_control_tokens": literal_control_tokens,
        "row_of_record": 0,
        "split_extra_tokens": 0,
        "sort_key": row_sort_key_of(raw.source, raw.index, turn),
    }
    if extra_columns:
        row.update(extra_columns)
    if pad_to is not None:
        row["input_ids"], row["labels"], row["attention_mask"] = pad_row(
            input_ids, labels, length=pad_to, pad_token_id=pad_token_id)
    return row
