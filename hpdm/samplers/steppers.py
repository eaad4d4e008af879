"""EDM samplers as pure functions over a denoiser (Karras et al. 2022, "EDM"; paper Sec. 4.4, App. C).

Every sampler has the same signature, in the manner of k-diffusion's ``sampling.py``::

    sample_xxx(denoise, x, sigmas, *, noise=None, callback=None, **stepper_options) -> x

``denoise(x, sigma) -> x0`` is any denoiser: ``x`` has any shape (a batch of 5-D videos, a whole
level video assembled from tiles, ...) and ``sigma`` is a Python float shared by the whole tensor.
``sigmas`` is the decreasing noise schedule ending in 0 (``karras_sigmas``). ``x`` enters at noise
level ``sigmas[0]``. ``noise(step, x) -> Tensor`` supplies standard normal noise shaped like ``x``
for the stochastic "churn" of step ``step``; it is called only for steps that churn, so a caller that
draws from its own ``torch.Generator`` gets reproducible samples. The ODE derivative is EDM's
``d = (x - D(x; sigma)) / sigma`` (Algorithm 1/2, line "d_i").
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def default_noise(step: int, x: torch.Tensor) -> torch.Tensor:
    """Global-RNG noise; pass a seeded source instead when samples must be reproducible."""
    del step
    return torch.randn_like(x)


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's time steps (Karras et al. 2022, Eq. 5) with a final 0 appended: ``[num_steps + 1]``, float64.

    ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``; float64 so
    the schedule itself adds no rounding to a float64 reference run.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if num_steps == 1:
        return torch.tensor([float(sigma_max), 0.0], dtype=torch.float64)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def churn_gamma(sigma: float, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """EDM Algorithm 2, line 4: ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` inside ``[S_tmin, S_tmax]``."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / num_steps, math.sqrt(2.0) - 1.0)


def euler_step(denoise: Denoiser, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One deterministic first-order step of the probability-flow ODE (EDM Algorithm 1 without line 9)."""
    d = (x - denoise(x, sigma)) / sigma
    return x + (sigma_next - sigma) * d


def heun_step(
    denoise: Denoiser,
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    gamma: float = 0.0,
    eps: Optional[torch.Tensor] = None,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """One step of EDM's stochastic sampler, Algorithm 2 lines 4-10.

    Churn (lines 5-6): raise the noise level to ``sigma_hat = sigma (1 + gamma)`` by adding
    ``sqrt(sigma_hat^2 - sigma^2) S_noise eps``. Euler step from ``sigma_hat`` to ``sigma_next``
    (lines 7-8), then Heun's second-order correction (lines 9-11) unless ``sigma_next == 0``, where
    ``d`` would divide by zero.
    """
    sigma_hat = sigma * (1.0 + gamma)
    if gamma > 0:
        if eps is None:
            raise ValueError("a churning step (gamma > 0) needs its noise eps")
        x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * eps
    d = (x - denoise(x, sigma_hat)) / sigma_hat
    x_next = x + (sigma_next - sigma_hat) * d
    if sigma_next != 0:
        d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_next)
    return x_next


def sample_euler(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Optional[NoiseSource] = None,
    callback: Optional[Callback] = None,
    **unused,
) -> torch.Tensor:
    """Deterministic Euler sampling (the later pyramid levels, paper App. C / App. D item 3).

    Extra keyword arguments (churn settings) are accepted and ignored so that every sampler can be
    called with one per-level option dict; the noise source is never called.
    """
    del noise, unused
    sig = [float(s) for s in sigmas]
    for i in range(len(sig) - 1):
        x = euler_step(denoise, x, sig[i], sig[i + 1])
        if callback is not None:
            callback({"step": i, "num_steps": len(sig) - 1, "sigma": sig[i], "x": x})
    return x


def sample_heun(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Optional[NoiseSource] = None,
    callback: Optional[Callback] = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """EDM's stochastic sampler with Heun correction, Algorithm 2 (level 0, paper App. C).

    ``s_churn = 0`` is the deterministic Heun sampler (Algorithm 1), identical to k-diffusion's
    ``sample_heun`` with ``s_churn=0``.
    """
    noise = default_noise if noise is None else noise
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1
    for i in range(n):
        gamma = churn_gamma(sig[i], n, s_churn, s_tmin, s_tmax)
        eps = noise(i, x) if gamma > 0 else None
        x = heun_step(denoise, x, sig[i], sig[i + 1], gamma, eps, s_noise)
        if callback is not None:
            callback({"step": i, "num_steps": n, "sigma": sig[i], "x": x})
    return x


SAMPLERS = {"euler": sample_euler, "heun": sample_heun}


def get_sampler(name: str):
    """Sampler function by name (``"heun"`` or ``"euler"``)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown stepper {name!r}; choose one of {sorted(SAMPLERS)}") from None
