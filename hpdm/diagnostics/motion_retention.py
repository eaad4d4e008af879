r"""How much of a real video's motion a model's level-0 denoiser keeps (issue 8: still objects).

Level 0 of the pyramid (paper Sec. 4.1) decides where the object is in each of its few frames; the
finer levels follow it. For real synthetic videos (``hpdm.data.synthetic``: one object moving on a
straight line) the level-0 video ``x0`` is noised, ``x = x0 + sigma * n``, and denoised under its
true label; the content probe's reader (``hpdm.diagnostics.synthetic_content.read_video``) measures the
object's ``travel`` (the distance its fitted straight track covers over the clip) in the prediction
``D(x, sigma)`` and in ``x0``. Reported per sigma is the median over videos of

    r = travel(D(x, sigma)) / travel(x0)

``r = 1``: the prediction moves the object as far as the video does; ``r = 0``: it draws the object
in one place for every frame. Beside it, ``frame_mse``: the prediction's squared error per level-0
frame (mean over videos, draws, channels and pixels); a denoiser that pulls the object towards one
place errs most in the first and last frames, where the object is farthest from the middle of its
track. At low sigma every reasonable denoiser keeps the motion its input
shows; where ``r`` falls while the object's place in each frame is still visible in ``x``, the model
prefers still objects, and its samples will too (the content probe reads their ``travel``).

Usage::

    hpdm-diagnose motion --model=pretrained/quickstart --num_videos=36

The real videos follow the source settings in the model's config
(``hpdm.diagnostics.synthetic_content.synthetic_source``); ``--gin_param`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from hpdm.diagnostics.label_sensitivity import Denoiser
from hpdm.diagnostics.synthetic_content import read_video
from hpdm.video.frames import to_uint8


@dataclass
class Retention:
    """Median travel ratio at one sigma over the videos whose clean object has a track."""

    sigma: float
    median_ratio: float
    median_travel: float       # of the predictions
    median_real_travel: float  # of the clean level-0 videos
    videos: int                # (video, noise draw) pairs with a readable track in both
    frame_mse: list            # squared error of the prediction per level-0 frame, all pairs


def read_columns(videos: torch.Tensor) -> dict[str, np.ndarray]:
    """The probe's ``travel`` and ``size_ratio`` of each video ``[B, 3, t, h, w]`` in [-1, 1], each video
    read once (nan where fewer than two frames hold one object)."""
    readings = [read_video(f) for f in to_uint8(videos.detach()).numpy()]
    return {
        name: np.array([getattr(r, name) for r in readings], dtype=np.float64) for name in ("travel", "size_ratio")
    }


def travels(videos: torch.Tensor) -> np.ndarray:
    """The probe's ``travel`` of each video ``[B, 3, t, h, w]`` in [-1, 1] (nan where fewer than two
    frames hold one object)."""
    return read_columns(videos)["travel"]


def size_ratios(videos: torch.Tensor) -> np.ndarray:
    """The probe's ``size_ratio`` of each video ``[B, 3, t, h, w]`` in [-1, 1]: largest over smallest
    object area among its single-object frames (nan where fewer than two)."""
    return read_columns(videos)["size_ratio"]


def real_level0_videos(source, pyramid, first: int, count: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean level-0 videos (Sec. 4.1: the whole video average-pooled to the patch size, as the trainer
    sees it) ``[count, 3, t, h, w]`` and labels ``[count]`` of ``source``'s videos ``first..first+count-1``;
    rendered at the target size ``chunk`` at a time, so memory holds only level 0 of the rest."""
    from hpdm.pyramid import level_video

    videos, labels = [], []
    for start in range(first, first + count, chunk):
        rendered = [source.render(i, pyramid.target_res) for i in range(start, min(first + count, start + chunk))]
        videos.append(level_video(torch.stack([v for v, _, _ in rendered]), pyramid, 0))
        labels += [label for _, label, _ in rendered]
    return torch.cat(videos), torch.tensor(labels)


def measure(
    denoise: Denoiser,
    clean: torch.Tensor,
    labels: torch.Tensor,
    sigmas: Sequence[float],
    repeats: int = 2,
    seed: int = 0,
) -> list[Retention]:
    """``Retention`` per sigma for clean level-0 videos (Sec. 4.1) ``[B, 3, t, h, w]`` and their labels ``[B]``.

    ``repeats`` noise draws per video (from ``seed``), the same at every sigma.
    """
    real = travels(clean)
    moving = np.isfinite(real) & (real > 0)
    finite_real = real[np.isfinite(real)]
    gen = torch.Generator().manual_seed(seed)
    # The same draws at every sigma: rows compare on common noise and do not depend on the sigma list.
    noises = [torch.randn(clean.shape, generator=gen, dtype=clean.dtype) for _ in range(repeats)]
    clean64 = clean.double()
    out = []
    for sigma in sigmas:
        sig = torch.full((clean.shape[0],), float(sigma), dtype=clean.dtype)
        ratios, moved, frame_err = [], [], []
        for noise in noises:
            with torch.no_grad():
                pred = denoise(clean + float(sigma) * noise, sig, labels)
            frame_err.append((pred.double() - clean64).square().mean(dim=(0, 1, 3, 4)))
            t = travels(pred)
            ok = moving & np.isfinite(t)
            ratios.append(t[ok] / real[ok])
            moved.append(t[ok])
        ratios, moved = np.concatenate(ratios), np.concatenate(moved)
        out.append(
            Retention(
                sigma=float(sigma),
                median_ratio=float(np.median(ratios)) if ratios.size else float("nan"),
                median_travel=float(np.median(moved)) if moved.size else float("nan"),
                median_real_travel=float(np.median(finite_real)) if finite_real.size else float("nan"),
                videos=int(ratios.size),
                frame_mse=torch.stack(frame_err).mean(0).tolist(),
            )
        )
    return out


