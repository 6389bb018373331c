"""Reject reasons: the machine-readable codes written to ``rejected/*.jsonl``.

A record that cannot become a training row is never dropped silently and never crashes the job:
the code that finds the problem raises :class:`RecordRejected` with one of the codes below, and the
pipeline routes the record to the rejected output with that code and a human-readable detail.
"""
from __future__ import annotations

INVALID_JSON = "invalid_json"
UNKNOWN_FORMAT = "unknown_format"
INVALID_ROLE = "invalid_role"
EMPTY_CONVERSATION = "empty_conversation"
NO_ASSISTANT_TURN = "no_assistant_turn"
EMPTY_TURN = "empty_turn"
INVALID_CONTENT = "invalid_content"
TEMPLATE_ERROR = "template_error"
TOO_LONG = "too_long"
NO_LOSS_TOKENS = "no_loss_tokens"
DUPLICATE = "duplicate"
INTERNAL_ERROR = "internal_error"
# chat-template reasons (the trained part cannot be determined exactly, or the template drops data)
NOT_PREFIX_PRESERVING = "not_prefix_preserving"
TOOL_CALL_NOT_RENDERED = "tool_call_not_rendered"
SYSTEM_NOT_SUPPORTED = "system_not_supported"
REASONING_NOT_RENDERED = "reasoning_not_rendered"
CONTENT_NOT_RENDERED = "content_not_rendered"
CONTROL_TOKEN_IN_TEXT = "control_token_in_text"
AMBIGUOUS_SPAN = "ambiguous_span"
NO_STOP_TOKEN = "no_stop_token"
NO_GENERATION_PROMPT = "no_generation_prompt"
TEMPLATE_LIMIT = "template_limit"
# input files that end early or cannot be read (see transforms/reading/, pipeline/steps/reading.py)
TRUNCATED_INPUT = "truncated_input"
UNREADABLE_INPUT = "unreadable_input"
# image reasons (vision-language records)
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_PATH_ESCAPE = "image_path_escape"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
# tasks other than chat (transforms/tasks/): a text field that is empty, documents cut off with the last
# partial block of a batch (--group-texts with --group-remainder drop)
EMPTY_TEXT = "empty_text"
GROUP_REMAINDER = "group_remainder"
# encoder-head reasons (classification, token classification, extractive QA)
INVALID_LABEL = "invalid_label"            # missing, or not of the job's label kind
UNMAPPED_LABEL = "unmapped_label"          # a class name or tag outside the label map given with --labels
LENGTH_MISMATCH = "length_mismatch"        # tokens and tags of different lengths
WORD_NOT_TOKENIZED = "word_not_tokenized"  # a word that tokenizes to nothing (its label would vanish)
QUESTION_TOO_LONG = "question_too_long"    # the question leaves no room for context (it is never truncated)
ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"  # answer_start/text do not point at the answer in the context
# preference data (--task preference / kto): chosen and rejected are the same (in the record, or once tokenized
# or truncated); truncation would leave a completion without a token
IDENTICAL_PAIR = "identical_pair"
PAIR_TRUNCATED = "pair_truncated"

ALL_REASONS = (
    INVALID_JSON, UNKNOWN_FORMAT, INVALID_ROLE, EMPTY_CONVERSATION, NO_ASSISTANT_TURN, EMPTY_TURN,
    INVALID_CONTENT, TEMPLATE_ERROR, TOO_LONG, NO_LOSS_TOKENS, DUPLICATE, INTERNAL_ERROR,
    TRUNCATED_INPUT, UNREADABLE_INPUT,
    MISSING_IMAGE, BAD_IMAGE, IMAGE_TOO_LARGE, IMAGE_PATH_ESCAPE, IMAGE_COUNT_MISMATCH,
    NOT_PREFIX_PRESERVING, TOOL_CALL_NOT_RENDERED, SYSTEM_NOT_SUPPORTED, REASONING_NOT_RENDERED,
    CONTENT_NOT_RENDERED, CONTROL_TOKEN_IN_TEXT, AMBIGUOUS_SPAN, NO_STOP_TOKEN, TEMPLATE_LIMIT,
    NO_GENERATION_PROMPT,
    EMPTY_TEXT, GROUP_REMAINDER,
    INVALID_LABEL, UNMAPPED_LABEL, LENGTH_MISMATCH, WORD_NOT_TOKENIZED, QUESTION_TOO_LONG, ANSWER_NOT_IN_CONTEXT,
    IDENTICAL_PAIR, PAIR_TRUNCATED,
)


class RecordRejected(Exception):
    """Raised by per-record transforms when a record must go to the rejected output.

    Attributes:
        reason: one of the codes in this module (``ALL_REASONS``).
        detail: a short human-readable explanation naming the offending field or value.
    """

    def __init__(self, reason: str, detail: str):
        if reason not in ALL_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
