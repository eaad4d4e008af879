"""Progress lines with rate and ETA for long evaluations (paper Sec. 5: FVD on 10k generated videos).

Sampling 10,000 videos and extracting the I3D features of a dataset take hours; a line per batch
says how far it is, how fast it goes and when it ends, measured from ``start`` (or the first
line) so that model loading and set-up do not skew the rate.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

# Shared with the sampling progress bar (hpdm.progress: standard library only).
from hpdm.progress import format_duration, format_rate

log = logging.getLogger(__name__)


class ProgressLog:
    """Logs ``"<what> <done>/<total> <unit> | <rate> <unit>/s | ETA h:mm:ss"`` lines.

    Args:
      what: the line's prefix, e.g. ``"fake: features of"``.
      total: expected count; ``None`` logs counts without an ETA.
      unit: what is counted.
      clock: seconds source (tests pass a fake one).
    """

    def __init__(self, what: str, total: int | None, unit: str = "videos", clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self._start: tuple[float, int] | None = None

    def start(self, done: int = 0) -> None:
        """Starts the clock (once; later calls are ignored)."""
        if self._start is None:
            self._start = (self.clock(), done)

    def line(self, done: int) -> str:
        """The progress line for ``done`` items (starts the clock if ``start`` was not called)."""
        self.start(done)
        now = self.clock()
        start_time, start_done = self._start
        total = "?" if self.total is None else str(self.total)
        text = f"{self.what} {done}/{total} {self.unit}"
        elapsed, progressed = now - start_time, done - start_done
        if elapsed <= 0 or progressed <= 0:
            return text
        rate = progressed / elapsed
        text += f" | {format_rate(rate)} {self.unit}/s"
        if self.total is not None:
            text += f" | ETA {format_duration(max(0, self.total - done) / rate)}"
        return text

    def update(self, done: int) -> None:
        log.info("%s", self.line(done))
