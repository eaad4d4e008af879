"""Deep context fusion (paper Sec. 4.2, Eq. 7-9) with the ablation switches of Table 3.

Before a block, a level-``l`` patch's token grid ``a_l`` receives the average of its ancestors'
token grids, each resampled (trilinear) at the patch's position inside the ancestor (Eq. 8
coordinates, Eq. 7), concatenated with the raw patch coordinates and projected back to the token
width (Eq. 9). Because the projection is linear, ``W [a; ctx; c] = W_a a + (W_ctx ctx + W_c c + b)``:
the bracketed *context term* does not depend on ``a_l``, which is what cached inference stores.
"""

from __future__ import annotations

from typing import Sequence

import gin
import torch
import torch.nn as nn

from hpdm.pyramid.remap import remap_coords, resample


def sample_context(
    ancestors: Sequence[tuple[torch.Tensor, torch.Tensor]], coords: torch.Tensor, size: Sequence[int]
) -> torch.Tensor:
    """Eq. 7: mean over ancestors of ``grid_sample(a_k, remap(c_l, c_k))`` (trilinear, ``resample``).

    Args:
      ancestors: ``(grid [B, D, t_k, h_k, w_k], coords_k [B, 6])`` per lower level.
      coords: the target patch's coordinates ``[B, 6]``.
      size: the target cell grid ``(t, h, w)``.
    Returns:
      ``[B, D, t, h, w]``: each target cell holds the ancestors' features at its centre.
    """
    if not ancestors:
        raise ValueError("sample_context needs at least one ancestor")
    total = None
    for grid, anc_coords in ancestors:
        # Border clamping only matters for float round-off at the parent's edge: children always
        # lie inside their parents, so every sample point is inside the source box.
        sampled = resample(grid, remap_coords(coords, anc_coords), size)
        total = sampled if total is None else total + sampled
    return total / len(ancestors)


@gin.register
class ContextFuser(nn.Module):
    """Fuse ancestor context into a level's tokens (Eq. 9).

    Args:
      dim: token width ``d`` of the fused level.
      context_dim: width of the context features (``d`` for deep fusion; the pixel-token width
        for shallow fusion); defaults to ``dim``.
      detach_context: stop gradients from the context into the ancestors (Table 3 "context detach").
      use_coords: concatenate the 6 patch coordinates (Table 3 "no coordinates" when False).
    """

    def __init__(self, dim: int, context_dim: int | None = None, detach_context: bool = False, use_coords: bool = True):
        super().__init__()
        context_dim = context_dim or dim
        self.detach_context = detach_context
        self.use_coords = use_coords
        self.proj_tokens = nn.Linear(dim, dim, bias=False)
        self.proj_context = nn.Linear(context_dim, dim)
        self.proj_coords = nn.Linear(6, dim, bias=False) if use_coords else None
        # Start as "tokens + small context": the level keeps its own signal while fusion is learned.
        with torch.no_grad():
            self.proj_tokens.weight.copy_(torch.eye(dim))
            self.proj_context.weight.mul_(0.1)
            self.proj_context.bias.zero_()
            if self.proj_coords is not None:
                nn.init.normal_(self.proj_coords.weight, std=0.02)

    def context_term(self, context: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``W_ctx ctx + W_c c + b``: the part of Eq. 9 independent of the fused tokens.

        ``context [B, t*h*w, context_dim]`` (token order), ``coords [B, 6]`` -> ``[B, t*h*w, dim]``.
        """
        if self.detach_context:
            context = context.detach()
        term = self.proj_context(context)
        if self.proj_coords is not None:
            term = term + self.proj_coords(coords.to(term.dtype))[:, None, :]
        return term

    def fuse(self, tokens: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
        """``W_a a + term`` for ``tokens [B, M, dim]``."""
        return self.proj_tokens(tokens) + term

    def forward(
        self,
        tokens: torch.Tensor,
        coords: torch.Tensor,
        ancestors: Sequence[tuple[torch.Tensor, torch.Tensor]],
        grid: Sequence[int],
    ) -> torch.Tensor:
        """Full Eq. 7-9 for ``tokens [B, t*h*w, dim]`` laid out on ``grid``; ancestors as in ``sample_context``."""
        ctx = sample_context(ancestors, coords, grid).flatten(2).transpose(1, 2)
        return self.fuse(tokens, self.context_term(ctx, coords))
