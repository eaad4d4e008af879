"""Train the quickstart model's level 0 alone and follow how much motion it keeps.

Level 0 of the quickstart pyramid (paper Sec. 4.1) denoises the whole 4x16x16 video from the class
label, and decides where the object is in each frame; the finer levels follow it. This script trains
that level only (the model from ``gin/quickstart.gin`` plus ``--gin_param`` bindings, from scratch or
from ``--init_from``), on synthetic videos pooled to level 0 as the trainer does, and every
``--eval_every`` steps prints one JSON line: the median motion retention at sigma 1 and 2
(``hpdm.diagnostics.motion_retention`` on the CLI's 36 videos and noise draws), the x0 squared error
there, and the median travel and size ratio of level-0 samples for the same 36 labels (``sample_travel``,
``sample_size_ratio``; ``--sample_steps`` Heun steps; real videos 0.37 and 1.07). It is how ``hpdm.layers.LocalTokenMixing`` was chosen (pretrained/quickstart/README.md):
two runs side by side, one thread each, compare architectures at equal steps::

    python hpdm/diagnostics/level0_ablation.py --gin_param="HPDM.token_mixing=None" --output=linear.jsonl &
    python hpdm/diagnostics/level0_ablation.py --output=mixing.jsonl &

With ``--init_from`` it fine-tunes instead, e.g. the shipped model with and without a new part
(``--init_from=pretrained/quickstart --gin_param="HPDM.block_mixing=(3, 3, 3)"``).

The optimiser is AdamW (not the trainer's LAMB) with a linear warm-up and a cosine decay; the loss is
the v-space squared error (Eq. 4 on one level) at the model's level-0 training noise.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch
from absl import app, flags

flags.DEFINE_multi_string("gin_file", ["gin/quickstart.gin"], "gin files of the model and its videos.")
flags.DEFINE_multi_string("gin_param", [], "gin bindings, e.g. \"HPDM.token_mixing=None\".")
flags.DEFINE_string("init_from", None, "weights to start from (export dir, workdir or safetensors); tensors "
                    "the model has and the file lacks keep their initialisation.")
flags.DEFINE_integer("steps", 1000, "optimiser steps.")
flags.DEFINE_integer("batch_size", 32, "videos per step.")
flags.DEFINE_float("lr", 1e-3, "peak learning rate of tensors not in --init_from.")
flags.DEFINE_float("pretrained_lr", 1e-4, "peak learning rate of tensors loaded from --init_from.")
flags.DEFINE_integer("warmup_steps", 100, "linear warm-up steps.")
flags.DEFINE_integer("train_videos", 20000, "pre-rendered training videos (synthetic indices 50,000 on).")
flags.DEFINE_integer("eval_videos", 36, "held-out videos (indices 1,000 on, as the motion_retention CLI).")
flags.DEFINE_integer("eval_every", 500, "steps between evaluations (and after the last step).")
flags.DEFINE_integer("sample_steps", 64, "also sample level 0 with this many Heun steps for the held-out labels and "
                     "report the samples' median travel and size ratio (0: skip).")
flags.DEFINE_integer("threads", 1, "torch threads (1: two runs side by side on two cores).")
flags.DEFINE_integer("seed", 0, "seed of the initialisation, batches and training noise.")
flags.DEFINE_string("output", None, "also append the JSON lines here.")

EVAL_SIGMAS = (1.0, 2.0)


def v_space_loss(model, coords, x0, labels, sigma, noise):
    """Eq. 4 on level 0 alone: the x0 error weighted to v space, ``(sigma^2 + sd^2) / (sigma sd)^2``."""
    sd = model.schedule.sigma_data
    noisy = x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    pred = model(noisy[:, None], coords.expand(len(x0), 1, -1), sigma[:, None], {"label": labels})[:, 0]
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return ((pred - x0) ** 2).mean(dim=(1, 2, 3, 4)).mul(weight).mean()


@torch.no_grad()
def evaluate(model, coords, clean, labels, sample_steps: int = 0) -> dict:
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
        pred = model(noisy[:, None], coords.expand(len(clean), 1, -1), sig, {"label": labels})[:, 0]
        mse.append(round(float((pred - clean).square().mean()), 5))
    model.train(was_training)
    return dict(retention=[round(r.median_ratio, 3) for r in retention], x0_mse=mse, **extra)


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    torch.set_num_threads(f.threads)
    from hpdm import gin_utils
    from hpdm.core import HPDM
    from hpdm.data.synthetic import SyntheticVideos
    from hpdm.diagnostics.motion_retention import real_level0_videos
    from hpdm.trainers.checkpoint import load_matching, resolve_weights
    from safetensors.torch import load_file

    gin_utils.parse(f.gin_file, f.gin_param, skip_unknown=False)
    torch.manual_seed(f.seed)
    model = HPDM()
    pretrained = set()
    if f.init_from:
        loaded, _ = load_matching(model, load_file(resolve_weights(f.init_from, ema=True)), what=f.init_from)
        pretrained = {name.split("[")[0] for name in loaded}
    source = SyntheticVideos()
    start = time.time()
    train_x, train_y = real_level0_videos(source, model.pyramid, 50_000, f.train_videos)
    eval_x, eval_y = real_level0_videos(source, model.pyramid, 1000, f.eval_videos)
    print(f"rendered {len(train_x)} + {len(eval_x)} level-0 videos in {time.time() - start:.0f} s", flush=True)

    params = dict(model.named_parameters())
    groups = [
        dict(params=[p for n, p in params.items() if n in pretrained], peak=f.pretrained_lr),
        dict(params=[p for n, p in params.items() if n not in pretrained], peak=f.lr),
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=f.lr, betas=(0.9, 0.99), weight_decay=0.0)
    coords = model.pyramid.coords(0, (0, 0, 0))
    p_mean, p_std = model.schedule.log_normal(model.num_levels)
    mean, std = float(p_mean[0]), float(p_std[0])  # level 0: b_0 = 1, so model and data sigma agree
    gen = torch.Generator().manual_seed(f.seed + 1)
    out = open(f.output, "a") if f.output else None

    def emit(step: int, **extra) -> None:
        line = json.dumps(dict(step=step, seconds=round(time.time() - start), **extra))
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    start = time.time()
    emit(0, **evaluate(model, coords, eval_x, eval_y, f.sample_steps))
    model.train()
    for step in range(1, f.steps + 1):
        scale = min(1.0, step / max(1, f.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / f.steps))
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * scale
        index = torch.randint(0, len(train_x), (f.batch_size,), generator=gen)
        sigma = torch.exp(mean + std * torch.randn(f.batch_size, generator=gen))
        noise = torch.randn(train_x[index].shape, generator=gen)
        loss = v_space_loss(model, coords, train_x[index], train_y[index], sigma, noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % f.eval_every == 0 or step == f.steps:
            emit(step, loss=round(loss.item(), 4), **evaluate(model, coords, eval_x, eval_y, f.sample_steps))
        elif step % 50 == 0:
            eta = (time.time() - start) / step * (f.steps - step)
            print(f"step {step}/{f.steps} loss {loss.item():.4f} ETA {eta / 60:.1f} min", flush=True)
    if out:
        out.close()


if __name__ == "__main__":
    app.run(main)
