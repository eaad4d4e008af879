"""The records the phases of a training step hand on (``hpdm.trainers.loop``): a micro-batch's
draws, a step's loss sums, the update's outcome, and the window of steps a log line covers.

Losses travel as sums over loss terms with their (weighted) term counts, never as means, so that
micro-batches, steps and ranks add up before the one division at logging time; a logged loss is then
the mean over every loss term of the window on every rank (Eq. 4's terms, per level too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from hpdm.trainers import distributed as hdist


@dataclass
class Draws:
    """One micro-batch's per-sample draws (``hpdm.trainers.rng.step_generator``): noise levels
    ``sigma`` and ``loss_mask`` (a level at context noise has no loss term) ``[B, L]``, the noise
    (shaped like the batch's ``x``), and which samples drop their condition."""

    sigma: torch.Tensor
    noise: torch.Tensor
    loss_mask: torch.Tensor
    drop: list[bool]


@dataclass
class LossSums:
    """Loss summed over loss terms, overall and per level, with the term counts (float64).

    ``terms`` counts weighted terms (``Trainer.level_loss_weights``); ``level_terms`` counts each
    level's terms unweighted.
    """

    loss: float
    level_loss: torch.Tensor
    terms: float
    level_terms: torch.Tensor

    def __add__(self, other: "LossSums") -> "LossSums":
        return LossSums(
            self.loss + other.loss,
            self.level_loss + other.level_loss,
            self.terms + other.terms,
            self.level_terms + other.level_terms,
        )

    def means(self, device: torch.device) -> tuple[float, list[float]]:
        """Mean loss and per-level means over every rank's terms (a collective: call on every rank)."""
        # One packed all-reduce, float64 throughout.
        packed = torch.tensor([self.loss, *self.level_loss.tolist(), self.terms, *self.level_terms.tolist()], dtype=torch.float64)
        packed = hdist.sum_over_ranks(packed, device)
        levels = (packed.numel() - 2) // 2
        loss = float(packed[0] / packed[levels + 1].clamp_min(1))
        per_level = (packed[1 : levels + 1] / packed[levels + 2 :].clamp_min(1)).tolist()
        return loss, per_level


@dataclass
class Update:
    """What the optimiser step did: the gradient norm before clipping, the LR it used, and whether
    it was skipped for a non-finite loss or gradient."""

    grad_norm: float
    lr: float
    skipped: bool


@dataclass
class StepStats:
    """One optimiser step: its loss sums and its update."""

    losses: LossSums
    update: Update


@dataclass
class LogWindow:
    """The steps since the last log line: their summed losses and when the window opened."""

    losses: Optional[LossSums] = None
    steps: int = 0
    started: float = field(default_factory=time.time)

    def add(self, stats: StepStats) -> None:
        self.losses = stats.losses if self.losses is None else self.losses + stats.losses
        self.steps += 1
