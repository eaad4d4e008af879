"""Progress with rate and ETA: a bar on a terminal, plain lines elsewhere (logs, CI, notebooks).

Sampling a video takes minutes to hours (the paper's 128 / 64 / 32 ... steps per level, hundreds of
tiles per step); users expect to see how far it is and when it ends. Standard library only, so
any part of hpdm (samplers, metrics, trainers) can use it without importing the others.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional, TextIO


def format_duration(seconds: float) -> str:
    """``3725.0`` -> ``"1:02:05"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_rate(rate: float) -> str:
    """Three significant digits, but never exponents: ``0.00417`` (a large model) or ``1160``."""
    return format(rate, ".0f" if rate >= 100 else ".3g")


def is_terminal(stream: Optional[TextIO]) -> bool:
    """Whether ``stream`` is an interactive terminal (a bar can redraw itself in place)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class RateEstimate:
    """Rate and ETA of ``done`` out of ``total`` units, measured from the first reading.

    Measuring from the first reading (not from construction) keeps set-up work (model loading,
    the first level's context caching) out of the rate.
    """

    def __init__(self, total: Optional[int], clock: Callable[[], float] = time.monotonic):
        self.total, self.clock = total, clock
        self._start: Optional[tuple[float, int]] = None

    def rate(self, done: int) -> Optional[float]:
        """Units per second since the first reading; None until there are two distinct readings."""
        now = self.clock()
        if self._start is None:
            self._start = (now, done)
        elapsed, progressed = now - self._start[0], done - self._start[1]
        return progressed / elapsed if elapsed > 0 and progressed > 0 else None

    def summary(self, done: int, unit: str) -> str:
        """``"1.23 unit/s | ETA 0:01:02"`` (or ``""`` while the rate is unknown)."""
        rate = self.rate(done)
        if rate is None:
            return ""
        text = f"{format_rate(rate)} {unit}/s"
        if self.total is not None:
            text += f" | ETA {format_duration(max(0, self.total - done) / rate)}"
        return text


class ProgressBar:
    """A one-line bar redrawn in place: ``"what |#####-----|  50% 10/20 unit | rate | ETA | note"``.

    Args:
      total: units expected in all.
      what: the line's prefix.
      unit: what is counted (in the rate).
      stream: where the bar is drawn (a terminal; see ``is_terminal``).
      min_interval: seconds between redraws; the final one is always drawn.
      width: characters of the bar itself.
    """

    def __init__(
        self,
        total: int,
        what: str = "",
        unit: str = "steps",
        stream: Optional[TextIO] = None,
        min_interval: float = 0.1,
        width: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.what, self.unit = max(1, int(total)), what, unit
        self.stream = sys.stderr if stream is None else stream
        self.min_interval, self.width, self.clock = min_interval, width, clock
        self.estimate = RateEstimate(self.total, clock)
        self._last_draw: Optional[float] = None
        self._drawn = 0  # length of the last line, to blank what a shorter one leaves behind

    def line(self, done: int, note: str = "") -> str:
        """The bar's text for ``done`` units (without the carriage return)."""
        fraction = min(1.0, max(0.0, done / self.total))
        filled = int(round(fraction * self.width))
        parts = [f"{self.what} |{'#' * filled}{'-' * (self.width - filled)}| {fraction:4.0%} {done}/{self.total}"]
        parts += [p for p in (self.estimate.summary(done, self.unit), note) if p]
        return " | ".join(parts).strip()

    def update(self, done: int, note: str = "") -> None:
        """Redraw for ``done`` units, at most every ``min_interval`` seconds and always at the end."""
        now = self.clock()
        text = self.line(done, note)  # every reading feeds the rate, drawn or not
        if done < self.total and self._last_draw is not None and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self.stream.write("\r" + text.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """End the bar's line, so that what is printed next starts on its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
