"""The *ParseRecords* step: raw record -> example (:class:`~transforms.formats.Conversation` for chat, the
task's example for other tasks) or rejection.

Pure and tokenizer-free, so the job runs it before tokenization and most bad input is rejected
cheaply. Results are ``(kind, item)`` pairs: ``(PARSED, (raw, example))`` or
``(REJECTED, rejection)``. A rejection is ``{"reason", "detail", "source", "index", "record"}``,
where ``record`` is the original record (or the raw text when it did not parse).

``format_options`` is the chat :class:`~transforms.formats.FormatOptions` or a
:class:`~transforms.tasks.spec.TaskSpec` (any task).
"""
from __future__ import annotations

from typing import Any, Iterable

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats import FormatOptions
from transforms.reading import RawRecord

ROW = "row"
REJECTED = "rejected"
PARSED = "parsed"


def rejection(raw: RawRecord, reason: str, detail: str) -> dict[str, Any]:
    """A rejected-output line for ``raw``."""
    return {
        "reason": reason,
        "detail": detail,
        "source": raw.source,
        "index": raw.index,
        "record": raw.value if raw.value is not None else raw.raw,
    }


def rejection_for(raw: RawRecord, exc: Exception) -> dict[str, Any]:
    """The rejection of ``raw`` for an exception raised while processing it (``internal_error`` unless
    it is a :class:`RecordRejected`)."""
    if isinstance(exc, RecordRejected):
        return rejection(raw, exc.reason, exc.detail)
    return rejection(raw, errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _task_spec(format_options):
    from transforms.tasks.spec import as_task_spec  # the task registry loads every task module

    return as_task_spec(format_options)


def parse_record(raw: RawRecord, format_options) -> tuple[str, Any]:
    """Raw record -> ``(PARSED, (raw, example))`` or ``(REJECTED, rejection)``; never raises.

    A record the reader could not use keeps the reader's reason code (``raw.reason``:
    ``truncated_input``, ``unreadable_input``, ...; ``invalid_json`` when it gives none)."""
    return _parse_one(raw, _task_spec(format_options))


def _parse_one(raw: RawRecord, spec) -> tuple[str, Any]:
    try:
        if raw.value is None:
            reason = getattr(raw, "reason", None) or errors.INVALID_JSON
            raise RecordRejected(reason, raw.error or getattr(raw, "reason", None) or "record is not valid JSON")
        return PARSED, (raw, spec.parse(raw.value))
    except Exception as exc:  # noqa: BLE001 - bad input never crashes the job
        return REJECTED, rejection_for(raw, exc)


def parse_records(raws: Iterable[RawRecord], format_options: FormatOptions) -> list[tuple[str, Any]]:
    """:func:`parse_record` of every raw record, in order."""
    spec = _task_spec(format_options)
    return [_parse_one(raw, spec) for raw in raws]
