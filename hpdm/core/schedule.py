"""Per-level noise schedule with input scaling (paper Sec. 4.5 "Noise Schedule"; Chen 2023; docs/design.md).

Level ``l`` scales its data by ``b_l = input_scale_decay ** l`` before noising (Chen 2023): finer
levels have more strongly correlated pixels, so the same noise destroys less of them and they need
a lower signal-to-noise ratio. In the data space that every sampler and the model interface use,
scaling the data by ``b`` at noise ``sigma_s`` is the same as noise ``sigma = sigma_s / b`` on unscaled
data, so the scaling becomes a per-level shift of the noise levels: training draws ``sigma_s`` from
EDM's log-normal and uses ``sigma = sigma_s / b_l``; sampling runs level ``l`` from
``sigma_max / b_l`` to ``sigma_min / b_l``; the model embeds the scaled ``sigma_s = sigma * b_l``.
One object holds ``b_l`` and every one of those conversions, so training and sampling agree.
"""

from __future__ import annotations

from typing import Sequence

import gin
import torch


def _float_or_floats(value) -> float | tuple[float, ...]:
    """A number as a float, a sequence as a tuple of floats (one per level)."""
    return float(value) if isinstance(value, (int, float)) else tuple(float(v) for v in value)


@gin.configurable
class NoiseSchedule:
    """Noise levels per pyramid level.

    Args:
      sigma_data: standard deviation of the data (videos in [-1, 1]).
      p_mean, p_std: EDM's log-normal training distribution of the scaled sigma; a float for every
        level, or a sequence with one value per level (which must then match the model's levels).
      sigma_min, sigma_max: sampling range of the scaled sigma.
      input_scale_decay: ``b_l = input_scale_decay ** l``.
      context_prob: probability that a training sample puts the levels below a random cut at their
        context noise level and leaves them out of the loss (default 0.5). Not in the paper: Eq. 4
        draws every level's noise independently. It is needed because the sampler feeds each
        finished lower level to the next ones as nearly clean context, at the small fixed
        ``context_sigma`` (docs/design.md "Inference"), and Eq. 4's log-normal puts a level there with
        probability about 1.5e-5: without it, training would almost never show a level the
        ancestors it gets at inference. 0 trains Eq. 4 alone.
    """

    def __init__(
        self,
        sigma_data: float = 0.5,
        p_mean: float | Sequence[float] = -1.2,
        p_std: float | Sequence[float] = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        input_scale_decay: float = 0.7,
        context_prob: float = 0.5,
    ):
        if not 0 < input_scale_decay <= 1:
            raise ValueError(f"input_scale_decay must be in (0, 1], got {input_scale_decay}")
        if not 0 <= context_prob <= 1:
            raise ValueError(f"context_prob must be a probability, got {context_prob}")
        self.sigma_data = sigma_data
        self.p_mean = _float_or_floats(p_mean)
        self.p_std = _float_or_floats(p_std)
        if min(self.p_std if isinstance(self.p_std, tuple) else (self.p_std,)) < 0:
            raise ValueError(f"p_std must be >= 0, got {p_std}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.input_scale_decay = input_scale_decay
        self.context_prob = context_prob

    @staticmethod
    def _per_level(value, name: str, num_levels: int) -> torch.Tensor:
        if isinstance(value, float):
            return torch.full((num_levels,), value)
        if len(value) != num_levels:
            raise ValueError(f"NoiseSchedule.{name} has {len(value)} per-level values for {num_levels} levels")
        return torch.tensor(value)

    def check_num_levels(self, num_levels: int) -> None:
        """Raise ``ValueError`` if per-level settings do not fit a ``num_levels`` pyramid."""
        self.log_normal(num_levels)

    def log_normal(self, num_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level ``(p_mean, p_std)`` ``[num_levels]`` of the training noise of Eq. 4 (EDM's log-normal,
        Sec. 4.6): ``log(sigma * b_l) ~ N(p_mean, p_std^2)``."""
        return self._per_level(self.p_mean, "p_mean", num_levels), self._per_level(self.p_std, "p_std", num_levels)

    def input_scale(self, level: int | torch.Tensor):
        """``b_l``, the data scaling of ``level`` (a tensor of levels gives a tensor)."""
        return self.input_scale_decay**level

    def level_scales(self, num_levels: int, device=None) -> torch.Tensor:
        """``[b_0, ..., b_{n-1}]``."""
        return self.input_scale_decay ** torch.arange(num_levels, dtype=torch.float32, device=device)

    def model_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Scaled noise level ``sigma * b_l`` for data-space ``sigma [..., n]`` of levels ``0..n-1``."""
        return sigma * self.level_scales(sigma.shape[-1], sigma.device)

    def sigma_range(self, level: int) -> tuple[float, float]:
        """Data-space ``(sigma_min, sigma_max)`` for sampling ``level``."""
        b = self.input_scale(level)
        return self.sigma_min / b, self.sigma_max / b

    def context_sigma(self, level: int) -> float:
        """Data-space noise level at which an already generated ``level`` is fed as context."""
        return self.sigma_min / self.input_scale(level)

    def sample_training_sigmas(
        self, batch: int, num_levels: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Data-space ``sigma [B, n]`` and the loss mask ``[B, n]`` (Eq. 4: independent per level).

        Then, an addition to Eq. 4 (see ``context_prob``): with probability ``context_prob`` a sample
        draws a cut ``k`` in ``1..n-1``; levels below it sit at their context noise level, as the
        sampler's finished ancestors do, and are masked out of the loss.
        """
        p_mean, p_std = self.log_normal(num_levels)
        log_sigma = p_mean + p_std * torch.randn(batch, num_levels, generator=generator)
        sigma = log_sigma.exp() / self.level_scales(num_levels)
        mask = torch.ones(batch, num_levels, dtype=torch.bool)
        if num_levels > 1 and self.context_prob > 0:
            use = torch.rand(batch, generator=generator) < self.context_prob
            cut = torch.randint(1, num_levels, (batch,), generator=generator)
            below = torch.arange(num_levels)[None, :] < cut[:, None]
            ctx = below & use[:, None]
            ctx_sigma = torch.tensor([self.context_sigma(l) for l in range(num_levels)])
            sigma = torch.where(ctx, ctx_sigma.expand(batch, -1), sigma)
            mask = ~ctx
        return sigma.to(device), mask.to(device)
