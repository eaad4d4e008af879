"""v-prediction preconditioning in EDM's continuous-sigma form (paper Sec. 3.1, 4.6; Salimans & Ho 2022).

A noisy input is ``x = x0 + sigma * eps``. With ``s = sqrt(sigma^2 + sigma_data^2)``,
``alpha = sigma_data / s`` and ``beta = sigma / s``, the network sees ``c_in * x = alpha * x0/sigma_data
+ beta * eps`` and predicts ``v = alpha * eps - beta * x0 / sigma_data``. Then

    x0 = c_skip * x + c_out * v,   c_skip = sigma_data^2 / s^2,   c_out = -sigma * sigma_data / s.

``c_out`` is negative: that is the v sign convention (k-diffusion's ``VDenoiser`` has the same sign).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Preconditioning(NamedTuple):
    """EDM coefficients, each broadcastable against the input."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def v_preconditioning(sigma: torch.Tensor, sigma_data: float) -> Preconditioning:
    """Coefficients for v-prediction at noise level ``sigma`` (any shape); ``c_noise = log(sigma) / 4``."""
    sigma = sigma.to(torch.float32) if not sigma.is_floating_point() else sigma
    var = sigma**2 + sigma_data**2
    return Preconditioning(
        c_skip=sigma_data**2 / var,
        c_out=-sigma * sigma_data / var.sqrt(),
        c_in=1.0 / var.sqrt(),
        c_noise=sigma.log() / 4,
    )


def v_to_x0(v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """Denoised estimate from a v prediction; ``sigma`` broadcasts against ``x``."""
    pre = v_preconditioning(sigma, sigma_data)
    return pre.c_skip * x + pre.c_out * v


def x0_to_v(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The v target for clean ``x0`` given the noisy ``x`` (exact inverse of ``v_to_x0``)."""
    pre = v_preconditioning(sigma, sigma_data)
    return (x0 - pre.c_skip * x) / pre.c_out


def expand_sigma(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``sigma [*lead]`` to broadcast against ``like [*lead, ...]``."""
    return sigma.reshape(*sigma.shape, *([1] * (like.dim() - sigma.dim())))
