"""Counted, logged skips of bad input (unreadable, corrupt, too short, missing, uncaptioned)."""

from __future__ import annotations

import collections

from absl import logging


class SkipReport:
    """Counts skipped files by reason and remembers the first few paths for the log line."""

    def __init__(self, what: str, root: str, max_paths: int = 5):
        self.what = what
        self.root = root
        self.max_paths = max_paths
        self.by_reason: collections.Counter = collections.Counter()
        self.first: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def add(self, path: str, reason: str, detail: str = "") -> None:
        self.by_reason[reason] += 1
        if len(self.first) < self.max_paths:
            self.first.append((path, f"{reason}: {detail}" if detail else reason))

    def message(self, total: int | None = None) -> str:
        of = f" of {total}" if total is not None else ""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.by_reason.items()))
        first = "; ".join(f"{p} ({why})" for p, why in self.first)
        return f"Skipped {self.count}{of} {self.what} under {self.root} ({reasons}); first: {first}"

    def log(self, total: int | None = None) -> None:
        if self.count:
            logging.warning("%s", self.message(total))
