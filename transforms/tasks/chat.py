"""The chat task: an example (:class:`~transforms.formats.Conversation`) -> training rows.

Per record: apply ``--control-tokens-in-data``; render with the chat template, which finds the
trained character spans (the template strategy, :class:`transforms.chat_render.ChatRenderer`: one
row, or one row per supervised turn when the template needs that); after the batch is tokenized,
turn each row's encoding into token arrays (:class:`transforms.truncation.TokenArrays`), truncate
(:func:`transforms.truncation.truncate`) and assemble the row
(:func:`transforms.rows.assembly.assemble_row`).

A part plugs in where rows carry more than text: with an :class:`~transforms.vision.part.ImagePart`
image positions are expanded before rendering, image spans are protected and never trained, and
the row gets image columns. A record with images is one row.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.chat_render import WHOLE_CONVERSATION, ChatRenderer, RenderedConversation
from transforms.config import TokenizeOptions
from transforms.control_tokens import ControlTokens, free_markers
from transforms.errors import RecordRejected
from transforms.formats import Conversation, FormatOptions, detect_format, to_conversation
from transforms.labels import mask_from_ranges, span_token_ranges
from transforms.reading import RawRecord
from transforms.rows.assembly import assemble_row, conversation_hash
from transforms.rows.encoding import TextEncoder
from transforms.shard_format import PROMPT_MISMATCH_KEY, PROMPT_MISMATCH_RECORD_KEY
from transforms.tasks.base import Task
from transforms.tokenizer_loading import control_tokens_for, special_tokens_for_template
from transforms.truncation import TokenArrays, exchange_cuts, truncate
from transforms.vision.part import ImagePart, RecordImages


@dataclass(frozen=True)
class PendingRow:
    """One row of a record between rendering and tokenization.

    Attributes:
        raw, conversation: the record and its example as parsed.
        rendered: the row's text and trained spans.
        messages: the messages rendered (control-token strings marked, image positions expanded).
        guarded: the conversation as rendered (its tools and template variables).
        literal_control_tokens: control-token strings kept as text in the record.
        images: the record's images (with an image part), else ``None``.
        record_prompt_mismatch: on the record's first row: some row of the record has a turn trained by the
            prompt-mismatch rule (the audit counts the record once).
        markers: the marker pair of the record's marked control-token strings (``None``: not marked; see
            :mod:`transforms.control_tokens`).
    """

    raw: RawRecord
    conversation: Conversation
    rendered: RenderedConversation
    messages: Sequence[Mapping]
    guarded: Conversation
    literal_control_tokens: int = 0
    images: RecordImages | None = None
    record_prompt_mismatch: bool = False
    markers: tuple[str, str] | None = None

    @property
    def text(self) -> str:
        return self.rendered.text


class ChatTask(Task):
    """Chat rows from conversations, with one tokenizer and one configuration.

    Args:
        tokenizer: a fast ``transformers`` tokenizer with a chat template.
        options: length, truncation, loss and padding options.
        task_options: unused (the chat task's options are ``options`` and the record-format options).
        images: the image part of a vision job (``None``: text rows).

    The chat task keeps its historical shard schema (:func:`transforms.shard_format.arrow_schema`), its
    manifest (no ``task`` section) and its config fingerprint: ``--task chat`` is the default job.
    """

    name = "chat"
    options_class = None
    chat_flags = True
    needs_chat_template = True
    packable = True

    # -- the parse step (tokenizer-free) --------------------------------------------------------------
    @classmethod
    def default_options(cls):
        return None

    @classmethod
    def parse(cls, value, options, format_options: FormatOptions) -> Conversation:
        return to_conversation(value, format_options)

    @classmethod
    def content_key(cls, example: Conversation, options) -> str:
        return conversation_hash(example)

    @classmethod
    def detect_format(cls, value, options, format_options: FormatOptions) -> str:
        return detect_format(value, format_options)

    def __init__(self, *, tokenizer, options: TokenizeOptions, task_options=None, images: ImagePart | None = None):
        self.options = options
        self.images = images
        template_control_tokens = control_tokens_for(tokenizer, tokenizer.chat_template)
        data_control_tokens = template_control_tokens
        if images is not None:  # ``<image>`` in a vision record is the image position, never literal text
            data_control_tokens = [t for t in template_control_tokens if t != images.position_tag]
        self.control_tokens = ControlTokens(data_control_tokens)
        # --chat-template-kwargs: every record's variables (a dataset's and a record's own win over them)
        template_variables = {**special_tokens_for_template(tokenizer), **options.template_kwargs}
        # what the template itself may write: marker pairs holding none of its characters are used
        self._template_text = "\x00".join([tokenizer.chat_template or "", *template_control_tokens,
                                           *(v for v in template_variables.values() if isinstance(v, str))])
        self.renderer = ChatRenderer(
            chat_template=tokenizer.chat_template,
            template_variables=template_variables,
            loss=options.loss,
            multi_turn=options.multi_turn,
            train_reasoning=options.train_reasoning,
            system_mode=options.system_mode,
            control_tokens=template_control_tokens,
            render_seconds=options.render_seconds,
            template_date=options.template_date,
            prompt_mismatch=options.prompt_mismatch,
        )
        self.encoder = TextEncoder(tokenizer.backend_tokenizer, self.control_tokens.tokens)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if options.pad_to == "max_length" and self.pad_token_id is None:
            raise ValueError("--pad-to max_length needs a tokenizer with a pad or eos token")

    def extra_fields(self) -> tuple:
        """Arrow fields the task's parts add to the base shard schema."""
        return self.images.fields() if self.images is not None else ()

    def start_batch(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> None:
        """Run before a batch is prepared (the image part prepares the batch's images)."""
        if self.images is not None:
            self.images.start_batch(parsed)

    def end_batch(self) -> None:
        """Run after a batch, also when it failed."""
        if self.images is not None:
            self.images.end_batch()

    # -- before tokenization --------------------------------------------------------------------------
    def guard_control_tokens(self, conversation: Conversation) -> tuple[Conversation, int, tuple[str, str] | None]:
        """Apply ``--control-tokens-in-data`` to the record: ``(conversation to render, literal count, marker
        pair)``; the pair is ``None`` when nothing was marked (the text is then encoded as it is)."""
        policy = self.options.control_tokens
        if policy == "special":
            return conversation, 0, None
        values = (conversation.messages, conversation.tools, conversation.template_kwargs)
        found = self.control_tokens.count(values)
        if not found:
            return conversation, 0, None
        if policy == "reject":
            raise RecordRejected(errors.CONTROL_TOKEN_IN_TEXT, f"the record's text holds {found} control-token "
                                 "string(s) of this tokenizer (e.g. an end-of-turn token)")
        markers = free_markers(values, self._template_text)
        if markers is None:
            raise RecordRejected(errors.CONTROL_TOKEN_IN_TEXT, "the record holds control-token strings and every "
                                 "Unicode noncharacter U+FDD0..U+FDEF (the markers that keep them text), so its "
                                 "control tokens cannot be kept as text")
        marked = dataclasses.replace(
            conversation,
            messages=tuple(self.control_tokens.mark(m, markers) for m in conversation.messages),
            tools=self.control_tokens.mark(conversation.tools, markers),
        )
        return marked, found, markers

    def _render_rows(self, guarded: Conversation, messages, trainable, *, one_row: bool):
        return self.renderer.render_rows(messages, tools=list(guarded.tools) if guarded.tools else None,
                                         trainable=trainable, template_kwargs=guarded.template_kwargs,
                                         multi_turn="single" if one_row else None)

    def prepare(self, raw: RawRecord, conversation: Conversation) -> list[PendingRow]:
        """The record's rows, rendered (raises :class:`RecordRejected`)."""
        guarded, literal, markers = self.guard_control_tokens(conversation)
        messages, images = guarded.messages, None
        if self.images is not None:
            messages, images = self.images.attach(raw, guarded)
        rows = self._render_rows(guarded, messages, guarded.trainable, one_row=images is not None)
        mismatched = any(row.prompt_mismatches for row in rows)
        return [PendingRow(raw=raw, conversation=conversation, rendered=row, messages=messages, guarded=guarded,
                           literal_control_tokens=literal, images=images, markers=markers,
                           record_prompt_mismatch=mismatched and k == 0)
                for k, row in enumerate(rows)]

    # -- after tokenization ---------------------------------------------------------------------------
    def token_arrays(self, pending: PendingRow, rendered: RenderedConversation, encoding, *,
                     num_messages: int, kept_messages: Sequence[int] | None = None) -> TokenArrays:
        """The token arrays of one rendered row (image spans protected and never trained)."""
        input_ids = np.asarray(encoding.ids, dtype=np.int32)
        trained = span_token_ranges(encoding, rendered.trained_spans)
        mask = mask_from_ranges(len(input_ids), trained)
        reasoning = mask_from_ranges(len(input_ids), span_token_ranges(encoding, rendered.reasoning_spans)
                                     if rendered.reasoning_spans else ())
        turns = trained if rendered.turn_spans == rendered.trained_spans else \
            span_token_ranges(encoding, rendered.turn_spans)
        protected, items = (), ()
        if pending.images is not None:
            items = pending.images.of_messages(kept_messages)
            protected = self.images.spans(input_ids, [pending.images.images[k].num_tokens for k in items])
            for start, end in protected:
                mask[start:end] = False
        return TokenArrays(input_ids=input_ids, mask=mask, turn_ranges=turns,
                           reasoning=reasoning, num_messages=num_messages, protected=protected, protected_items=items)

    def _shorter_rows(self, pending: PendingRow) -> Iterator[TokenArrays]:
        """The row with whole oldest exchanges dropped (``--truncation turns``), shortest drop first.

        A row of one supervised turn keeps that turn as its last message. Stops when a shorter
        version does not render, or renders as several rows (dropping turns changed how the rest
        renders)."""
        turn = pending.rendered.turn
        end = len(pending.messages) if turn == WHOLE_CONVERSATION else turn + 1
        messages = list(pending.messages[:end])
        if turn == WHOLE_CONVERSATION:
            trainable = list(pending.guarded.trainable[:end])
        else:
            trainable = [i == turn for i in range(end)]
        for kept in exchange_cuts(messages):
            try:
                rows = self._render_rows(pending.guarded, [messages[i] for i in kept], [trainable[i] for i in kept],
                                         one_row=pending.images is not None)
            except RecordRejected:
                return
            if len(rows) != 1:
                return
            encoding = self.encoder.encode([rows[0].text], [pending.markers])[0]
            yield self.token_arrays(pending, rows[0], encoding, num_messages=len(kept), kept_messages=kept)

    def encode_texts(self, texts, rows) -> list:
        """The batch's rendered texts, encoded; each marked text is named with its row's marker pair (a text is
        never searched for marker characters, so noncharacters in the data reach the tokenizer as they are)."""
        return self.encoder.encode(texts, [row.markers for row in rows])

    def finish(self, pending: PendingRow, encoding) -> dict[str, Any]:
        """The shard row of a rendered row, from its encoding (raises :class:`RecordRejected`)."""
        options = self.options
        turn = pending.rendered.turn
        num_messages = len(pending.messages) if turn == WHOLE_CONVERSATION else turn + 1
        arrays = self.token_arrays(pending, pending.rendered, encoding, num_messages=num_messages)
        if not np.count_nonzero(arrays.mask):
            raise RecordRejected(errors.NO_LOSS_TOKENS, "no token of this record is trained under --loss "
                                 f"{options.loss} (e.g. no trainable assistant turn)")
        truncated = truncate(arrays, max_length=options.max_length, mode=options.truncation,
                             shorter=lambda: self._shorter_rows(pending))
        digest = conversation_hash(pending.conversation)
        extra = None
        if pending.images is not None:
            digest = self.images.digest(digest, pending.images)
            extra = self.images.columns(pending.images, truncated.kept_items)
        row = assemble_row(
            raw=pending.raw, conversation=pending.conversation, truncated=truncated, turn=turn, loss=options.loss,
            reasoning_trained=pending.rendered.reasoning_trained, digest=digest,
            literal_control_tokens=pending.literal_control_tokens,
            pad_to=options.max_length if options.pad_to == "max_length" else None,
            pad_token_id=self.pad_token_id, extra_columns=extra,
        )
        if pending.rendered.prompt_mismatches:  # audit-only keys, no shard column (see transforms.audit)
            row[PROMPT_MISMATCH_KEY] = [m.to_json() for m in pending.rendered.prompt_mismatches]
        if pending.record_prompt_mismatch:
            row[PROMPT_MISMATCH_RECORD_KEY] = True
        return row
