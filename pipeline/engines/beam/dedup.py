"""``FindDuplicates``: the Beam side of ``--dedup`` (how duplicates are found: :mod:`pipeline.steps.dedup`)."""
from __future__ import annotations

import apache_beam as beam

from pipeline.steps.dedup import (
    dedup_entries,
    duplicate_rejections,
    pick_duplicates,
)
from transforms.formats import FormatOptions


class FindDuplicates(beam.PTransform):
    """``PCollection[Chunk] (spilled batches) -> {"dropped": singleton set of sort keys, "rejected": rejections}``."""

    def __init__(self, *, format_options: FormatOptions):
        super().__init__()
        self.format_options = format_options

    def expand(self, refs):
        duplicates = (
            refs
            | "KeyByConversation" >> beam.FlatMap(dedup_entries, self.format_options)
            | "GroupConversations" >> beam.GroupByKey()
            | "PickDuplicates" >> beam.FlatMap(pick_duplicates)
        )
        rejected = (
            duplicates
            | "GroupByBatch" >> beam.GroupByKey()
            | "RejectDuplicates" >> beam.FlatMap(duplicate_rejections)
        )
        dropped = (
            duplicates
            | "DuplicateKeys" >> beam.Map(lambda item: item[1][1])
            | "DuplicateSet" >> beam.combiners.ToSet()
        )
        return {"dropped": dropped, "rejected": rejected}
