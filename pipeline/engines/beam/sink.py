"""``WriteShardFn``: the Beam side of writing shards (how shards are written: :mod:`pipeline.steps.shards`)."""
from __future__ import annotations

import apache_beam as beam

from pipeline.steps.shards import (
    write_shard,
)


class WriteShardFn(beam.DoFn):
    """``(shard_index, [fragment Chunk]) -> shard entry`` for the manifest; writes ``data/shard-*.arrow``
    (:func:`pipeline.steps.shards.write_shard`)."""

    def __init__(self, *, output: str, padded: bool = False, extra_fields=(), schema=None, packing=None):
        self.output = output
        self.padded = padded
        self.extra_fields = tuple(extra_fields)
        self.schema = schema
        self.packing = packing  # transforms.packing.rows.ShardPacking (--pack-length) or None

    def process(self, element, num_shards):
        index, chunks = element
        yield write_shard(chunks, output=self.output, index=index, num_shards=num_shards, padded=self.padded,
                          extra_fields=self.extra_fields, schema=self.schema, packing=self.packing)
