"""Tiled, overlapped, cached denoising of one pyramid level (paper Sec. 4.4, 4.5; docs/design.md "Inference").

A level is sampled as one whole video ``x [B, C, T, H, W]``. ``OverlapSampler.level_denoiser``
turns a per-tile model into a denoiser ``D(x, sigma)`` of that whole video, which any stepper of
``hpdm.samplers.steppers`` can then drive:

1. the video is cut into the tiles of a ``TilePlan`` (``patch_res`` tiles, optional 50% overlap per
   axis, last tile flush with the far edge);
2. tiles go through the model in batches of ``tile_batch_size`` (memory stays bounded at any
   resolution);
3. the denoised predictions (x0) are summed into the whole video and divided by the number of tiles
   covering each pixel (MultiDiffusion averaging, Bar-Tal et al. 2023).

The stepper then takes one update on the whole video, so stochastic noise is drawn once per video,
never per tile (averaging independently noised tiles would shrink the noise: docs/design.md "Traps").

The ancestors of every tile (``hpdm.pyramid.tiles.ancestor_offsets``) do not depend on the tile's
noise, so the model's context for each tile batch is built once per level, stored (optionally on
the CPU, Sec. 4.5: "caching needs to be implemented with CPU offloading") and reused at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import gin
import torch

from hpdm.pyramid import Pyramid
from hpdm.pyramid.tiles import TilePlan, ancestor_offsets


class TileModel(Protocol):
    """What the tiled sampler needs from a model; ``hpdm.samplers.guidance.HPDMTileModel`` wraps HPDM.

    ``context`` is called once per tile batch and level, ``denoise`` once per tile batch and step.
    Shapes: ``x_anc [n, level, C, t, h, w]`` (ancestor windows, coarse to fine), ``coords_anc
    [n, level, 6]``, ``coords [n, 6]`` (the tiles), ``x [n, C, t, h, w]``, ``sigma [n]``; ``cond`` is
    the rows of the per-video conditioning for these tiles (or None).
    """

    def context(self, level: int, x_anc: torch.Tensor, coords_anc: torch.Tensor, coords: torch.Tensor, cond) -> Any:
        ...

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, coords: torch.Tensor, level: int, context: Any, cond
    ) -> torch.Tensor:
        ...


def move(obj: Any, device) -> Any:
    """Move a context (tensor, object with ``.to``, or tuple/list/dict of them) to ``device``."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor) or hasattr(obj, "to"):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(move(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: move(v, device) for k, v in obj.items()}
    return obj


def select_cond(cond: Optional[dict], rows: torch.Tensor) -> Optional[dict]:
    """Rows ``rows`` of every tensor in a per-video conditioning dict."""
    if cond is None:
        return None
    return {k: v[rows.to(v.device)] for k, v in cond.items()}


