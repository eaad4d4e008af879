"""Faults for the training tests, injected from outside the library by patching Trainer's phases.

``install(Faults(...))`` patches ``hpdm.trainers.loop.Trainer`` for the whole process, so it is for
processes that exist to be tested: ``python -m tests.faults --faults=JSON <hpdm-train flags>`` runs
hpdm-train with the faults of ``JSON`` (``Faults``' fields), and ``torchrun ... -m tests.faults``
does the same on every rank. The faults are no part of the run's config: a run with them writes the
same ``config.gin`` as one without, so the same command resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

FLAG = "--faults="


@dataclass
class Faults:
    """``nan_at_steps``: the loss is NaN at these steps. ``signal``: ``(step, 'SIGTERM')`` makes rank 0
    send itself the signal once that step is done (the other ranks learn of it only through the stop
    vote). ``step_delay``: seconds to sleep after each step (time for a test to act mid-run)."""

    nan_at_steps: Sequence[int] = ()
    signal: Optional[Sequence] = None
    step_delay: float = 0.0


def install(faults: Faults) -> None:
    from hpdm.trainers.loop import Trainer

    nan_at = {int(s) for s in faults.nan_at_steps}
    if nan_at:
        loss_of = Trainer.micro_batch_loss

        def micro_batch_loss(self, *args, **kwargs):
            loss, per_level = loss_of(self, *args, **kwargs)
            return (loss * float("nan") if self.step in nan_at else loss), per_level

        Trainer.micro_batch_loss = micro_batch_loss

    if faults.signal is not None:
        at, name = int(faults.signal[0]), str(faults.signal[1])
        step_of = Trainer.train_step

        def train_step(self):
            stats = step_of(self)
            if self.info.is_main and self.step == at:
                os.kill(os.getpid(), getattr(signal, name))
            return stats

        Trainer.train_step = train_step

    if faults.step_delay:
        preview_of = Trainer.preview

        def preview(self):
            preview_of(self)
            time.sleep(faults.step_delay)

        Trainer.preview = preview


def command(faults: dict) -> list[str]:
    """The start of a command line that runs hpdm-train with ``faults`` (``Faults``' fields)."""
    return [sys.executable, "-m", "tests.faults", FLAG + json.dumps(faults)]


def main() -> None:
    given = [a for a in sys.argv[1:] if a.startswith(FLAG)]
    sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if not a.startswith(FLAG)]
    for arg in given:
        install(Faults(**json.loads(arg[len(FLAG):])))
    from hpdm.cli.train import run

    run()


if __name__ == "__main__":
    main()
