"""Named FVD evaluation protocols: the paper's and the literature's variants (paper Sec. 5, Appendix B).

An FVD is only comparable with another computed the same way: which real clips, how many fakes,
how many frames, at what size, from which weights, sampled how. Each protocol fixes all of it;
``hpdm-eval --protocol=NAME`` applies one, explicit flags still override single settings, and every
override is recorded next to the protocol's name in the result.

- ``paper``: the paper's FVD (its UCF-101 256x256 comparison): 10,000 generated videos against every clip
  of the train split of UCF-101 split 1 (Appendix B), first 16 frames.
- ``fvd512``: FVD@512, the paper's ablation metric (Tab. 3 / 4): 512 generated videos, same reals.
- ``fvd2048_16f``: StyleGAN-V's ``fvd2048_16f``: 2,048 generated videos against 2,048 real clips.
- ``fvd10k``: 10,000 generated videos against 10,000 real clips (the whole train split of UCF-101
  split 1 has fewer, 9,537, so on UCF-101 it computes the same number as ``paper``).

All of them: class labels drawn with the real split's class frequencies, 50% tile overlap along
``h`` and ``w`` (App. C: the paper's metric setting), the paper's step schedule (App. C; App. D
item 3; ``gin/samplers/paper.gin``) and the EMA weights.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

# gin/samplers/paper.gin, plus the per-level lists reset: a run's config may bind any of them
# (a smoke run's short schedule), and the protocol must not inherit that.
PAPER_SCHEDULE = (
    "SamplingSteps.base_steps = 128",
    "SamplingSteps.step_decay = 2",
    "SamplingSteps.min_steps = 1",
    "SamplingSteps.first_stepper = 'heun'",
    "SamplingSteps.later_stepper = 'euler'",
    "SamplingSteps.s_churn = 40.0",
    "SamplingSteps.s_tmin = 0.05",
    "SamplingSteps.s_tmax = 50.0",
    "SamplingSteps.s_noise = 1.003",
    "SamplingSteps.rho = 7.0",
    "SamplingSteps.num_steps = None",
    "SamplingSteps.steppers = None",
    "SamplingSteps.churn = None",
)

# The settings a flag of the same name can override.
OVERRIDABLE = ("num_fake", "num_real", "num_frames", "resolution", "overlap", "guidance_scale", "use_ema")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
      name / summary: what ``--protocol`` takes and what the result says it is.
      num_fake: generated videos.
      num_real: real clips, a seed-fixed uniform sample of the split; 0 = every clip.
      num_frames: the first frames of every video, at its native frame rate.
      resolution: ``(H, W)`` both sides are prepared at (short side resized, centre crop).
      real_split / real_subset: UCF-101 split and subset of the real clips.
      real_seed: order of the real clips (fixed, so their statistics are cached once).
      overlap / use_ema / guidance_scale / sampler_bindings: how fakes are sampled from a workdir.
    """

    name: str
    summary: str
    num_fake: int
    num_real: int
    num_frames: int = 16
    resolution: tuple[int, int] = (256, 256)
    real_split: int = 1
    real_subset: str = "train"
    real_seed: int = 0
    overlap: str = "hw"
    use_ema: bool = True
    guidance_scale: float = 1.0
    sampler_bindings: tuple[str, ...] = PAPER_SCHEDULE

    def settings(self) -> dict:
        """The overridable settings, flag name -> value."""
        return {name: _normalised(name, getattr(self, name)) for name in OVERRIDABLE}


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("paper", "the paper's FVD: 10,000 fakes vs every UCF-101 train-split-1 clip", 10_000, 0),
        Protocol("fvd512", "FVD@512 (the paper's ablations): 512 fakes vs every train-split-1 clip", 512, 0),
        Protocol("fvd2048_16f", "StyleGAN-V's fvd2048_16f: 2,048 fakes vs 2,048 train-split-1 clips", 2048, 2048),
        Protocol("fvd10k", "10,000 fakes vs 10,000 train-split-1 clips", 10_000, 10_000),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; the error lists the known ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _normalised(name: str, value):
    if name == "resolution" and value is not None:
        return [int(v) for v in value]
    if name == "guidance_scale":
        return float(value)
    return value


def apply_overrides(protocol: Protocol, given: Mapping[str, object]) -> tuple[dict, dict]:
    """``(settings, overrides)``: the protocol's settings with the explicitly ``given`` ones replacing
    them, and those of the given ones that differ from the protocol (the override record)."""
    settings = protocol.settings()
    overrides = {}
    for name, value in given.items():
        if name not in settings:
            raise KeyError(f"{name!r} is not a protocol setting; overridable: {', '.join(OVERRIDABLE)}")
        value = _normalised(name, value)
        if value != settings[name]:
            overrides[name] = value
        settings[name] = value
    return settings, overrides
