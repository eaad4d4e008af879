"""Coordinate remapping between levels (paper Sec. 4.2, Eq. 8) in the form ``grid_sample`` wants."""

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


def sampling_grid(relative: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Sampling grid ``[B, t, h, w, 3]`` for ``F.grid_sample(..., align_corners=False)``.

    ``relative [B, 6]`` places a box inside the source grid (Eq. 8 coordinates); the grid holds the
    centres of a ``size = (t, h, w)`` cell grid covering that box, in the ``[-1, 1]`` convention of
    ``align_corners=False`` where -1 and 1 are the outer edges of the source's border cells. The last
    dimension is ordered ``(x=w, y=h, z=t)`` as ``grid_sample`` requires.
    """
    if relative.dim() != 2 or relative.shape[-1] != 6:
        raise ValueError(f"relative coords must be [B, 6], got {tuple(relative.shape)}")
    axes = []
    for axis, n in enumerate(size):
        centres = (torch.arange(n, dtype=relative.dtype, device=relative.device) + 0.5) / n
        unit = relative[:, 3 + axis, None] + relative[:, axis, None] * centres  # [B, n] in [0, 1]
        axes.append(2.0 * unit - 1.0)
    t, h, w = size
    b = relative.shape[0]
    gt = axes[0][:, :, None, None].expand(b, t, h, w)
    gh = axes[1][:, None, :, None].expand(b, t, h, w)
    gw = axes[2][:, None, None, :].expand(b, t, h, w)
    return torch.stack([gw, gh, gt], dim=-1)
