"""Train the quickstart model's level 0 alone and follow how much motion it keeps.

Level 0 of the quickstart pyramid (paper Sec. 4.1) denoises the whole 4x16x16 video from the class
label, and decides where the object is in each frame; the finer levels follow it. ``train_level0``
trains that level only (the model ``build_model`` makes from ``gin/quickstart.gin`` plus bindings,
from scratch or with weights loaded by the caller), on synthetic videos pooled to level 0 as the
trainer does, and every ``eval_every`` steps reports one row: the median motion retention at sigma 1
and 2 (``hpdm.diagnostics.motion_retention`` on the motion tool's 36 videos and noise draws), the x0
squared error there, and the median travel and size ratio of level-0 samples for the same 36 labels
(``sample_travel``, ``sample_size_ratio``; ``sample_steps`` Heun steps; real videos 0.37 and 1.07). It
is how ``hpdm.layers.LocalTokenMixing`` was chosen (pretrained/quickstart/README.md): two runs side by
side, one thread each, compare architectures at equal steps::

    hpdm-diagnose level0-ablation --gin_param="HPDM.token_mixing=None" --output=linear.jsonl &
    hpdm-diagnose level0-ablation --output=mixing.jsonl &

With ``--init_from`` it fine-tunes instead, e.g. the shipped model with and without a new part
(``--init_from=pretrained/quickstart --gin_param="HPDM.block_mixing=(3, 3, 3)"``).

The optimiser is AdamW (not the trainer's LAMB) with a linear warm-up and a cosine decay; the loss is
the v-space squared error (Eq. 4 on one level) at the model's level-0 training noise.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Collection, Sequence

import numpy as np
import torch

EVAL_SIGMAS = (1.0, 2.0)


def v_space_loss(model, coords, x0, labels, sigma, noise):
    """Eq. 4 on level 0 alone: the x0 error weighted to v space, ``(sigma^2 + sd^2) / (sigma sd)^2``."""
    sd = model.schedule.sigma_data
    noisy = x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    pred = model(x=noisy[:, None], coords=coords.expand(len(x0), 1, -1), sigma=sigma[:, None], cond={"label": labels})[:, 0]
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return ((pred - x0) ** 2).mean(dim=(1, 2, 3, 4)).mul(weight).mean()


@torch.no_grad()
def evaluate(model, coords, clean, labels, sample_steps: int = 0) -> dict:
    """One row's figures for clean level-0 videos ``[B, 3, t, h, w]`` and their labels: ``retention`` (median
    travel ratio at ``EVAL_SIGMAS``), ``x0_mse`` there and, with ``sample_steps``, the travel and size
    ratio of level-0 samples; the model's training mode is restored after."""
    from hpdm.diagnostics.label_sensitivity import level0_denoiser
    from hpdm.diagnostics.motion_retention import measure, read_columns, sample_level0

    was_training = model.training
    model.eval()
    denoise = level0_denoiser(model)
    retention = measure(denoise, clean, labels, EVAL_SIGMAS, repeats=2, seed=0)
    extra = {}
    if sample_steps > 0:
        read = read_columns(sample_level0(denoise, labels, clean.shape[1:], model.schedule.sigma_range(0), sample_steps))
        extra = dict(
            sample_travel=round(float(np.nanmedian(read["travel"])), 3),
            sample_size_ratio=round(float(np.nanmedian(read["size_ratio"])), 3),
        )
    gen = torch.Generator().manual_seed(0)
    mse = []
    for sigma in EVAL_SIGMAS:
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        sig = torch.full((len(clean), 1), sigma)
        pred = model(x=noisy[:, None], coords=coords.expand(len(clean), 1, -1), sigma=sig, cond={"label": labels})[:, 0]
        mse.append(round(float((pred - clean).square().mean()), 5))
    model.train(was_training)
    return dict(retention=[round(r.median_ratio, 3) for r in retention], x0_mse=mse, **extra)


def build_model(gin_files: Sequence[str] = ("gin/quickstart.gin",), bindings: Sequence[str] = (), seed: int = 0):
    """``(HPDM, SyntheticVideos)`` of ``gin_files`` plus ``bindings``, parsed strictly in a gin config of
    their own (the caller's is left as it was); the model's initialisation is drawn from ``seed``."""
    from hpdm import gin_utils
    from hpdm.core import HPDM
    from hpdm.data.synthetic import SyntheticVideos

    with gin_utils.isolated_config():
        gin_utils.parse(gin_files, bindings, skip_unknown=False)
        torch.manual_seed(seed)
        return HPDM(), SyntheticVideos()


def train_level0(
    model,
    source,
    emit: Callable[[dict], None],
    *,
    pretrained: Collection[str] = (),
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    pretrained_lr: float = 1e-4,
    warmup_steps: int = 100,
    train_videos: int = 20000,
    eval_videos: int = 36,
    eval_every: int = 500,
    sample_steps: int = 64,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> None:
    """Train ``model``'s level 0 on ``source``'s videos 50,000 on and evaluate it on videos 1,000 on.

    ``emit`` receives one row per evaluation (before the first step, every ``eval_every`` steps and
    after the last): ``step``, ``seconds``, ``loss`` (not at step 0) and ``evaluate``'s figures.
    Parameters named in ``pretrained`` (loaded by the caller) peak at ``pretrained_lr``, the others at
    ``lr``; ``seed`` draws the batches and the training noise. ``say`` gets the progress lines.
    """
    from hpdm.diagnostics.motion_retention import real_level0_videos

    start = time.time()
    train_x, train_y = real_level0_videos(source, model.pyramid, 50_000, train_videos)
    eval_x, eval_y = real_level0_videos(source, model.pyramid, 1000, eval_videos)
    say(f"rendered {len(train_x)} + {len(eval_x)} level-0 videos in {time.time() - start:.0f} s")

    pretrained = set(pretrained)
    params = dict(model.named_parameters())
    groups = [
        dict(params=[p for n, p in params.items() if n in pretrained], peak=pretrained_lr),
        dict(params=[p for n, p in params.items() if n not in pretrained], peak=lr),
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    coords = model.pyramid.coords(0, (0, 0, 0))
    p_mean, p_std = model.schedule.log_normal(model.num_levels)
    mean, std = float(p_mean[0]), float(p_std[0])  # level 0: b_0 = 1, so model and data sigma agree
    gen = torch.Generator().manual_seed(seed + 1)

    start = time.time()
    row = evaluate(model, coords, eval_x, eval_y, sample_steps)
    emit(dict(step=0, seconds=round(time.time() - start), **row))
    model.train()
    for step in range(1, steps + 1):
        scale = min(1.0, step / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * scale
        index = torch.randint(0, len(train_x), (batch_size,), generator=gen)
        sigma = torch.exp(mean + std * torch.randn(batch_size, generator=gen))
        noise = torch.randn(train_x[index].shape, generator=gen)
        loss = v_space_loss(model, coords, train_x[index], train_y[index], sigma, noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            row = evaluate(model, coords, eval_x, eval_y, sample_steps)
            emit(dict(step=step, seconds=round(time.time() - start), loss=round(loss.item(), 4), **row))
        elif step % 50 == 0:
            eta = (time.time() - start) / step * (steps - step)
            say(f"step {step}/{steps} loss {loss.item():.4f} ETA {eta / 60:.1f} min")
