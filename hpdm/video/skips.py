"""Counted, logged skips of bad input (unreadable, corrupt, too short, missing, uncaptioned).

One counter for every reader of files: the training sources, the evaluation-video reader and the
metrics' folder reader all count here, so a skipped file is never silent and every report looks
the same.
"""

from __future__ import annotations

import collections

from absl import logging


class SkipReport:
    """Counts skipped files by reason; remembers the first few paths, and one example per reason.

    Attributes: ``by_reason`` (Counter reason -> files), ``first`` (the first ``max_paths``
    ``(path, why)`` pairs, for the log line), ``examples`` (reason -> its first path), ``count``.
    """

    def __init__(self, what: str = "files", root: str = "", max_paths: int = 5):
        self.what = what
        self.root = root
        self.max_paths = max_paths
        self.by_reason: collections.Counter = collections.Counter()
        self.first: list[tuple[str, str]] = []
        self.examples: dict[str, str] = {}

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def add(self, path: str, reason: str, detail: str = "") -> None:
        self.by_reason[reason] += 1
        self.examples.setdefault(reason, path)
        if len(self.first) < self.max_paths:
            self.first.append((path, f"{reason}: {detail}" if detail else reason))

    def summary(self) -> str:
        """Per reason, its count and first path: ``"2 unreadable (e.g. 'a.avi'), 1 too short (e.g. ...)"``."""
        return ", ".join(f"{n} {reason} (e.g. {self.examples[reason]!r})" for reason, n in sorted(self.by_reason.items()))

    def message(self, total: int | None = None) -> str:
        of = f" of {total}" if total is not None else ""
        under = f" under {self.root}" if self.root else ""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.by_reason.items()))
        first = "; ".join(f"{p} ({why})" for p, why in self.first)
        return f"Skipped {self.count}{of} {self.what}{under} ({reasons}); first: {first}"

    def log(self, total: int | None = None) -> None:
        if self.count:
            logging.warning("%s", self.message(total))
