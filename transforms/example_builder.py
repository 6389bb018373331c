"""Raw record -> training row (or rejection): the per-record work of the job, without Beam.

:class:`ExampleBuilder` is what the Beam DoFn wraps and what tests and notebooks call directly::

    builder = ExampleBuilder(tokenizer=tok, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
    for kind, item in builder.build_batch(raw_records):   # kind is "row" or "rejected"
        ...

Rows follow the shard contract (``transforms.shard_format``) plus a ``sort_key`` used for sharding.
Rejections are ``{"reason", "detail", "source", "index", "record"}``, where ``record`` is the
original record (or the raw text when it did not parse).

Work is batched: every record of a batch is rendered, then all texts are tokenized in one
``encode_batch`` call (the Rust tokenizer, parallel), then labels are derived with numpy.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from transforms import errors
from transforms.chat_render import ChatRenderer, RenderedConversation
from transforms.config import TokenizeOptions
from transforms.errors import RecordRejected
from transforms.formats import Conversation, FormatOptions, to_conversation
from transforms.labels import (
    count_trained_turns,
    labels_from_mask,
    mask_from_ranges,
    pad_row,
    span_token_ranges,
)
from transforms.reading import RawRecord
from transforms.shard_format import canonical_json, record_id_of, row_sort_key
from transforms.tokenizer_loading import special_tokens_for_template

ROW = "row"
REJECTED = "rejected"
PARSED = "parsed"


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
    if getattr(conversation, "images", ()):  # same text with other images is not a duplicate
        content["images"] = list(conversation.images)
    payload = canonical_json(content)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def rejection(raw: RawRecord, reason: str, detail: str) -> dict[str, Any]:
    """A rejected-output line for ``raw``."""
    return {
        "reason": reason,
        "detail": detail,
        "source": raw.source,
        "index": raw.index,
        "record": raw.value if raw.value is not None else raw.raw,
    }


def parse_record(raw: RawRecord, format_options: FormatOptions) -> tuple[str, Any]:
    """Raw record -> ``(PARSED, (raw, conversation))`` or ``(REJECTED, rejection dict)``; never raises."""
    try:
        if raw.value is None:
            raise RecordRejected(errors.INVALID_JSON, raw.error or "record is not valid JSON")
        return PARSED, (raw, to_conversation(raw.value, format_options))
    except RecordRejected as exc:
        return REJECTED, rejection(raw, exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - bad input never crashes the job
        return REJECTED, rejection(raw, errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _rejection_for(raw: RawRecord, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, RecordRejected):
        return rejection(raw, exc.reason, exc.detail)
    return rejection(raw, errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


@dataclass
class _Pending:
    raw: RawRecord
    conversation: Conversation
    rendered: RenderedConversation


class ExampleBuilder:
    """Builds rows from raw records with one tokenizer and one configuration.

    Args:
        tokenizer: a fast ``transformers`` tokenizer with a chat template.
        format_options: record-format options.
        tokenize_options: length, truncation, loss and padding options.
    """

    def __init__(self, *, tokenizer, format_options: FormatOptions, tokenize_options: TokenizeOptions):
        self.tokenizer = tokenizer
        self.format_options = format_options
        self.options = tokenize_options
        self.renderer = ChatRenderer(
            chat_template=tokenizer.chat_template,
            template_variables=special_tokens_for_template(tokenizer),
            loss=tokenize_options.loss,
        )
        self._backend = tokenizer.backend_tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if tokenize_options.pad_to == "max_length" and self.pad_token_id is None:
            raise ValueError("--pad-to max_length needs a tokenizer with a pad or eos token")

    # -- public API ------------------------------------------------------------------------------
    def extra_fields(self) -> tuple:
        """Arrow fields this builder adds to the base shard schema (extensions override)."""
        return ()

    def parse(self, raw: RawRecord) -> tuple[str, Any]:
        """Step 1 (the job's *Parse* stage); see :func:`parse_record`."""
        return parse_record(raw, self.format_options)

    def build_batch(self, raws: Sequence[RawRecord]) -> list[tuple[str, dict[str, Any]]]:
        """Process a batch of raw records; the result has one ``(kind, item)`` per input, in order."""
        parsed = [self.parse(raw) for raw in raws]
        built = iter(self.build_parsed_batch([item for kind, item in parsed if kind == PARSED]))
        return [(kind, item) if kind != PARSED else next(built) for kind, item in parsed]

    def build_parsed_batch(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> list[tuple[str, dict[str, Any]]]:
        """Step 2 (the job's *Tokenize* stage): render, tokenize in one batch, label, truncate."""
        self._start_batch(parsed)
        try:
            results: list[tuple[str, dict[str, Any]] | None] = [None] * len(parsed)
            pending: list[tuple[int, Any]] = []
            for position, (raw, conversation) in enumerate(parsed):
                try:
                    pending.append((position, self._prepare(raw, conversation)))
                except Exception as exc:  # noqa: BLE001 - bad input never crashes the job
                    results[position] = (REJECTED, _rejection_for(raw, exc))
            encodings = self._encode([item.rendered.text for _, item in pending])
            for (position, item), encoding in zip(pending, encodings):
                try:
                    results[position] = (ROW, self._finish(item, encoding))
                except Exception as exc:  # noqa: BLE001
                    results[position] = (REJECTED, _rejection_for(item.raw, exc))
            return results  # type: ignore[return-value]
        finally:
            self._end_batch()

    def _start_batch(self, parsed) -> None:
        """Hook run before a batch is built (extensions prefetch per-batch resources here)."""

    def _end_batch(self) -> None:
        """Hook run after a batch is built, also when it failed."""

    def build(self, raw: RawRecord) -> tuple[str, dict[str, Any]]:
        """Process one raw record."""
        return self.build_batch([raw])[0]

    def iter_build(self, raws: Iterable[RawRecord], *, batch_size: int = 256):
        """Process a stream of raw records in batches, yielding ``(kind, item)`` in input order."""
        batch: list[RawRecord] = []
        for raw in raws:
            batch.append(raw)
            if len(batch) >= batch_size:
                yield from self.build_batch(batch)
                batch = []
        if batch:
            yield from self.build_batch(batch)

    # -- steps -----------------------------------------------------------------------------------
    def _prepare(self, raw: RawRecord, conversation: Conversation) -> _Pending:
        rendered = self._render(conversation, conversation.messages, conversation.trainable)
        return _Pending(raw=raw, conversation=conversation, rendered=rendered)

    def _render(self, conversation: Conversation, messages, trainable) -> RenderedConversation:
        return self.renderer.render(messages, tools=list(conversation.tools) if conversation.tools else None,
                                    trainable=trainable)

    def _encode(self, texts: list[str]):
        if not texts:
            return []
        return self._backend.encode_batch(texts, add_special_tokens=False)

    def _tokens(self, rendered: RenderedConversation, encoding):
        """``(input_ids int32, mask bool, turn token ranges)`` of one rendered conversation."""
        input_ids = np.asarray(encoding.ids, dtype=np.int32)
        mask = mask_from_ranges(len(input_ids), span_token_ranges(encoding, rendered.trained_spans))
        return input_ids, mask, span_token_ranges(encoding, rendered.turn_spans)

    def _finish(self, item: _Pending, encoding) -> dict[str, Any]:
        options = self.options
        input_ids, mask, turn_ranges = self._tokens(item.rendered, encoding)
        full_length = len(input_ids)
        if not mask.any():
            raise RecordRejected(errors.NO_LOSS_TOKENS, "no token of this record is trained under --loss "
                                 f"{options.loss} (e.g. no trainable assistant turn)")
        num_messages = len(item.conversation.messages)
        window = (0, full_length)
        if options.max_length is not None and full_length > options.max_length:
            if options.truncation == "drop":
                raise RecordRejected(errors.TOO_LONG, f"{full_length} tokens > --max-length {options.max_length}")
            if options.truncation == "turns":
                input_ids, mask, turn_ranges, num_messages = self._drop_oldest_turns(
                    item, input_ids, mask, turn_ranges
                )
            n = len(input_ids)
            if n > options.max_length:
                window = (n - options.max_length, n) if options.truncation == "left" else (0, options.max_length)
            else:
                window = (0, n)
            if not mask[window[0]:window[1]].any():
                raise RecordRejected(
                    errors.NO_LOSS_TOKENS,
                    f"truncation to {options.max_length} tokens ({options.truncation}) removed every trained token",
                )
        lo, hi = window
        trained_turns = count_trained_turns(turn_ranges, mask, window)
        input_ids, mask = input_ids[lo:hi], mask[lo:hi]
        labels = labels_from_mask(input_ids, mask)
        length = len(input_ids)
        num_loss = int(mask.sum())
        truncated_tokens = full_length - length
        row = {
            "input_ids": input_ids,
            "labels": labels,
            "length": length,
            "num_loss_tokens": num_loss,
            "truncated": truncated_tokens > 0,
            "source": item.raw.source,
            "index": item.raw.index,
            "record_id": record_id_of(item.raw.value),
            "format": item.conversation.format,
            "num_turns": num_messages,
            "num_trained_turns": trained_turns if options.loss != "all" else sum(
                1 for m in item.conversation.messages if m.get("role") == "assistant"),
            "prompt_tokens": length - num_loss,
            "truncated_tokens": truncated_tokens,
            "conversation_hash": conversation_hash(item.conversation),
            "sort_key": row_sort_key(item.raw.source, item.raw.index),
        }
        if options.pad_to == "max_length":
            row["input_ids"], row["labels"], row["attention_mask"] = pad_row(
                input_ids, labels, length=options.max_length, pad_token_id=self.pad_token_id
            )
        return row

    def _drop_oldest_turns(self, item: _Pending, input_ids, mask, turn_ranges):
        """Drop whole exchanges (a user message and what follows it up to the next user message),
        oldest first, keeping leading system messages, until the rendering fits ``max_length`` or a
        single exchange is left. Returns the new tokens (the caller then cuts on the right if it
        still does not fit) and the number of messages kept."""
        messages = list(item.conversation.messages)
        trainable = list(item.conversation.trainable)
        head = 0
        while head < len(messages) and messages[head].get("role") == "system":
            head += 1
        starts = [i for i in range(head, len(messages)) if messages[i].get("role") == "user"]
        num_messages = len(messages)
        for cut in starts[1:]:
            kept = messages[:head] + messages[cut:]
            candidate = self._render(item.conversation, kept, trainable[:head] + trainable[cut:])
            ids, msk, ranges = self._tokens(candidate, self._encode([candidate.text])[0])
            if not msk.any():
                break  # dropping more would leave nothing to train; fall back to right truncation
            input_ids, mask, turn_ranges, num_messages = ids, msk, ranges, len(kept)
            if len(ids) <= self.options.max_length:
                break
        return input_ids, mask, turn_ranges, num_messages
