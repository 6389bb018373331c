"""``BundleBufferFn``: a DoFn that buffers a bundle's elements and writes them in groups of about a byte size."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue


class BundleBufferFn(beam.DoFn):
    """Buffers a bundle's elements and writes them in groups of about ``flush_bytes`` (and the rest at
    the bundle's end), emitting what ``write`` returns for each group (a file reference).

    Subclasses give ``prepare(element) -> (item, size in bytes)`` and ``write(items) -> reference``.
    """

    flush_bytes: int

    def start_bundle(self):
        self._items: list = []
        self._bytes = 0

    def process(self, element):
        item, size = self.prepare(element)
        self._items.append(item)
        self._bytes += size
        if self._bytes >= self.flush_bytes:
            yield self._flush()

    def finish_bundle(self):
        if self._items:  # outputs of finish_bundle need an explicit window
            yield WindowedValue(self._flush(), MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self):
        items, self._items, self._bytes = self._items, [], 0
        return self.write(items)

    def prepare(self, element):
        raise NotImplementedError

    def write(self, items):
        raise NotImplementedError
