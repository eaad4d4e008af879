"""Per-level denoising error of a trained HPDM: a training diagnostic beside the sample metrics.

For level ``l`` of real patch hierarchies, the ancestors ``0..l-1`` sit at their context noise level
(the regime they are fed in at inference, docs/design.md, "Inference"), level ``l`` is noised at ``sigma``,
and the model's x0 estimate is compared with the clean patch (the x0 form of the paper's Eq. 4).
The figure reported is ``E||D - x0||^2 / sigma^2`` per pixel: 1 means the noise passes through
untouched (the identity denoiser), 0 a perfect denoiser. Finer levels are not run: the
coarse-to-fine flow makes level ``l`` independent of them.

    hpdm-diagnose denoising --model=pretrained/quickstart

prints the table for built-in synthetic videos 1000..1015 (the training distribution itself: the
synthetic source has no held-out split, so this measures fit, not generalisation), rendered with the
source settings of the model's config (``video_table``).
"""

from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def level_denoising_ratio(
    model,
    x0: torch.Tensor,
    coords: torch.Tensor,
    level: int,
    sigma: float,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """``mean((D - x0)^2) / sigma^2`` of ``level`` for clean hierarchies ``x0 [B, L+1, C, t, h, w]``.

    ``model`` is called as ``model(x=..., coords=..., sigma=..., cond=...)`` on the first ``level + 1``
    levels (``hpdm.core.HPDM``'s forward, by keyword so that its argument order is free);
    ``model.schedule.context_sigma(k)`` gives the ancestors' noise.
    """
    if not 0 <= level < x0.shape[1]:
        raise ValueError(f"level {level} out of range for hierarchies of {x0.shape[1]} levels")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    x0 = x0[:, : level + 1]
    levels = torch.tensor([model.schedule.context_sigma(k) for k in range(level)] + [float(sigma)], dtype=x0.dtype)
    sigmas = levels.to(x0.device).expand(x0.shape[0], -1)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x = x0 + sigmas[:, :, None, None, None, None] * noise
    denoised = model(x=x, coords=coords[:, : level + 1], sigma=sigmas, cond=cond)
    return ((denoised[:, level] - x0[:, level]).square().mean() / sigma**2).item()


def denoising_table(
    model, x0: torch.Tensor, coords: torch.Tensor, sigmas: Sequence[float], cond: dict | None = None, seed: int = 0
) -> list[list[float]]:
    """``table[l][i]``: ``level_denoising_ratio`` of level ``l`` at ``sigmas[i]`` (one seeded generator)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        [level_denoising_ratio(model, x0, coords, level, s, cond, generator) for s in sigmas]
        for level in range(x0.shape[1])
    ]


def video_table(model, source, num_videos: int = 16, first_index: int = 1000, sigmas: Sequence[float] = (0.01, 0.05, 0.2, 1.0), seed: int = 0) -> list[list[float]]:
    """``denoising_table`` of ``model`` on one random patch hierarchy (Sec. 4.1) of each of ``source``'s
    videos ``first_index..first_index+num_videos-1``, under their labels when the model is
    class-conditional; ``seed`` draws the patch offsets and the noise."""
    from hpdm.pyramid import sample_hierarchy

    generator = torch.Generator().manual_seed(seed)
    patches, coords, labels = [], [], []
    for i in range(num_videos):
        video, label, _ = source.render(first_index + i, model.pyramid.target_res)
        p, c = sample_hierarchy(video, model.pyramid, generator)
        patches.append(p)
        coords.append(c)
        labels.append(label)
    cond = {"label": torch.tensor(labels)} if getattr(model, "num_classes", 0) else None
    return denoising_table(model, torch.stack(patches), torch.stack(coords), [float(s) for s in sigmas], cond, seed)


def format_table(sigmas: Sequence[float], table: Sequence[Sequence[float]]) -> str:
    """The CLI's table: one row per level, one column per sigma."""
    lines = ["mse / sigma^2 (1 = no denoising)", "level  " + "  ".join(f"sigma={s:<6g}" for s in sigmas)]
    lines += [f"{level:<5}  " + "  ".join(f"{r:<12.3f}" for r in row) for level, row in enumerate(table)]
    return "\n".join(lines)
