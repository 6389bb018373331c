"""The mixture's step helpers (a job with a datasets list; Beam-free: the local engine and the Beam graph call
them): each file's record count, the per-record decisions once the counts are known, the manifest's
``mixture`` section. What the decisions are: :mod:`transforms.mixture.selection`."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from transforms.mixture import Mixture, Selection


def batch_file_counts(batch) -> list[tuple[str, int]]:
    """``[(file, records)]`` of a batch of raw records (a batch holds records of one file, but need not)."""
    counts: dict[str, int] = {}
    for raw in batch:
        counts[raw.source] = counts.get(raw.source, 0) + 1
    return list(counts.items())


def selection_of(mixture: Mixture, counts: Mapping[str, int] | None) -> Selection:
    """The mixture's per-record decisions (``counts``: ``{file: records}``; only read when the mixture needs
    them, so a job that takes every record once, or a whole number of times, never waits for a count)."""
    return Selection(mixture, dict(counts) if mixture.needs_counts else None)


def skipped_and_repeats(batch, selection: Selection) -> tuple[int, int]:
    """``(records not taken, extra copies)`` of one batch (after ``--dedup`` dropped its duplicates)."""
    _, skipped, repeats = selection.select(batch)
    return skipped, repeats


def add_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    skipped = repeats = 0
    for a, b in pairs:
        skipped += a
        repeats += b
    return skipped, repeats


def mixture_section(mixture: Mixture, counts: Mapping[str, int], skipped: int, repeats: int) -> dict[str, Any]:
    """The manifest's ``mixture`` section: per dataset its files, records read, distinct records kept and examples
    made (``target``), the share asked for; the seed and stopping strategy; the records the mixture did not take
    (``skipped``) and the extra copies it made (``repeats``), so that ``counts.read - skipped + repeats =
    counts.written + counts.rejected``."""
    report = Selection(mixture, dict(counts)).report()
    return {"mixture": {"datasets": report, "seed": mixture.seed,
                        "stopping_strategy": mixture.stopping_strategy if mixture.weighted else None,
                        "total_records": mixture.total_records, "skipped": skipped, "repeats": repeats}}
