"""Cascaded generation of the whole pyramid, level by level (paper Sec. 4.4, App. C; docs/design.md "Inference").

Level 0 is one patch (the whole level-0 video); every later level is the whole level video sampled
through ``OverlapSampler`` tiles, conditioned on the already generated lower levels. Each finished
lower level gets its context noise (``schedule.context_sigma(k)``, one draw for the whole video)
before it is used as ancestor context.

Reproducibility: all noise of video ``i`` comes from its own CPU ``torch.Generator`` seeded by
``video_seed(seed, i)`` and is moved to the device afterwards, so a video depends only on the seed,
its index and its conditioning, not on the device, the batch size or the tile batch size (up to
float rounding of batched kernels). Draw order per video: for every level, the initial noise, then
the churn noise of each stochastic step, then (below the last level) the context noise; a level
given rather than generated (``given_levels``) draws only its context noise.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from hpdm.pyramid import Pyramid
from hpdm.samplers.guidance import Autoguidance, HPDMTileModel
from hpdm.samplers.steps import SamplingSteps
from hpdm.samplers.steppers import get_sampler
from hpdm.samplers.tiled import OverlapSampler, TileModel
from hpdm.video.frames import to_uint8

Progress = Callable[[dict], None]


def video_seed(seed: int, index: int) -> int:
    """Seed of video ``index`` of a run with ``seed`` (independent of batching)."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


class VideoNoise:
    """Standard normal noise for a batch of videos, each from its own seeded CPU generator.

    Always drawn in float32 on the CPU (so the values never depend on device or dtype), then cast to
    ``dtype`` (float64 for reference runs) and moved to ``device``.
    """

    def __init__(self, seeds: Sequence[int], device=None, dtype: torch.dtype = torch.float32):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = dtype

    def draw(self, shape: Sequence[int]) -> torch.Tensor:
        """``[B, *shape]`` noise on the device, one row per video."""
        rows = [torch.randn(tuple(shape), generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device, self.dtype)

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """Stepper noise source (``hpdm.samplers.steppers.NoiseSource``)."""
        del step
        return self.draw(x.shape[1:]).to(x.dtype)


@torch.no_grad()
def sample_pyramid(
    tile_model: TileModel,
    pyramid: Pyramid,
    sigma_range: Callable[[int], tuple],
    context_sigma: Callable[[int], float],
    noise: VideoNoise,
    channels: int = 3,
    cond: Optional[dict] = None,
    level_schedule: Optional[SamplingSteps] = None,
    overlap_sampler: Optional[OverlapSampler] = None,
    context_noise: bool = True,
    progress: Optional[Progress] = None,
    return_levels: bool = False,
    given_levels: Optional[Sequence[torch.Tensor]] = None,
):
    """Generate every level of a batch of videos; returns the last level ``[B, C, T, H, W]`` (float).

    Model-agnostic: ``tile_model`` is any ``TileModel``; ``sigma_range(level)`` and
    ``context_sigma(level)`` come from the model's noise schedule. With ``return_levels`` the list of
    all levels (clean, before context noise) is returned instead. ``given_levels`` (clean videos of
    levels ``0..k-1``, ``[B, C, *level_res]`` each, k below the number of levels) are used instead of
    generating those levels: generation starts at level k with them as ancestors, which isolates
    what the finer levels do with a known coarse video (e.g. real data pooled to the level sizes).
    """
    level_schedule = SamplingSteps() if level_schedule is None else level_schedule
    overlap_sampler = OverlapSampler() if overlap_sampler is None else overlap_sampler
    batch = len(noise.generators)
    given = _check_given_levels(given_levels, pyramid, batch, channels)
    ancestors: list = []
    levels: list = []
    for level in range(pyramid.num_levels):
        if level < len(given):
            x = given[level].to(noise.device, noise.dtype)
        else:
            x = _generate_level(
                tile_model, pyramid, level, ancestors, sigma_range, noise, channels, cond,
                level_schedule, overlap_sampler, progress,
            )
        levels.append(x)
        if level + 1 < pyramid.num_levels:
            ctx = x
            if context_noise:
                ctx = x + context_sigma(level) * noise.draw(x.shape[1:])
            ancestors.append(ctx)
    return levels if return_levels else levels[-1]


def _generate_level(
    tile_model, pyramid, level, ancestors, sigma_range, noise, channels, cond, level_schedule, overlap_sampler, progress
) -> torch.Tensor:
    """Sample level ``level`` of the batch given its (noised) ancestors; its cached contexts are freed on return."""
    steps = level_schedule.level(level)
    sigma_min, sigma_max = sigma_range(level)
    sigmas = steps.sigmas(sigma_min, sigma_max)
    batch = len(noise.generators)
    denoiser = overlap_sampler.level_denoiser(tile_model, pyramid, level, ancestors, cond, batch_size=batch, device=noise.device)
    x = noise.draw((channels, *pyramid.resolutions[level])) * float(sigmas[0])

    def report(info: dict) -> None:
        if progress is not None:
            progress(
                dict(
                    info,
                    level=level,
                    num_levels=pyramid.num_levels,
                    tiles=denoiser.num_tiles,
                    tile_evaluations=denoiser.tile_evaluations,
                )
            )

    return get_sampler(steps.stepper)(denoiser, x, sigmas, noise=noise, callback=report, **steps.options())


def _check_given_levels(given, pyramid: Pyramid, batch: int, channels: int) -> list:
    given = list(given or [])
    if len(given) >= pyramid.num_levels:
        raise ValueError(f"{len(given)} given levels leave nothing to generate in a {pyramid.num_levels}-level pyramid")
    for level, video in enumerate(given):
        want = (batch, channels, *pyramid.resolutions[level])
        if tuple(video.shape) != want:
            raise ValueError(f"given level {level} has shape {tuple(video.shape)}, expected {want}")
    return given


def resolve_labels(model, num_videos: int, seed: int, labels=None) -> Optional[torch.Tensor]:
    """Class labels per video: given ones (validated), random ones for a class model, or None."""
    num_classes = int(getattr(model, "num_classes", 0))
    if labels is None:
        if num_classes <= 0:
            return None
        # One label generator per video, separate from its noise generator, so a video's noise is
        # the same whether its label was given or drawn.
        return torch.tensor(
            [
                int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(video_seed(seed, i) ^ 0x5DEECE66D)))
                for i in range(num_videos)
            ],
            dtype=torch.long,
        )
    if num_classes <= 0:
        raise ValueError("class labels given, but the model is not class-conditional (num_classes=0)")
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(num_videos)
    if labels.numel() != num_videos:
        raise ValueError(f"got {labels.numel()} labels for {num_videos} videos")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(f"class label {int(bad[0])} out of range: the model has classes 0..{num_classes - 1}")
    return labels.clone()


