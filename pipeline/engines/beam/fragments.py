"""``WriteFragmentsFn``: the Beam side of row fragments (what they are: :mod:`pipeline.steps.fragments`)."""
from __future__ import annotations

import pyarrow as pa

from pipeline.engines.beam.bundles import BundleBufferFn
from pipeline.io.chunks import ChunkFile
from pipeline.steps.fragments import (
    FRAGMENT_BYTES,
    payload_schema,
    write_fragment,
)
from transforms import shard_format as sf


class WriteFragmentsFn(BundleBufferFn):
    """``list[row] -> ChunkFile``: rows converted to Arrow per batch, buffered until ``fragment_bytes``
    (or the bundle's end), then written as one fragment under ``folder``."""

    def __init__(self, *, folder: str, schema: pa.Schema, fragment_bytes: int = FRAGMENT_BYTES):
        self.folder = folder
        self.schema = payload_schema(schema)
        self.flush_bytes = fragment_bytes

    def prepare(self, rows):
        table = sf.table_from_rows(rows, self.schema)
        return table, table.nbytes

    def write(self, tables) -> ChunkFile:
        return write_fragment(pa.concat_tables(tables), folder=self.folder)
