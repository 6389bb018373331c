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
# input files that end early or cannot be read (see transforms/reading.py, pipeline/sources.py)
TRUNCATED_INPUT = "truncated_input"
UNREADABLE_INPUT = "unreadable_input"
# image reasons (vision-language records)
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_PATH_ESCAPE = "image_path_escape"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"

ALL_REASONS = (
    INVALID_JSON, UNKNOWN_FORMAT, INVALID_ROLE, EMPTY_CONVERSATION, NO_ASSISTANT_TURN, EMPTY_TURN,
    INVALID_CONTENT, TEMPLATE_ERROR, TOO_LONG, NO_LOSS_TOKENS, DUPLICATE, INTERNAL_ERROR,
    TRUNCATED_INPUT, UNREADABLE_INPUT,
    MISSING_IMAGE, BAD_IMAGE, IMAGE_TOO_LARGE, IMAGE_PATH_ESCAPE, IMAGE_COUNT_MISMATCH,
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
