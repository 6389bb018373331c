"""``CommitManifestFn``: the Beam side of committing the dataset (:mod:`pipeline.steps.manifest`)."""
from __future__ import annotations

from typing import Any, Mapping

import apache_beam as beam

from pipeline.steps.manifest import commit_manifest


class CommitManifestFn(beam.DoFn):
    """Runs once after every shard is written: :func:`pipeline.steps.manifest.commit_manifest` (fills empty
    shards, checks counts, writes the manifest)."""

    def __init__(self, *, output: str, manifest_base: Mapping[str, Any], padded: bool = False, extra_fields=(),
                 schema=None, packing=None):
        self.output = output
        self.manifest_base = dict(manifest_base)
        self.padded = padded
        self.extra_fields = tuple(extra_fields)
        self.schema = schema
        self.packing = packing  # transforms.packing.rows.ShardPacking (--pack-length) or None

    def process(self, _, shards, rejected_files, read_count, num_shards, extra_sections, mixture_counts=None):
        yield commit_manifest(output=self.output, manifest_base=self.manifest_base, padded=self.padded,
                              extra_fields=self.extra_fields, schema=self.schema, shards=shards,
                              rejected_files=rejected_files,
                              read_count=read_count, num_shards=num_shards, extra_sections=extra_sections,
                              packing=self.packing,
                              mixture_counts=tuple(mixture_counts) if mixture_counts is not None else None)
