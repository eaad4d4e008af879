"""The joint hierarchical denoising loss (paper Eq. 4), in v space with per-level terms reported.

Each level of a sample is noised independently at its own sigma (drawn by the model's
``NoiseSchedule``, which applies the per-level input scaling); the model denoises all levels jointly
and the squared error of the v prediction is averaged per level. v-space MSE equals EDM's weighted
x0 loss ``||D - x0||^2 / c_out^2``. Levels drawn at the context noise level (the inference regime of
ancestors) are excluded from the loss.
"""

from __future__ import annotations

import torch

from hpdm.core.precond import expand_sigma, x0_to_v


def diffusion_loss(
    model,
    x0: torch.Tensor,
    coords: torch.Tensor,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    level_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 for clean patches ``x0 [B, L+1, C, t, h, w]``; returns ``(loss, per_level [L+1])``.

    ``sigma``, ``noise`` and ``loss_mask`` are drawn (from ``generator``) unless given, which lets a
    test fix them. ``level_weights [L+1]`` (default: all 1, the paper's equal sum over levels) weight
    each level's terms; the loss is their weighted mean, so its scale stays that of one term.
    ``per_level[l]`` is the unweighted mean v-space squared error of level ``l`` over the samples
    where it was in the loss (0 where none was).
    """
    batch, levels = x0.shape[:2]
    if sigma is None:
        sigma, drawn_mask = model.schedule.sample_training_sigmas(batch, levels, generator, device=x0.device)
        loss_mask = drawn_mask if loss_mask is None else loss_mask
    if loss_mask is None:
        loss_mask = torch.ones(batch, levels, dtype=torch.bool, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x = x0 + expand_sigma(sigma, x0) * noise
    denoised = model(x, sigma, coords, cond=cond)
    sd = model.schedule.sigma_data
    sig = expand_sigma(sigma, x0)
    err = (x0_to_v(denoised, x, sig, sd) - x0_to_v(x0, x, sig, sd)).square().flatten(2).mean(-1)  # [B, L+1]
    mask = loss_mask.to(err.dtype)
    per_level = (err * mask).sum(0) / mask.sum(0).clamp_min(1.0)
    weights = mask if level_weights is None else mask * level_term_weights(level_weights, levels, err)
    # The floor only matters when no term is in the loss (then the loss is 0).
    loss = (err * weights).sum() / weights.sum().clamp_min(1e-12)
    return loss, per_level.detach()


def level_term_weights(level_weights, num_levels: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """Per-level weights of Eq. 4's sum over levels as a float tensor ``[num_levels]`` (on ``like``'s
    device and dtype), checked: one finite, non-negative entry per level, not all zero."""
    w = torch.as_tensor(level_weights, dtype=torch.float64).flatten()
    if w.numel() != num_levels:
        raise ValueError(f"level_weights has {w.numel()} entries for {num_levels} levels")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
        raise ValueError(f"level_weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    if like is not None:
        w = w.to(like.device, like.dtype)
    return w
