"""Progress lines with rate and ETA for long evaluations (paper Sec. 5: FVD on 10k generated videos).

Sampling 10,000 videos and extracting the I3D features of a dataset take hours; a line per batch
says how far it is, how fast it goes and when it ends, measured from ``start`` (or the first
line) so that model loading and set-up do not skew the rate.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``3725.0`` -> ``"1:02:05"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
        # Three significant digits, but never exponents: 0.00417 (a large model's sampling) or 1160.
        text += f" | {format(rate, '.0f' if rate >= 100 else '.3g')} {self.unit}/s"
        if self.total is not None:
            text += f" | ETA {format_duration(max(0, self.total - done) / rate)}"
        return text

    def update(self, done: int) -> None:
        log.info("%s", self.line(done))