def _crop(video: torch.Tensor, offset: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``video[..., o_t:o_t+p_t, o_h:o_h+p_h, o_w:o_w+p_w]`` for a ``[C, T, H, W]`` video."""
    return video[..., offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1], offset[2] : offset[2] + size[2]]


@dataclass
class TileBatch:
    """One batch of (video, tile) pairs and its cached model context."""

    videos: torch.Tensor  # [n] long, which video of the level batch each tile belongs to
    offsets: list  # [n] tile offsets in the level grid
    coords: torch.Tensor  # [n, 6]
    context: Any = None
    index: tuple = ()  # advanced-indexing tensors of the tiles' pixels (see ``tile_index``)


def tile_index(videos: torch.Tensor, offsets: Sequence[Sequence[int]], patch: Sequence[int], device) -> tuple:
    """Index tensors that gather ``[n, t, h, w, C]`` tiles from a ``[B, C, T, H, W]`` video at once.

    ``x.permute(0, 2, 3, 4, 1)[index]`` gathers every tile of a batch in one op instead of one slice
    per tile (hundreds of tiny kernels per step for a small model).
    """
    offs = torch.tensor([list(o) for o in offsets], dtype=torch.long)
    axes = [offs[:, a, None] + torch.arange(patch[a]) for a in range(3)]  # [n, p_a] per axis
    n = offs.shape[0]
    return (
        videos.view(n, 1, 1, 1).to(device),
        axes[0].view(n, -1, 1, 1).to(device),
        axes[1].view(n, 1, -1, 1).to(device),
        axes[2].view(n, 1, 1, -1).to(device),
    )


@dataclass
class LevelDenoiser:
    """``D(x, sigma)`` for a whole level video, assembled from tiles (built by ``OverlapSampler``).

    Attributes:
      plan: the tile plan of the level.
      batches: the tile batches with their cached contexts.
      tile_evaluations: tiles denoised so far (for progress and benchmarks).
    """

    model: TileModel
    level: int
    plan: TilePlan
    batches: list
    coverage: torch.Tensor  # [T, H, W] tiles per pixel
    cond: Optional[dict]
    device: torch.device
    offloaded: bool = False
    tile_evaluations: int = 0
    calls: int = 0
    on_batch: Optional[Callable[[dict], None]] = field(default=None, repr=False)
    vectorised: Optional[bool] = None  # gather tiles by one index op; None: on accelerators only

    @property
    def num_tiles(self) -> int:
        return len(self.plan)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        # Gathering tiles: one advanced index per batch on accelerators (few kernel launches); on the
        # CPU plain slicing is an order of magnitude faster. Summing predictions back always uses
        # per-tile slices in a fixed order: index_put_(accumulate=True) would be non-deterministic
        # on CUDA, and the same seed must give the same videos.
        vectorised = self.vectorised if self.vectorised is not None else x.device.type != "cpu"
        x_last = x.permute(0, 2, 3, 4, 1) if vectorised else None
        total = torch.zeros_like(x)
        patch = self.plan.patch_res
        for batch in self.batches:
            if vectorised:
                tiles = x_last[batch.index].permute(0, 4, 1, 2, 3)
            else:
                tiles = torch.stack([_crop(x[v], o, patch) for v, o in zip(batch.videos.tolist(), batch.offsets)])
            context = move(batch.context, self.device) if self.offloaded else batch.context
            sig = torch.full((tiles.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
            x0 = self.model.denoise(tiles, sig, batch.coords, self.level, context, select_cond(self.cond, batch.videos))
            if tuple(x0.shape) != tuple(tiles.shape):
                raise ValueError(f"tile model returned {tuple(x0.shape)} for tiles {tuple(tiles.shape)}")
            for v, o, pred in zip(batch.videos.tolist(), batch.offsets, x0.to(x.dtype)):
                _crop(total[v], o, patch).add_(pred)
            self.tile_evaluations += tiles.shape[0]
            if self.on_batch is not None:
                self.on_batch({"level": self.level, "tiles": tiles.shape[0]})
        self.calls += 1
        # MultiDiffusion: the average of the overlapping x0 predictions (Sec. 4.4).
        return total / self.coverage.to(x.device, x.dtype)


@gin.configurable
class OverlapSampler:
    """Tiled, overlapped and cached denoising of a pyramid level (paper Sec. 4.4, 4.5, Table 4).

    Args:
      overlap: axes with 50% tile overlap, any subset of "f" (frames), "h", "w" (Table 4), e.g.
        "fhw" (full overlap, the paper's visualisations) or "hw" (its metrics); "" for none.
      tile_batch_size: tiles per model call; bounds memory at any resolution.
      offload_cache: keep the cached per-tile contexts on the CPU between steps (Sec. 4.5).
    """

    def __init__(self, overlap: str = "fhw", tile_batch_size: int = 16, offload_cache: bool = False):
        if tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be >= 1, got {tile_batch_size}")
        self.overlap = overlap
        self.tile_batch_size = tile_batch_size
        self.offload_cache = offload_cache

    @torch.no_grad()
    def level_denoiser(
        self,
        model: TileModel,
        pyramid: Pyramid,
        level: int,
        ancestors: Sequence[torch.Tensor],
        cond: Optional[dict] = None,
        batch_size: Optional[int] = None,
        device=None,
    ) -> LevelDenoiser:
        """Plan the tiles of ``level``, cut their ancestor windows and build every tile's context once.

        ``ancestors[k]`` is the generated level-``k`` video ``[B, C, R_k]`` (already at the context
        noise level), for ``k < level``; ``batch_size`` (B) is needed only when there are none.
        """
        if len(ancestors) != level:
            raise ValueError(f"level {level} needs the {level} lower levels as ancestors, got {len(ancestors)}")
        for k, anc in enumerate(ancestors):
            if tuple(anc.shape[2:]) != pyramid.resolutions[k]:
                raise ValueError(f"ancestor level {k} is {tuple(anc.shape[2:])}, expected {pyramid.resolutions[k]}")
        if ancestors:
            batch_size = ancestors[0].shape[0]
            device = ancestors[0].device if device is None else device
        if batch_size is None:
            raise ValueError("batch_size is required when there are no ancestors (level 0)")
        device = torch.device("cpu") if device is None else torch.device(device)
        plan = TilePlan.build(pyramid, level, self.overlap)
        patch = pyramid.patch_res
        pairs = [(v, i) for v in range(batch_size) for i in range(len(plan))]
        windows = [ancestor_offsets(pyramid, level, o) for o in plan.offsets]
        tile_coords = torch.stack([pyramid.coords(level, o) for o in plan.offsets]).to(device)
        anc_coords = (
            torch.stack([torch.stack([pyramid.coords(k, w) for k, w in enumerate(win)]) for win in windows]).to(device)
            if level > 0
            else None
        )
        batches = []
        for start in range(0, len(pairs), self.tile_batch_size):
            chunk = pairs[start : start + self.tile_batch_size]
            videos = torch.tensor([v for v, _ in chunk], dtype=torch.long)
            tiles = torch.tensor([i for _, i in chunk], dtype=torch.long)
            coords = tile_coords[tiles.to(device)]
            if level > 0:
                x_anc = torch.stack(
                    [torch.stack([_crop(ancestors[k][v], w, patch) for k, w in enumerate(windows[i])]) for v, i in chunk]
                )
                c_anc = anc_coords[tiles.to(device)]
            else:
                x_anc = c_anc = None
            context = model.context(level, x_anc, c_anc, coords, select_cond(cond, videos))
            if self.offload_cache:
                context = move(context, "cpu")
            offsets = [plan.offsets[i] for _, i in chunk]
            batches.append(TileBatch(videos, offsets, coords, context, tile_index(videos, offsets, patch, device)))
        return LevelDenoiser(
            model, level, plan, batches, plan.coverage(), cond, device, offloaded=self.offload_cache
        )
