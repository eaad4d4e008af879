"""Graceful stop: SIGTERM or SIGINT ends training after the current step, with a checkpoint.

Clusters announce preemption with SIGTERM (SLURM, Kubernetes) and give a grace period before
SIGKILL; Ctrl-C sends SIGINT. Dying at once loses every step since the last periodic checkpoint.
Here the signal only records a request; the training loop finishes the step it is in, all ranks
agree on the stop step (``hdist.max_over_ranks`` of the signal number, so a signal that reached one
rank stops them all at the same step), rank 0 writes a checkpoint, and the process exits with the
status the signal would have given it (128 + its number: 143 for SIGTERM, 130 for SIGINT), so
schedulers still see a job that was stopped, not one that finished.

A repeated signal changes nothing (torchrun forwards the signal it receives to workers that may
have received it already); SIGKILL stops at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from absl import logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingStopped(Exception):
    """Training stopped early on a signal, after saving a checkpoint; exit with ``exit_code``."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal_name(signum)} after step {step}")
        self.signum, self.step = int(signum), int(step)

    @property
    def exit_code(self) -> int:
        return exit_status(self.signum)


class StopRequests:
    """While entered, SIGTERM and SIGINT set ``received`` (the first signal's number) instead of
    ending the process; the previous handlers come back on exit."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        # Nothing else here: the handler runs between two bytecodes of whatever the main thread is
        # doing (a collective, a log call); the loop acts on the request at the step boundary.
        if self.received is None:
            self.received = int(signum)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is not threading.main_thread():
            logging.warning("Training outside the main thread: SIGTERM / SIGINT will not stop it gracefully")
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
