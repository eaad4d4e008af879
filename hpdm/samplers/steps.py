"""Per-level sampling schedules (paper App. C; App. D item 3; docs/design.md "Inference").

Defaults follow the paper: level 0 uses EDM's stochastic sampler with Heun correction and 128 steps;
every later level uses deterministic first-order (Euler) steps, because second-order correction
produced grainy artifacts there (App. D item 3), with the number of steps halved per level. Every
choice can be overridden per level (gin or constructor).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import gin

from hpdm.samplers.steppers import SAMPLERS, karras_sigmas


@dataclass(frozen=True)
class LevelSteps:
    """How one level is sampled: stepper name, step count, Karras rho and EDM churn settings."""

    stepper: str
    num_steps: int
    rho: float = 7.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0

    def sigmas(self, sigma_min: float, sigma_max: float):
        """Karras schedule over this level's data-space range (EDM Eq. 5), float64 with a final 0."""
        return karras_sigmas(self.num_steps, sigma_min, sigma_max, self.rho)

    def options(self) -> dict:
        """Keyword arguments of the stepper function (churn settings; Euler ignores them)."""
        return dict(s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise)


def _pick(values: Optional[Sequence], level: int, default):
    """Per-level override: ``values[level]`` if given (a shorter list repeats its last entry)."""
    if values is None or len(values) == 0:
        return default
    return values[min(level, len(values) - 1)]


@gin.configurable
class SamplingSteps:
    """Steps, stepper and churn for every pyramid level.

    Args:
      base_steps: steps of level 0 (paper: 128).
      step_decay: divide the step count by this per level (paper: 2); never below ``min_steps``.
      min_steps: lower bound on any level's steps.
      first_stepper / later_stepper: "heun" or "euler" for level 0 / levels >= 1.
      s_churn, s_tmin, s_tmax, s_noise: EDM Algorithm 2 churn for level 0 (EDM's ImageNet-64
        settings); later levels are deterministic unless overridden.
      rho: Karras schedule exponent.
      num_steps, steppers, churn: optional per-level lists overriding the rules above (a shorter list
        repeats its last entry), e.g. ``num_steps=[64, 16, 4]``, ``steppers=["heun", "heun"]``.
    """

    def __init__(
        self,
        base_steps: int = 128,
        step_decay: float = 2.0,
        min_steps: int = 1,
        first_stepper: str = "heun",
        later_stepper: str = "euler",
        s_churn: float = 40.0,
        s_tmin: float = 0.05,
        s_tmax: float = 50.0,
        s_noise: float = 1.003,
        rho: float = 7.0,
        num_steps: Optional[Sequence[int]] = None,
        steppers: Optional[Sequence[str]] = None,
        churn: Optional[Sequence[float]] = None,
    ):
        for name in (first_stepper, later_stepper, *(steppers or ())):
            if name not in SAMPLERS:
                raise ValueError(f"unknown stepper {name!r}; choose one of {sorted(SAMPLERS)}")
        if base_steps < 1 or min_steps < 1 or step_decay < 1:
            raise ValueError("base_steps and min_steps must be >= 1 and step_decay >= 1")
        if num_steps is not None and any(int(n) < 1 for n in num_steps):
            raise ValueError(f"every level needs at least one step, got num_steps={list(num_steps)}")
        self.base_steps = base_steps
        self.step_decay = step_decay
        self.min_steps = min_steps
        self.first_stepper = first_stepper
        self.later_stepper = later_stepper
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise
        self.rho = rho
        self.num_steps = None if num_steps is None else [int(n) for n in num_steps]
        self.steppers = None if steppers is None else list(steppers)
        self.churn = None if churn is None else [float(c) for c in churn]

    def level(self, level: int) -> LevelSteps:
        """The ``LevelSteps`` of ``level``."""
        default_steps = max(self.min_steps, int(round(self.base_steps / self.step_decay**level)))
        steps = int(_pick(self.num_steps, level, default_steps))
        stepper = _pick(self.steppers, level, self.first_stepper if level == 0 else self.later_stepper)
        churn = _pick(self.churn, level, self.s_churn if level == 0 else 0.0)
        return LevelSteps(stepper, steps, self.rho, churn, self.s_tmin, self.s_tmax, self.s_noise)

    def __repr__(self) -> str:
        return f"SamplingSteps({[self.level(l) for l in range(3)]}...)"


def sampling_steps_record(schedule: SamplingSteps, num_levels: int) -> list[dict]:
    """Each level's ``LevelSteps`` as plain JSON values (non-finite floats as None), for result files."""
    def plain(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return [{name: plain(value) for name, value in asdict(schedule.level(l)).items()} for l in range(num_levels)]