def _check_cond(model, cond: Optional[dict], num_videos: int) -> None:
    if not cond:
        return
    if "text" in cond and int(getattr(model, "text_dim", 0)) <= 0:
        raise ValueError("a text prompt was given, but the model is not text-conditional (text_dim=0)")
    if "label" in cond and int(getattr(model, "num_classes", 0)) <= 0:
        raise ValueError("class labels given, but the model is not class-conditional (num_classes=0)")
    for key, value in cond.items():
        if value.shape[0] != num_videos:
            raise ValueError(f"cond[{key!r}] has {value.shape[0]} rows for {num_videos} videos")


@torch.no_grad()
def sample_videos(
    model,
    num_videos: int,
    seed: int,
    cond: Optional[dict] = None,
    *,
    labels=None,
    guidance_scale: float = 1.0,
    overlap: Optional[str] = None,
    cached: bool = True,
    level_schedule: Optional[SamplingSteps] = None,
    tile_batch_size: int = 16,
    offload_cache: bool = False,
    batch_size: int = 8,
    device=None,
    context_noise: bool = True,
    progress: Optional[Progress] = None,
    given_levels: Optional[Sequence[torch.Tensor]] = None,
    autoguidance: Optional[Autoguidance] = None,
) -> torch.Tensor:
    """Sample ``num_videos`` full-resolution videos from an ``HPDM``; returns ``uint8 [N, T, H, W, C]``.

    Args:
      model: ``hpdm.core.HPDM`` (put in eval mode here; its training mode is restored afterwards).
      seed: the same seed gives the same videos.
      cond: per-video conditioning dict (``"label" [N]``, ``"text" [N, S, D]``, ``"text_mask"``).
      labels: class labels (int or ``[N]``) as a shortcut for ``cond["label"]``; a class-conditional
        model without labels gets random ones drawn from the seed.
      guidance_scale: classifier-free guidance (1 = none).
      overlap: 50%-overlap axes for levels >= 1 (Table 4), e.g. "fhw", "hw", ""; None takes the
        gin-configured ``OverlapSampler.overlap`` (default "fhw"; see gin/samplers/*_overlap.gin).
      cached: context caching (Sec. 4.5); False is the slower reference path.
      level_schedule: steps/stepper per level (default: the gin-configured ``SamplingSteps``).
      tile_batch_size / offload_cache: see ``OverlapSampler``.
      batch_size: videos generated together.
      given_levels: clean ``[N, C, *level_res]`` videos (in [-1, 1]) of levels ``0..k-1`` to condition
        on instead of generating them (see ``sample_pyramid``).
      autoguidance: extrapolate away from a weaker model on some levels (``Autoguidance``; its model is
        moved to ``device`` and put in eval mode for the call).
    """
    if num_videos < 0:
        raise ValueError(f"num_videos must be >= 0, got {num_videos}")
    cond = dict(cond) if cond else {}
    label_tensor = resolve_labels(model, num_videos, seed, labels if labels is not None else cond.pop("label", None))
    if label_tensor is not None:
        cond["label"] = label_tensor
    _check_cond(model, cond, num_videos)
    for level, video in enumerate(given_levels or []):
        if video.shape[0] != num_videos:
            raise ValueError(f"given level {level} holds {video.shape[0]} videos for num_videos={num_videos}")
    param = next(model.parameters())
    device = torch.device(param.device if device is None else device)
    pyramid = model.pyramid
    if autoguidance is not None:
        autoguidance.model.to(device=device, dtype=param.dtype)
    tile_model = HPDMTileModel(model, cached=cached, guidance_scale=guidance_scale, autoguidance=autoguidance)
    sampler = OverlapSampler(tile_batch_size=tile_batch_size, offload_cache=offload_cache)
    if overlap is not None:
        sampler.overlap = overlap
    was_training = model.training
    weak_was_training = autoguidance is not None and autoguidance.model.training
    model.eval()
    if autoguidance is not None:
        autoguidance.model.eval()
    out = []
    try:
        for start in range(0, num_videos, batch_size):
            idx = list(range(start, min(start + batch_size, num_videos)))
            rows = torch.tensor(idx)
            chunk_cond = {k: v[rows].to(device) for k, v in cond.items()} or None
            chunk_given = [v[rows] for v in given_levels] if given_levels else None
            noise = VideoNoise([video_seed(seed, i) for i in idx], device, dtype=param.dtype)

            def report(info: dict, start=start) -> None:
                if progress is not None:
                    progress(dict(info, first_video=start, num_videos=num_videos))

            videos = sample_pyramid(
                tile_model,
                pyramid,
                model.schedule.sigma_range,
                model.schedule.context_sigma,
                noise,
                channels=model.channels,
                cond=chunk_cond,
                level_schedule=level_schedule,
                overlap_sampler=sampler,
                context_noise=context_noise,
                progress=report,
                given_levels=chunk_given,
            )
            out.append(to_uint8(videos))
    finally:
        model.train(was_training)
        if autoguidance is not None:
            autoguidance.model.train(weak_was_training)
    if not out:
        t, h, w = pyramid.target_res
        return torch.zeros(0, t, h, w, model.channels, dtype=torch.uint8)
    return torch.cat(out)


def sample_videos_from_workdir(
    workdir: str,
    num_videos: int,
    seed: int,
    labels=None,
    batch_size: int = 8,
    **options,
) -> torch.Tensor:
    """Load the EMA model of a training workdir (or an export dir) and sample; ``uint8 [N, T, H, W, C]``.

    The model samples with the ``SamplingSteps`` of its own config unless ``level_schedule`` is
    given, on CUDA when available, with spatial overlap ("hw", the paper's setting for metrics,
    App. C) unless ``overlap`` is given; any other ``sample_videos`` option can be passed.
    """
    from hpdm.core import load_pretrained  # deferred: it builds a model, which importing samplers need not

    device = "cuda" if torch.cuda.is_available() else None
    model, config = load_pretrained(workdir, use_ema=True, device=device)
    if options.get("level_schedule") is None:
        options["level_schedule"] = config.call(SamplingSteps)
    options.setdefault("overlap", "hw")
    return sample_videos(model, num_videos, seed, labels=labels, batch_size=batch_size, **options)
