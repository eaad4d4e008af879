"""Timing of one tiled sampling step, cached vs uncached (paper Sec. 4.5; App. D item 1).

The paper measured only ~1.4x from caching, partly because tokenizer activations and contexts were
not cached. Here the cache holds each block's finished fusion term, so a cached step at level ``l``
runs only the blocks level ``l`` runs and no lower-level work at all.
"""

from __future__ import annotations

import statistics
import time
from typing import Optional

import torch

from hpdm.samplers.guidance import HPDMTileModel
from hpdm.samplers.tiled import OverlapSampler


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_level_step(
    model,
    level: Optional[int] = None,
    cached: bool = True,
    overlap: str = "fhw",
    tile_batch_size: int = 16,
    num_videos: int = 1,
    repeats: int = 3,
    seed: int = 0,
    device=None,
    cond: Optional[dict] = None,
    guidance_scale: float = 1.0,
    offload_cache: bool = False,
) -> dict:
    """Time one denoiser evaluation over every tile of ``level`` (default: the last level).

    Ancestors are random videos (timing does not depend on their content). The context build
    (once per level) is timed separately from the step (repeated at every step). Returns a dict:
    ``step_seconds`` (median over ``repeats`` after one warm-up), ``context_seconds``, ``tiles``
    (tiles per video), ``block_evaluations_per_step`` (``model.level_block_evaluations`` per step).
    """
    pyramid = model.pyramid
    level = pyramid.num_levels - 1 if level is None else level
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ancestors = [
        (torch.rand((num_videos, model.channels, *pyramid.resolutions[k]), generator=gen) * 2 - 1).to(device)
        for k in range(level)
    ]
    x = (torch.randn((num_videos, model.channels, *pyramid.resolutions[level]), generator=gen)).to(device)
    sigma = float(model.schedule.sigma_range(level)[1]) * 0.1
    tile_model = HPDMTileModel(model, cached=cached, guidance_scale=guidance_scale)
    sampler = OverlapSampler(overlap=overlap, tile_batch_size=tile_batch_size, offload_cache=offload_cache)
    was_training = model.training
    model.eval()
    try:
        _sync(device)
        start = time.perf_counter()
        denoiser = sampler.level_denoiser(tile_model, pyramid, level, ancestors, cond, batch_size=num_videos, device=device)
        _sync(device)
        context_seconds = time.perf_counter() - start
        denoiser(x, sigma)  # warm-up
        times, blocks = [], []
        for _ in range(max(1, repeats)):
            before = model.level_block_evaluations
            _sync(device)
            start = time.perf_counter()
            denoiser(x, sigma)
            _sync(device)
            times.append(time.perf_counter() - start)
            blocks.append(model.level_block_evaluations - before)
    finally:
        model.train(was_training)
    return {
        "level": level,
        "cached": cached,
        "tiles": denoiser.num_tiles,
        "tile_batches": len(denoiser.batches),
        "step_seconds": statistics.median(times),
        "context_seconds": context_seconds,
        "block_evaluations_per_step": blocks[0],
    }
