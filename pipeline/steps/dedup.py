"""``--dedup``: keep the first of records with identical conversations, without moving the records (Beam-free:
the job's :class:`pipeline.engines.beam.dedup.FindDuplicates` and the local engine share these functions).

The records stay in their spill chunks (:mod:`pipeline.io.spill`). Only small keys cross shuffles:

1. ``dedup_entries``: per spilled batch, one ``(conversation key, (sort_key, source, index, ref, position))``
   per record; grouped by conversation key;
2. ``pick_duplicates``: in a group, the record first by ``sort_key`` is kept; every other one is a
   duplicate, emitted as ``(its spill chunk, (position, sort_key, kept source, kept index))``;
3. duplicates are grouped by spill chunk, and ``duplicate_rejections`` reads each such batch once to
   write the ``duplicate`` rejection with the original record;
4. the sort keys of all duplicates form one set (a side input, ~100 bytes per duplicate), and
   ``drop_duplicates`` removes them from each batch before parsing.

So read = written + rejected still holds, and the result does not depend on bundling or runner.
"""
from __future__ import annotations

from dataclasses import astuple
from typing import Iterator

from pipeline.io.chunks import Chunk
from pipeline.io.spill import read_spilled
from transforms import errors
from transforms import shard_format as sf
from transforms.formats import FormatOptions
from transforms.mixture import Mixture
from transforms.reading import RawRecord
from transforms.rows import rejection
from transforms.tasks.spec import TaskSpec, as_task_spec


def dedup_key(raw: RawRecord, format_options: FormatOptions | TaskSpec) -> str:
    """Records whose conversations (or, for another task, contents: the task's ``content_key``) are identical
    share a key; anything unconvertible gets a unique key (it is rejected later with its own reason).
    ``format_options``: the job's options, or (a datasets list) its :class:`~transforms.mixture.Mixture`: each
    record read with its dataset's options, duplicates found across datasets too."""
    if raw.value is not None:
        try:
            spec = format_options.task_of(raw.source) if isinstance(format_options, Mixture) \
                else as_task_spec(format_options)
            return "c:" + spec.content_key(raw.value)
        except Exception:  # rejected later by the builder with the right reason
            pass
    return "u:" + sf.row_sort_key(raw.source, raw.index)


def _ref_key(chunk: Chunk) -> tuple:
    """A spill chunk as a tuple of primitives (a deterministic GroupByKey key)."""
    return astuple(chunk)


def dedup_entries(ref: Chunk, format_options: FormatOptions) -> Iterator[tuple[str, tuple]]:
    """``(conversation key, (sort_key, source, index, ref key, position))`` for each record of a batch."""
    for position, raw in enumerate(read_spilled(ref)):
        yield dedup_key(raw, format_options), (sf.row_sort_key(raw.source, raw.index), raw.source, raw.index,
                                               _ref_key(ref), position)


def pick_duplicates(element) -> Iterator[tuple[tuple, tuple]]:
    """For one conversation group: ``(ref key, (position, sort_key, kept source, kept index))`` per duplicate."""
    _, entries = element
    entries = sorted(entries)  # by sort_key first: the same choice whatever the order of arrival
    kept = entries[0]
    for sort_key, _, _, ref_key, position in entries[1:]:
        yield ref_key, (position, sort_key, kept[1], kept[2])


def duplicate_rejections(element) -> Iterator[dict]:
    """Read one spilled batch once and write the ``duplicate`` rejection of each duplicate in it."""
    ref_key, duplicates = element
    batch = read_spilled(Chunk(*ref_key))
    for position, _, kept_source, kept_index in sorted(duplicates):
        yield rejection(batch[position], errors.DUPLICATE, f"same conversation as {kept_source} record {kept_index}")


def drop_duplicates(batch: list[RawRecord], duplicates: set) -> list[RawRecord]:
    """The records of ``batch`` that are not duplicates (by sort key)."""
    if not duplicates:
        return batch
    return [raw for raw in batch if sf.row_sort_key(raw.source, raw.index) not in duplicates]


def find_duplicates(refs, format_options: FormatOptions) -> tuple[set, list[dict]]:
    """All the steps above in one process, over the spilled batches ``refs``: ``(sort keys of the duplicates,
    their ``duplicate`` rejections)``. Holds one entry per record (keys and positions, not the records)."""
    return duplicates_of_entries(entry for ref in refs for entry in dedup_entries(ref, format_options))


def duplicates_of_entries(entries) -> tuple[set, list[dict]]:
    """Steps 2-4 over ``(conversation key, entry)`` pairs (:func:`dedup_entries` of every spilled batch, computed
    anywhere, in any order): ``(sort keys of the duplicates, their duplicate rejections)``."""
    groups: dict[str, list] = {}
    for key, entry in entries:
        groups.setdefault(key, []).append(entry)
    by_batch: dict[tuple, list] = {}
    for element in groups.items():
        for ref_key, duplicate in pick_duplicates(element):
            by_batch.setdefault(ref_key, []).append(duplicate)
    dropped = {duplicate[1] for duplicates in by_batch.values() for duplicate in duplicates}
    rejections = [item for element in sorted(by_batch.items()) for item in duplicate_rejections(element)]
    return dropped, rejections
