"""Nested training patches (paper Sec. 4.1, Eq. 6; "integer patch coordinates" of Sec. 4.5).

Training draws one patch per level; the level-``l`` patch lies inside the level-``l-1`` patch and
every offset is an integer in its level's own pixel grid, so a patch is an exact crop of the
average-pooled video. Extraction crops the full-resolution region first and pools only that
region: whole resized videos are never materialised.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from hpdm.pyramid.geometry import Pyramid, Res


def sample_nested_offsets(pyramid: Pyramid, generator: torch.Generator | None = None) -> list[Res]:
    """Integer offsets ``(o_t, o_h, o_w)`` for every level, each patch nested in its parent.

    Level 0 covers the whole level-0 video (offset 0). For level ``l >= 1`` the parent patch spans
    ``[u * o_{l-1}, u * (o_{l-1} + p))`` in the level-``l`` grid (``u`` = 1 or 2 per axis); the
    child offset is uniform over the integers that keep the child inside that span.
    """
    offsets: list[Res] = [tuple(0 for _ in range(3))]  # type: ignore[list-item]
    for level in range(1, pyramid.num_levels):
        up = pyramid.upscale(level)
        parent = offsets[-1]
        child = []
        for u, o, p in zip(up, parent, pyramid.patch_res):
            lo = u * o
            span = u * p - p  # number of valid child positions minus one
            child.append(lo + int(torch.randint(0, span + 1, (1,), generator=generator)))
        offsets.append(tuple(child))  # type: ignore[arg-type]
    return offsets


def extract_patch(video: torch.Tensor, pyramid: Pyramid, level: int, offsets: Sequence[int]) -> torch.Tensor:
    """Crop of the level-``level`` video at integer ``offsets``; ``video`` is ``[C, T, H, W]`` at full res.

    Equals ``avg_pool3d(video, pool_factor)[..., crop]`` exactly (up to float summation order), but
    pools only the cropped full-resolution region.
    """
    if video.dim() != 4:
        raise ValueError(f"video must be [C, T, H, W], got shape {tuple(video.shape)}")
    if tuple(video.shape[1:]) != pyramid.target_res:
        raise ValueError(f"video is {tuple(video.shape[1:])}, pyramid target_res is {pyramid.target_res}")
    factor = pyramid.pool_factor(level)
    pyramid.coords(level, offsets)  # validates the offsets
    region = video[
        :,
        offsets[0] * factor[0] : (offsets[0] + pyramid.patch_res[0]) * factor[0],
        offsets[1] * factor[1] : (offsets[1] + pyramid.patch_res[1]) * factor[1],
        offsets[2] * factor[2] : (offsets[2] + pyramid.patch_res[2]) * factor[2],
    ]
    return _average_pool(region.unsqueeze(0), factor).squeeze(0)


def level_video(videos: torch.Tensor, pyramid: Pyramid, level: int) -> torch.Tensor:
    """Whole level-``level`` videos ``[B, C, *resolutions[level]]`` of full-resolution ``videos [B, C, T, H, W]``.

    The average pooling that defines the pyramid's levels (Sec. 4.1): every training patch is an
    exact crop of it (``extract_patch``).
    """
    if videos.dim() != 5 or tuple(videos.shape[2:]) != pyramid.target_res:
        raise ValueError(f"videos must be [B, C, *{pyramid.target_res}], got shape {tuple(videos.shape)}")
    return _average_pool(videos, pyramid.pool_factor(level))


def _average_pool(videos: torch.Tensor, factor: Res) -> torch.Tensor:
    """``[B, C, T, H, W]`` average-pooled by ``factor``; a copy when there is nothing to pool."""
    if factor == (1, 1, 1):
        return videos.clone()
    return F.avg_pool3d(videos, kernel_size=factor, stride=factor)


def extract_hierarchy(
    video: torch.Tensor, pyramid: Pyramid, offsets: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """All levels' patches and coordinates: ``([L+1, C, t, h, w], [L+1, 6])``."""
    if len(offsets) != pyramid.num_levels:
        raise ValueError(f"need {pyramid.num_levels} offsets (one per level), got {len(offsets)}")
    patches = torch.stack([extract_patch(video, pyramid, l, o) for l, o in enumerate(offsets)])
    coords = torch.stack([pyramid.coords(l, o) for l, o in enumerate(offsets)])
    return patches, coords


def sample_hierarchy(
    video: torch.Tensor, pyramid: Pyramid, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw nested offsets and extract the patch hierarchy of one full-resolution video."""
    return extract_hierarchy(video, pyramid, sample_nested_offsets(pyramid, generator))
