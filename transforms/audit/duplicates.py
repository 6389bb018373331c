"""Duplicate grouping for the audit: rows sharing a ``conversation_hash``.

:class:`DuplicateSummary` takes ``(conversation_hash, rows, first)`` groups with ``rows > 1``; the job
groups rows with a keyed combine (:func:`group_add` / :func:`group_merge`), the commands with
:class:`HashGroups` in memory.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from transforms.shard_format import row_sort_key

LARGEST_GROUPS = 10


class DuplicateSummary:
    """Summary of exact-duplicate groups (rows sharing a ``conversation_hash``). Mergeable.

    Feed it only groups with more than one row: ``add_group(hash, rows, first)`` where ``first`` is
    ``(sort_key, source, index)`` of the group's first row in the stable order.
    """

    def __init__(self):
        self.groups = 0
        self.rows = 0
        self.largest: list[tuple] = []  # (-rows, hash, first)

    def add_group(self, conversation_hash: str, rows: int, first: Sequence) -> None:
        if rows < 2:
            return
        self.groups += 1
        self.rows += rows
        self.largest.append((-int(rows), str(conversation_hash), tuple(first)))
        if len(self.largest) > 4 * LARGEST_GROUPS:
            self._trim()

    def _trim(self) -> None:
        self.largest = sorted(self.largest)[:LARGEST_GROUPS]

    def merge(self, other: "DuplicateSummary") -> "DuplicateSummary":
        self.groups += other.groups
        self.rows += other.rows
        self.largest.extend(other.largest)
        self._trim()
        return self

    def to_json(self) -> dict[str, Any]:
        self._trim()
        return {
            "duplicate_groups": self.groups,
            "rows_in_duplicate_groups": self.rows,
            "redundant_rows": self.rows - self.groups,
            "largest_groups": [
                {"conversation_hash": h, "rows": -n, "first": {"source": first[1], "index": first[2]}}
                for n, h, first in self.largest
            ],
        }


def hash_of(row: Mapping[str, Any]) -> str:
    """The content hash duplicates are grouped by: ``conversation_hash`` (chat rows) or ``content_hash`` (the
    rows of the other tasks)."""
    value = row.get("conversation_hash")
    return value if value is not None else row["content_hash"]


def first_of(row: Mapping[str, Any]) -> tuple[str, str, int]:
    """``(sort_key, source, index)`` of a row: what a duplicate group remembers of its first row."""
    source, index = str(row["source"]), int(row["index"])
    return (row.get("sort_key") or row_sort_key(source, index), source, index)


def group_add(group: list | None, first: tuple) -> list:
    """Add one row to a duplicate group ``[rows, first]`` (``None``: a new group)."""
    if group is None:
        return [1, first]
    group[0] += 1
    if first < group[1]:
        group[1] = first
    return group


def group_merge(groups: Iterable[list]) -> list:
    """Merge partial groups ``[rows, first]`` of one hash."""
    rows, first = 0, None
    for n, f in groups:
        rows += n
        if f is not None and (first is None or f < first):
            first = f
    return [rows, first]


class HashGroups:
    """Rows grouped by ``conversation_hash`` in memory (the commands; the job uses a keyed combine
    with :func:`group_add` / :func:`group_merge`)."""

    def __init__(self):
        self.groups: dict[str, list] = {}

    def add_row(self, row: Mapping[str, Any]) -> None:
        key = hash_of(row)
        self.groups[key] = group_add(self.groups.get(key), first_of(row))

    def merge(self, other: "HashGroups") -> "HashGroups":
        """Add ``other``'s groups (partial groups of one hash are merged with :func:`group_merge`)."""
        for key, group in other.groups.items():
            mine = self.groups.get(key)
            self.groups[key] = list(group) if mine is None else group_merge([mine, group])
        return self

    def summary(self) -> DuplicateSummary:
        summary = DuplicateSummary()
        for conversation_hash, (rows, first) in self.groups.items():
            summary.add_group(conversation_hash, rows, first)
        return summary
