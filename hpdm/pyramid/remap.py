"""Coordinate remapping between levels (paper Sec. 4.2, Eq. 8) and the trilinear resampling it drives."""

from __future__ import annotations

from typing import Sequence

import torch


def remap_coords(child: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Eq. 8: the child patch's coordinates relative to the parent patch.

    ``[s_c / s_p, (d_c - d_p) / s_p]`` per axis; both inputs are ``[..., 6]`` patch coordinates.
    The result describes the child as a sub-box ``[d, d + s)`` of the parent's unit box.
    """
    s_c, d_c = child[..., :3], child[..., 3:]
    s_p, d_p = parent[..., :3], parent[..., 3:]
    return torch.cat([s_c / s_p, (d_c - d_p) / s_p], dim=-1)


def _check_relative(relative: torch.Tensor) -> None:
    if relative.dim() != 2 or relative.shape[-1] != 6:
        raise ValueError(f"relative coords must be [B, 6], got {tuple(relative.shape)}")


def _cell_centres(relative: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    """``[B, n]``: the centres of ``n`` cells covering the box along ``axis``, in the source's unit interval."""
    centres = (torch.arange(n, dtype=relative.dtype, device=relative.device) + 0.5) / n
    return relative[:, 3 + axis, None] + relative[:, axis, None] * centres


def sampling_grid(relative: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Sampling grid ``[B, t, h, w, 3]`` for ``F.grid_sample(..., align_corners=False)``.

    ``relative [B, 6]`` places a box inside the source grid (Eq. 8 coordinates); the grid holds the
    centres of a ``size = (t, h, w)`` cell grid covering that box, in the ``[-1, 1]`` convention of
    ``align_corners=False`` where -1 and 1 are the outer edges of the source's border cells. The last
    dimension is ordered ``(x=w, y=h, z=t)`` as ``grid_sample`` requires.

    The model resamples with ``interpolation_matrices`` instead (the same values, computed as three
    small matrix products); this form remains for readers and for ``grid_sample``-based tools.
    """
    _check_relative(relative)
    axes = [2.0 * _cell_centres(relative, axis, n) - 1.0 for axis, n in enumerate(size)]
    t, h, w = size
    b = relative.shape[0]
    gt = axes[0][:, :, None, None].expand(b, t, h, w)
    gh = axes[1][:, None, :, None].expand(b, t, h, w)
    gw = axes[2][:, None, None, :].expand(b, t, h, w)
    return torch.stack([gw, gh, gt], dim=-1)


def interpolation_matrices(
    relative: torch.Tensor, source: Sequence[int], size: Sequence[int]
) -> list[torch.Tensor]:
    """Per-axis linear interpolation ``[B, size[a], source[a]]`` for a box ``relative [B, 6]`` (Eq. 8).

    Row ``o`` of axis ``a`` weighs the source cells at the centre of target cell ``o``: with the
    source position ``p`` (in cells, centres at integers, clamped to ``[0, n - 1]`` as border padding
    does), cell ``i`` gets ``max(0, 1 - |p - i|)``, i.e. ``1 - frac`` and ``frac`` on the two cells
    around ``p``. Because the sampling points of an axis-aligned box form a product grid, trilinear
    resampling is the product of the three matrices, which is what ``grid_sample(mode="bilinear",
    padding_mode="border", align_corners=False)`` computes point by point.
    """
    _check_relative(relative)
    if len(source) != 3 or len(size) != 3:
        raise ValueError(f"source and size must both be (t, h, w), got {tuple(source)} and {tuple(size)}")
    mats = []
    for axis, (n_in, n_out) in enumerate(zip(source, size)):
        pos = (_cell_centres(relative, axis, n_out) * n_in - 0.5).clamp(0, n_in - 1)
        cells = torch.arange(n_in, dtype=relative.dtype, device=relative.device)
        mats.append((1 - (pos[:, :, None] - cells).abs()).clamp_min(0))
    return mats


def resample(grid: torch.Tensor, relative: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of ``grid [B, D, t, h, w]`` at the cell centres of box ``relative`` (Eq. 8).

    Returns ``[B, D, *size]``, equal to ``grid_sample`` on ``sampling_grid(relative, size)`` (border
    padding, ``align_corners=False``) up to float rounding: three batched matrix products, one per
    axis, instead of eight gathers per output point. The products run on the channels-last layout
    ``[B, t, h, w, D]`` (the model's token order, so a grid viewed from tokens is not copied) and the
    result is a ``[B, D, *size]`` view of a channels-last tensor.
    """
    w_t, w_h, w_w = (m.to(grid.dtype) for m in interpolation_matrices(relative, grid.shape[2:], size))
    b, d, t, h, w = grid.shape
    t2, h2, w2 = size
    x = grid.permute(0, 2, 3, 4, 1)  # [B, t, h, w, D]
    x = torch.bmm(w_t, x.reshape(b, t, h * w * d))  # [B, t2, h*w*D]
    x = torch.matmul(w_h[:, None], x.view(b, t2, h, w * d))  # [B, t2, h2, w*D]
    x = torch.matmul(w_w[:, None], x.view(b, t2 * h2, w, d))  # [B, t2*h2, w2, D]
    return x.view(b, t2, h2, w2, d).permute(0, 4, 1, 2, 3)
