"""Timing of one tiled sampling step, cached vs uncached (paper Sec. 4.5; App. D item 1).

The paper measured only ~1.4x from caching, partly because tokenizer activations and contexts were
not cached. Here the cache holds each block's finished fusion term, so a cached step at level ``l``
runs only the blocks level ``l`` runs and no lower-level work at all.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Optional

import torch

from hpdm.samplers.guidance import HPDMTileModel
from hpdm.samplers.tiled import OverlapSampler


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LevelStep:
    """One denoiser evaluation over every tile of ``level`` (default: the last level), ready to time.

    Ancestors are random videos (timing does not depend on their content). Building it runs the
    context build (once per level, ``context_seconds``); each call runs the step that sampling
    repeats at every noise level, in eval mode and without gradients.
    """

    def __init__(
        self,
        model,
        level: Optional[int] = None,
        cached: bool = True,
        overlap: str = "fhw",
        tile_batch_size: int = 16,
        num_videos: int = 1,
        seed: int = 0,
        device=None,
        cond: Optional[dict] = None,
        guidance_scale: float = 1.0,
        offload_cache: bool = False,
    ):
        pyramid = model.pyramid
        self.model = model
        self.level = pyramid.num_levels - 1 if level is None else level
        self.cached = cached
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        ancestors = [
            (torch.rand((num_videos, model.channels, *pyramid.resolutions[k]), generator=gen) * 2 - 1).to(self.device)
            for k in range(self.level)
        ]
        shape = (num_videos, model.channels, *pyramid.resolutions[self.level])
        self.x = torch.randn(shape, generator=gen).to(self.device)
        self.sigma = float(model.schedule.sigma_range(self.level)[1]) * 0.1
        tile_model = HPDMTileModel(model, cached=cached, guidance_scale=guidance_scale)
        sampler = OverlapSampler(overlap=overlap, tile_batch_size=tile_batch_size, offload_cache=offload_cache)
        with torch.no_grad(), self._eval():
            _sync(self.device)
            start = time.perf_counter()
            self.denoiser = sampler.level_denoiser(
                tile_model, pyramid, self.level, ancestors, cond, batch_size=num_videos, device=self.device
            )
            _sync(self.device)
            self.context_seconds = time.perf_counter() - start
        self.block_evaluations = None

    @contextlib.contextmanager
    def _eval(self):
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def __call__(self) -> None:
        before = self.model.level_block_evaluations
        with torch.no_grad(), self._eval():
            self.denoiser(self.x, self.sigma)
        self.block_evaluations = self.model.level_block_evaluations - before

    def record(self, times: list) -> dict:
        """The JSON record of this step given its timed seconds."""
        return {
            "level": self.level,
            "cached": self.cached,
            "tiles": self.denoiser.num_tiles,
            "tile_batches": len(self.denoiser.batches),
            "step_seconds": statistics.median(times),
            "step_times": list(times),
            "context_seconds": self.context_seconds,
            "block_evaluations_per_step": self.block_evaluations,
        }


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
    """Time one denoiser evaluation over every tile of ``level`` (default: the last level) on its own.

    The context build (once per level) is timed separately from the step (repeated at every step).
    Returns a dict: ``step_seconds`` (median over ``repeats`` after one warm-up), ``context_seconds``,
    ``tiles`` (tiles per video), ``block_evaluations_per_step`` (``model.level_block_evaluations``
    per step). ``hpdm-bench`` interleaves a cached and an uncached ``LevelStep`` instead.
    """
    step = LevelStep(model, level, cached, overlap, tile_batch_size, num_videos, seed, device, cond, guidance_scale,
                     offload_cache)
    step()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        _sync(step.device)
        start = time.perf_counter()
        step()
        _sync(step.device)
        times.append(time.perf_counter() - start)
    return step.record(times)
