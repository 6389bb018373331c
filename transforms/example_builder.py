"""Raw record -> training row (or rejection): the per-record work of the job, without Beam.

:class:`ExampleBuilder` is what the Beam DoFn wraps and what tests and notebooks call directly::

    builder = ExampleBuilder(tokenizer=tok, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
    for kind, item in builder.build_batch(raw_records):   # kind is "row" or "rejected"
        ...

Rows follow the shard contract (``transforms.shard_format``) plus a ``sort_key`` used for sharding.
A record gives one row, or one row per supervised assistant turn when its template needs that (see
``chat_render``); a record either gives all its rows or is rejected as a whole.
Rejections are ``{"reason", "detail", "source", "index", "record"}``, where ``record`` is the
original record (or the raw text when it did not parse).

Work is batched: every record of a batch is rendered, then all texts are tokenized in one
``encode_batch`` call (the Rust tokenizer, parallel), then labels are derived with numpy.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from transforms import errors
from transforms.chat_render import WHOLE_CONVERSATION, ChatRenderer, RenderedConversation
from transforms.config import TokenizeOptions
from transforms.control_tokens import MARK_CLOSE, MARK_OPEN, ControlTokens, encode_marked, has_marks, \
    plain_text_backend
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
from transforms.tokenizer_loading import control_tokens_for, special_tokens_for_template

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
            raise RecordRejected(getattr(raw, "reason", None) or errors.INVALID_JSON, raw.error or "record is not valid JSON")
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
    literal_control_tokens: int = 0
    guarded: Conversation | None = None  # the conversation as rendered (control-token strings marked)


def row_sort_key_of(source: str, index: int, turn: int) -> str:
    """The sort key of a row: the record's key, then its turn (rows of one record stay together, in order)."""
    key = row_sort_key(source, index)
    return key if turn == WHOLE_CONVERSATION else f"{key}:{turn:08d}"


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
        self.control_tokens = ControlTokens(control_tokens_for(tokenizer, tokenizer.chat_template))
        self.renderer = ChatRenderer(
            chat_template=tokenizer.chat_template,
            template_variables=special_tokens_for_template(tokenizer),
            loss=tokenize_options.loss,
            multi_turn=tokenize_options.multi_turn,
            train_reasoning=tokenize_options.train_reasoning,
            system_mode=tokenize_options.system_mode,
            control_tokens=self.control_tokens.tokens,
            render_seconds=tokenize_options.render_seconds,
            template_date=tokenize_options.template_date,
        )
        self._backend = tokenizer.backend_tokenizer
        self._plain_backend = None  # built on the first record that holds control-token strings
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
        """Step 2 (the job's *Tokenize* stage): render, tokenize in one batch, label, truncate.

        Returns ``(ROW, row)`` items (one or more per record, in record order) and ``(REJECTED, rejection)``
        items (one per rejected record)."""
        return [item for items in self.build_parsed_records(parsed) for item in items]

    def build_parsed_records(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> list[list[tuple[str, Any]]]:
        """:meth:`build_parsed_batch` grouped by record: per input record, its rows or its one rejection."""
        self._start_batch(parsed)
        try:
            results: list[list[tuple[str, Any]]] = [[] for _ in parsed]
            pending: list[tuple[int, list]] = []
            for position, (raw, conversation) in enumerate(parsed):
                try:
                    items = self._prepare_rows(raw, conversation)
                    pending.append((position, items))
                except Exception as exc:  # noqa: BLE001 - bad input never crashes the job
                    results[position] = [(REJECTED, _rejection_for(raw, exc))]
            flat = [item for _, items in pending for item in items]
            encodings = iter(self._encode([item.rendered.text for item in flat]))
            for position, items in pending:
                try:
                    rows = [self._finish(item, next(encodings)) for item in items]
                    for k, row in enumerate(rows):
                        row["row_of_record"] = k
                        row["split_extra_tokens"] = 0
                    if len(rows) > 1:
                        lengths = [int(row["length"]) for row in rows]
                        rows[0]["split_extra_tokens"] = sum(lengths) - max(lengths)
                    results[position] = [(ROW, row) for row in rows]
                except Exception as exc:  # noqa: BLE001 - the whole record is rejected, never part of it
                    results[position] = [(REJECTED, _rejection_for(items[0].raw, exc))]
            return results
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
    def _guard_control_tokens(self, conversation: Conversation) -> tuple[Conversation, int]:
        """Apply ``--control-tokens-in-data`` to the record: ``(conversation to render, literal count)``."""
        policy = self.options.control_tokens
        if policy == "special":
            return conversation, 0
        values = (conversation.messages, conversation.tools, conversation.template_kwargs)
        found = self.control_tokens.count(values)
        if not found:
            return conversation, 0
        if policy == "reject":
            raise RecordRejected(errors.CONTROL_TOKEN_IN_TEXT, f"the record's text holds {found} control-token "
                                 "string(s) of this tokenizer (e.g. an end-of-turn token)")
        if has_marks(values):
            raise RecordRejected(errors.CONTROL_TOKEN_IN_TEXT, "the record holds control-token strings and the "
                                 "noncharacters U+FDD0/U+FDD1, so its control tokens cannot be kept as text")
        marked = dataclasses.replace(
            conversation,
            messages=tuple(self.control_tokens.mark(m) for m in conversation.messages),
            tools=self.control_tokens.mark(conversation.tools),
        )
        return marked, found

    def _prepare_rows(self, raw: RawRecord, conversation: Conversation) -> list[_Pending]:
        guarded, literal = self._guard_control_tokens(conversation)
        rows = self.renderer.render_rows(guarded.messages, tools=list(guarded.tools) if guarded.tools else None,
                                         trainable=guarded.trainable, template_kwargs=guarded.template_kwargs)
        return [_Pending(raw=raw, conversation=conversation, rendered=row, literal_control_tokens=literal,
                         guarded=guarded) for row in rows]

    def _render(self, conversation: Conversation, messages, trainable) -> RenderedConversation:
        """One row for ``messages`` (vision records and ``--truncation turns`` re-renders)."""
        return self.renderer.render(messages, tools=list(conversation.tools) if conversation.tools else None,
                                    trainable=trainable, template_kwargs=conversation.template_kwargs)

    def _encode(self, texts: list[str]):
        """Encodings of rendered texts; texts holding marked control-token strings are encoded piecewise."""
        if not texts:
            return []
        marked = [i for i, text in enumerate(texts) if MARK_OPEN in text or MARK_CLOSE in text]
        if not marked:
            return self._backend.encode_batch(texts, add_special_tokens=False)
        if self._plain_backend is None:
            self._plain_backend = plain_text_backend(self._backend, self.control_tokens.tokens)
        marked_set = set(marked)
        plain = [i for i in range(len(texts)) if i not in marked_set]
        out: list[Any] = [None] * len(texts)
        for i, encoding in zip(plain, self._backend.encode_batch([texts[i] for i in plain], add_special_tokens=False)
                               if plain else []):
            out[i] = encoding
        for i in marked:
            out[i] = encode_marked(texts[i], self._backend, self._plain_backend)
        return out

    def _tokens(self, rendered: RenderedConversation, encoding):
        """``(input_ids int32, mask bool, turn token ranges)`` of one rendered conversation."""
        input_ids = np.asarray(encoding.ids, dtype=np.int32)
        mask = mask_from_ranges(len(input_ids), span_token_ranges(encoding, rendered.trained_spans))
        return input_ids, mask, span_token_ranges(encoding, rendered.turn_spans)

    def _finish(self, item: _Pending, encoding) -> dict[str, Any]:
        options = self.options
        input_ids, mask, turn_ranges = self._tokens(item.rendered, encoding)
        reasoning = mask_from_ranges(len(input_ids), span_token_ranges(encoding, item.rendered.reasoning_spans))
        full_length = len(input_ids)
        if not mask.any():
            raise RecordRejected(errors.NO_LOSS_TOKENS, "no token of this record is trained under --loss "
                                 f"{options.loss} (e.g. no trainable assistant turn)")
        num_messages = len(item.conversation.messages) if item.rendered.turn == WHOLE_CONVERSATION \
            else item.rendered.turn + 1
        window = (0, full_length)
        if options.max_length is not None and full_length > options.max_length:
            if options.truncation == "drop":
                raise RecordRejected(errors.TOO_LONG, f"{full_length} tokens > --max-length {options.max_length}")
            if options.truncation == "turns":
                input_ids, mask, turn_ranges, reasoning, num_messages = self._drop_oldest_turns(
                    item, input_ids, mask, turn_ranges, reasoning, num_messages)
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
            "turn": item.rendered.turn,
            "reasoning_tokens": int((reasoning[lo:hi] & mask).sum()) if item.rendered.reasoning_trained else 0,
            "literal_control_tokens": item.literal_control_tokens,
            "sort_key": row_sort_key_of(item.raw.source, item.raw.index, item.rendered.turn),
        }
        if options.pad_to == "max_length":
            row["input_ids"], row["labels"], row["attention_mask"] = pad_row(
                input_ids, labels, length=options.max_length, pad_token_id=self.pad_token_id
            )
        return row

    def _drop_oldest_turns(self, item: _Pending, input_ids, mask, turn_ranges, reasoning, num_messages):
        """Drop whole exchanges (a user message and what follows it up to the next user message),
        oldest first, keeping leading system messages, until the row fits ``max_length`` or a single
        exchange is left. A row of one supervised turn keeps that turn as its last message. Returns the
        new tokens (the caller then cuts on the right if it still does not fit) and the messages kept."""
        conversation = item.guarded or item.conversation
        turn = item.rendered.turn
        end = len(conversation.messages) if turn == WHOLE_CONVERSATION else turn + 1
        messages = list(conversation.messages[:end])
        trainable = list(conversation.trainable[:end])
        if turn != WHOLE_CONVERSATION:
            trainable = [i == turn for i in range(end)]
        head = 0
        while head < len(messages) and messages[head].get("role") == "system":
            head += 1
        starts = [i for i in range(head, len(messages)) if messages[i].get("role") == "user"]
        tools = list(conversation.tools) if conversation.tools else None
        for cut in starts[1:]:
            kept = messages[:head] + messages[cut:]
            try:
                rows = self.renderer.render_rows(kept, tools=tools, trainable=trainable[:head] + trainable[cut:],
                                                 template_kwargs=conversation.template_kwargs)
            except RecordRejected:
                break
            if len(rows) != 1:
                break  # dropping turns changed how the rest renders: keep right truncation
            encoding = self._encode([rows[0].text])[0]
            ids, msk, ranges = self._tokens(rows[0], encoding)
            if not msk.any():
                break  # dropping more would leave nothing to train; fall back to right truncation
            rsn = mask_from_ranges(len(ids), span_token_ranges(encoding, rows[0].reasoning_spans))
            input_ids, mask, turn_ranges, reasoning, num_messages = ids, msk, ranges, rsn, len(kept)
            if len(ids) <= self.options.max_length:
                break
        return input_ids, mask, turn_ranges, reasoning, num_messages
