"""The local engine's progress line: one line for the whole job on stderr.

While records are built it says how many records are done, how many input bytes of the total are read,
the rate and the time left::

    chatshards: 12,288 records · 41.3 MB of 120.0 MB read (34%) · 3,105 records/s · ETA 0:26

then which phase runs (writing the shards, the audit). On a terminal the line is rewritten in place (at
most a few times a second) and cleared before the summary prints; elsewhere (a log file, CI) a plain line
is written every :data:`PLAIN_EVERY_S` seconds, none for a short job. ``--quiet`` turns it off.

The fraction done is ``bytes read / total bytes`` times ``records built / records read``: the reader runs
ahead of the builders (worker processes, ``--dedup``'s first pass), and the ETA follows the records built.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

#: seconds between plain (non-terminal) progress lines; the first comes after as long
PLAIN_EVERY_S = 30.0
#: seconds between rewrites of the terminal line
TTY_EVERY_S = 0.25


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """The job's progress on ``stream`` (stderr). Call :meth:`read_bytes` / :meth:`records_read` from the reader,
    :meth:`records_built` as batches are built, :meth:`phase` when a later phase starts, :meth:`close` at the end.

    ``enabled=False`` (``--quiet``) makes every call a no-op. ``tty``: rewrite in place (default: whether
    ``stream`` is a terminal). ``clock``: for tests.
    """

    def __init__(self, *, total_bytes: int, stream: TextIO | None = None, enabled: bool = True,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 plain_every_s: float | None = None, width: int | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width  # a terminal line is cut to this many characters; None: the terminal's width then
        self.enabled = enabled
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.every = TTY_EVERY_S if self.tty else (PLAIN_EVERY_S if plain_every_s is None else plain_every_s)
        self.total_bytes = max(0, int(total_bytes))
        self.bytes_done = 0
        self.read = 0
        self.built = 0
        self.current_phase: str | None = None
        self.start = self.last = clock()
        self.shown = False  # a terminal line is on screen

    # -- what the engine reports ----------------------------------------------------------------
    def read_bytes(self, done: int) -> None:
        """Input bytes read so far (on disk: compressed bytes for compressed files)."""
        self.bytes_done = min(max(self.bytes_done, int(done)), self.total_bytes) if self.total_bytes else int(done)
        self._maybe_show()

    def records_read(self, n: int) -> None:
        self.read += n

    def records_built(self, n: int) -> None:
        self.built += n
        self._maybe_show()

    def phase(self, name: str) -> None:
        """A later phase starts (``"writing shards"``, ``"audit"``): shown at once on a terminal."""
        self.current_phase = name
        self._maybe_show(force=self.tty)

    def close(self) -> None:
        """Clear the terminal line (the summary follows on a clean line)."""
        if self.enabled and self.tty and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False

    # -- the line -------------------------------------------------------------------------------
    def fraction(self) -> float | None:
        """Estimated fraction of the build done (``None`` before anything is known)."""
        if not self.total_bytes:
            return None
        read_fraction = self.bytes_done / self.total_bytes
        built_fraction = self.built / self.read if self.read else 0.0
        return max(0.0, min(1.0, read_fraction * min(1.0, built_fraction)))

    def text(self) -> str:
        elapsed = self.clock() - self.start
        parts = [f"{self.built:,} records"]
        if self.total_bytes:
            parts.append(f"{_size(self.bytes_done)} of {_size(self.total_bytes)} read "
                         f"({100 * self.bytes_done / self.total_bytes:.0f}%)")
        if elapsed > 0 and self.built:
            parts.append(f"{self.built / elapsed:,.0f} records/s")
        if self.current_phase:
            parts.append(f"{self.current_phase} ({_duration(elapsed)} so far)")
        else:
            done = self.fraction()
            if done and done >= 0.01 and elapsed >= 1.0:
                parts.append(f"ETA {_duration(elapsed * (1 - done) / done)}")
        return "chatshards: " + " · ".join(parts)

    def _maybe_show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            width = self.width if self.width is not None else shutil.get_terminal_size((120, 24)).columns - 1
            self.stream.write("\r\x1b[2K" + self.text()[:max(20, width)])
            self.shown = True
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()
