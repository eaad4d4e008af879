"""Per-level denoising error of a trained HPDM: a training diagnostic beside the sample metrics.

For level ``l`` of real patch hierarchies, the ancestors ``0..l-1`` sit at their context noise level
(the regime they are fed in at inference, DESIGN.md "Inference"), level ``l`` is noised at ``sigma``,
and the model's x0 estimate is compared with the clean patch (the x0 form of the paper's Eq. 4).
The figure reported is ``E||D - x0||^2 / sigma^2`` per pixel: 1 means the noise passes through
untouched (the identity denoiser), 0 a perfect denoiser. Finer levels are not run: the
coarse-to-fine flow makes level ``l`` independent of them.

    python -m hpdm.diagnostics.denoising --model=pretrained/quickstart

prints the table for built-in synthetic videos 1000..1015 (the training distribution itself: the
synthetic source has no held-out split, so this measures fit, not generalisation).
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

    ``model`` is called as ``model(x, coords, sigma, cond)`` on the first ``level + 1`` levels
    (``hpdm.core.HPDM``'s interface); ``model.schedule.context_sigma(k)`` gives the ancestors' noise.
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
    denoised = model(x, coords[:, : level + 1], sigmas, cond)
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


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import flags

    from hpdm.core import load_pretrained
    from hpdm.data.synthetic import SyntheticVideos
    from hpdm.pyramid import sample_hierarchy

    flags_ = flags.FLAGS
    model = load_pretrained(flags_.model, use_ema=True)
    source = SyntheticVideos()
    generator = torch.Generator().manual_seed(flags_.seed)
    patches, coords, labels = [], [], []
    for i in range(flags_.num_videos):
        video, label, _ = source.render(flags_.first_index + i, model.pyramid.target_res)
        p, c = sample_hierarchy(video, model.pyramid, generator)
        patches.append(p)
        coords.append(c)
        labels.append(label)
    cond = {"label": torch.tensor(labels)} if getattr(model, "num_classes", 0) else None
    sigmas = [float(s) for s in flags_.sigmas]
    table = denoising_table(model, torch.stack(patches), torch.stack(coords), sigmas, cond, flags_.seed)
    print("mse / sigma^2 (1 = no denoising)")
    print("level  " + "  ".join(f"sigma={s:<6g}" for s in sigmas))
    for level, row in enumerate(table):
        print(f"{level:<5}  " + "  ".join(f"{r:<12.3f}" for r in row))


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("model", None, "training workdir or exported model directory.")
    flags.DEFINE_integer("num_videos", 16, "synthetic videos to measure on.")
    flags.DEFINE_integer("first_index", 1000, "first synthetic video index.")
    flags.DEFINE_list("sigmas", ["0.01", "0.05", "0.2", "1.0"], "data-space noise levels.")
    flags.DEFINE_integer("seed", 0, "seed of the patch offsets and the noise.")
    flags.mark_flag_as_required("model")
    app.run(main)


if __name__ == "__main__":
    run()