def sample_level0(
    denoise: Denoiser,
    labels: torch.Tensor,
    shape: Sequence[int],
    sigma_range: tuple[float, float],
    num_steps: int = 64,
    seed: int = 0,
    start: Optional[tuple[torch.Tensor, float]] = None,
) -> torch.Tensor:
    """Level-0 samples (Sec. 4.1) ``[B, 3, t, h, w]``, one per label: deterministic Heun sampling
    (EDM Algorithm 1, the sampler of level 0) over ``num_steps`` Karras steps in ``sigma_range``
    (data space, ``model.schedule.sigma_range(0)``) from noise drawn with ``seed``; ``shape`` =
    ``(3, t, h, w)``.

    Retention reads one denoising step; ``travels`` of these samples reads what sampling makes of
    all of them, the number issue 8 is about (the samples' objects should travel as far as the real
    ones), and ``size_ratios`` whether they keep their size meanwhile.

    ``start = (videos, sigma)`` samples from ``videos + sigma * noise`` instead, over the steps of the
    same schedule below ``sigma`` (SDEdit-style): compared with the videos' own travel, it shows
    from which noise level on the model loses their motion.
    """
    from hpdm.samplers.steppers import karras_sigmas, sample_heun

    gen = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(num_steps, float(sigma_range[0]), float(sigma_range[1]))
    noise = torch.randn((len(labels), *shape), generator=gen)
    if start is None:
        x = noise * float(sigmas[0])
    else:
        videos, sigma = start
        if tuple(videos.shape) != (len(labels), *shape):
            raise ValueError(f"start videos {tuple(videos.shape)} do not match {len(labels)} labels of shape {tuple(shape)}")
        sigmas = torch.cat([torch.tensor([float(sigma)], dtype=sigmas.dtype), sigmas[sigmas < float(sigma)]])
        x = videos + float(sigma) * noise

    def step_denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return denoise(x, torch.full((x.shape[0],), float(sigma), dtype=x.dtype), labels)

    with torch.no_grad():
        return sample_heun(step_denoise, x, sigmas)


def format_table(results: Sequence[Retention]) -> str:
    """The CLI's table: one row per sigma."""
    lines = ["sigma    ratio   travel  real    videos  frame mse"]
    lines += [
        f"{r.sigma:<7g}  {r.median_ratio:6.3f}  {r.median_travel:6.3f}  {r.median_real_travel:6.3f}  {r.videos:<6d}  "
        + " ".join(f"{e:.4f}" for e in r.frame_mse)
        for r in results
    ]
    return "\n".join(lines)


def format_level0_samples(denoise, clean, labels, sigma_range, num_steps: int, seed: int, from_sigmas=()) -> str:
    """The CLI's sampling lines: level-0 samples from pure noise for the real videos' labels, then
    from the real videos noised to each of ``from_sigmas``; median travel (with the median ratio to
    the video's own travel where both read) and median size ratio."""
    real = read_columns(clean)
    lines = [
        f"level-0 samples, {num_steps} Heun steps, the real videos' labels (real: travel "
        f"{float(np.nanmedian(real['travel'])):.3f}, size ratio {float(np.nanmedian(real['size_ratio'])):.3f}):"
    ]
    for start in [None] + [(clean, s) for s in from_sigmas]:
        read = read_columns(sample_level0(denoise, labels, clean.shape[1:], sigma_range, num_steps, seed, start))
        t = read["travel"]
        ok = np.isfinite(t) & np.isfinite(real["travel"]) & (real["travel"] > 0)
        what = "from noise" if start is None else f"from the videos at sigma {start[1]:g}"
        ratio = f" (ratio {float(np.median(t[ok] / real['travel'][ok])):.3f})" if start is not None and ok.any() else ""
        lines.append(
            f"  {what:<28} travel {float(np.nanmedian(t)):.3f}{ratio}  size ratio "
            f"{float(np.nanmedian(read['size_ratio'])):.3f}  readable {int(np.isfinite(t).sum())}/{len(t)}"
        )
    return "\n".join(lines)
