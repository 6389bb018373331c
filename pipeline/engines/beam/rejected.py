"""The Beam side of the rejected output (what it is and how it is written: :mod:`pipeline.steps.rejected`)."""
from __future__ import annotations

import apache_beam as beam

from pipeline.engines.beam.bundles import BundleBufferFn
from pipeline.io.chunks import ChunkFile
from pipeline.steps.rejected import (
    FRAGMENT_BYTES,
    rejection_line_bytes,
    write_rejected_file,
    write_rejected_fragment,
)


class WriteRejectedFragmentsFn(BundleBufferFn):
    """``rejection dict -> ChunkFile``: buffered until ``fragment_bytes`` (or the bundle's end)."""

    def __init__(self, *, folder: str, fragment_bytes: int = FRAGMENT_BYTES):
        self.folder = folder
        self.flush_bytes = fragment_bytes

    def prepare(self, item):
        return item, rejection_line_bytes(item)

    def write(self, items) -> ChunkFile:
        return write_rejected_fragment(items, folder=self.folder)


class WriteRejectedFn(beam.DoFn):
    """``(file index, [Chunk]) -> {"path", "rows", "bytes", "sha256", "by_reason"}``; merges the chunks'
    lines into ``rejected/rejected-<index>-of-<N>.jsonl`` (nothing when none belong to it):
    :func:`pipeline.steps.rejected.write_rejected_file`."""

    def __init__(self, *, output: str):
        self.output = output

    def process(self, element, num_files):
        index, chunks = element
        entry = write_rejected_file(chunks, output=self.output, index=index, num_files=num_files)
        if entry is not None:
            yield entry
