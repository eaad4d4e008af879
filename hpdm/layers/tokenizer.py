"""Linear video tokenizer / detokenizer with a (t, h, w)-aware position embedding (paper Sec. 3.2, 4.6).

A video ``[B, C, T, H, W]`` is cut into non-overlapping ``token_size`` cells (1x4x4 in the paper),
each flattened and projected to ``dim``. The position embedding is the sum of three learned
per-axis tables, so any non-square, non-cubic token grid works without ``sqrt(n)`` shortcuts.

``LocalTokenMixing`` (off by default, so the paper's configs keep the linear tokenizer) lets each token
see its neighbours on the grid before the RIN blocks read it; see its docstring for why it exists.
"""

from __future__ import annotations

from typing import Sequence

import gin
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.autograd.function import once_differentiable


def token_grid(patch_res: Sequence[int], token_size: Sequence[int]) -> tuple[int, int, int]:
    """Token grid ``(t', h', w')`` of a ``patch_res`` video cut into ``token_size`` cells."""
    if len(patch_res) != 3 or len(token_size) != 3:
        raise ValueError("patch_res and token_size must both be (t, h, w)")
    for axis, p, k in zip("thw", patch_res, token_size):
        if p % k:
            raise ValueError(f"token size {k} does not divide patch size {p} on axis {axis}")
    return tuple(p // k for p, k in zip(patch_res, token_size))  # type: ignore[return-value]


@gin.register
class PositionEmbedding3D(nn.Module):
    """Learned factorised position embedding ``E_t[i] + E_h[j] + E_w[k]`` for a ``grid`` of tokens."""

    def __init__(self, grid: Sequence[int], dim: int):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(n, dim) * 0.02) for n in self.grid)

    def forward(self) -> torch.Tensor:
        """The ``[t' * h' * w', dim]`` embedding in row-major (t, h, w) token order."""
        e_t, e_h, e_w = self.tables
        return (e_t[:, None, None] + e_h[None, :, None] + e_w[None, None, :]).flatten(0, 2)


class _DepthwiseConvSame(torch.autograd.Function):
    """Depthwise, stride-1, ``k // 2``-padded 3-D convolution whose input gradient is a forward convolution.

    The output is ``F.conv3d``'s, bit for bit. Only the backward differs: torch's CPU backward of a
    depthwise 3-D convolution (oneDNN) derives the input gradient on a path many times slower than
    the forward convolution, which made the gradient of ``LocalTokenMixing``'s small convolution cost
    about as much as its MLP's. With stride 1 and padding ``k // 2`` on every axis, that gradient is
    the output gradient correlated with the spatially flipped kernel: the same forward convolution.
    The weight and bias gradients still come from torch's own backward.
    """

    @staticmethod
    def forward(ctx, grid, weight, bias, padding):
        grid = grid.contiguous(memory_format=torch.channels_last_3d)
        ctx.save_for_backward(grid, weight)
        ctx.padding = padding
        return F.conv3d(grid, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grid, weight = ctx.saved_tensors
        # Channels-last like the forward: oneDNN's contiguous-layout depthwise kernel is the slow one.
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        groups = weight.shape[0]
        need_grid, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_grid = grad_weight = grad_bias = None
        if need_grid:
            flipped = weight.flip(2, 3, 4).to(grad.dtype)  # autocast ran the forward in grad's dtype
            grad_grid = F.conv3d(grad, flipped, padding=ctx.padding, groups=groups).to(grid.dtype)
        if need_weight or need_bias:
            # In the weight's dtype: torch's bfloat16 depthwise 3-D weight gradient on CPU (the one
            # autocast would pick) comes out far from the float32 one.
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad.to(weight.dtype), grid.to(weight.dtype), weight, [groups], [1, 1, 1], list(ctx.padding),
                [1, 1, 1], False, [0, 0, 0], groups, [False, need_weight, need_bias],
            )
        return grad_grid, grad_weight, grad_bias, None


@gin.register
class LocalTokenMixing(nn.Module):
    """Residual convolution over the token grid: ``x + out(MLP(norm(depthwise_conv(x))))``.

    Not in the paper, whose tokenizer is linear (Sec. 3.2) and names other tokenizations as future
    work (Sec. 6). Why it is here: a linear tokenizer hands each RIN latent only single cells to pool
    by attention, and a small object in heavy noise shows in no single cell, so the latents place it
    poorly. The quickstart's level 0 (4x16x16 videos, 1x2x2 cells) drew its objects nearly still for
    that reason: denoising at sigma 2 it kept 0.30 of the real motion without mixing and 0.60 with a
    3x3x3 mixing, both trained from scratch side by side for 500 steps (``hpdm-diagnose level0-ablation``;
    docs/experiments/quickstart_runs.md, "Why level 0 drew the objects still").
    ``HPDM`` uses it after the tokenizer (``token_mixing``) and, optionally, on every level's tokens
    after each RIN block's write (``block_mixing``), so the later reads pool mixed tokens as well.
    The output projection starts at zero (``ZERO_INIT``), so adding the layer to a trained model
    leaves the model's function unchanged until it trains.

    Cost: the pointwise MLP (two ``dim x 2 dim`` matmuls per token) is what the function needs. The
    depthwise convolution is cheap forward; on CPU its backward goes through ``_DepthwiseConvSame``,
    without which its input gradient alone cost about as much as the MLP.

    Args:
      grid: the token grid ``(t', h', w')``.
      dim: token width.
      kernel: odd convolution size ``(kt, kh, kw)`` in tokens; zero padding at the patch border.
      mlp_ratio: hidden width of the pointwise MLP relative to ``dim``.
    """

    ZERO_INIT = ("out.weight", "out.bias")

    def __init__(self, grid: Sequence[int], dim: int, kernel: Sequence[int] = (3, 3, 3), mlp_ratio: float = 2.0):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.kernel = tuple(int(k) for k in kernel)
        if len(self.kernel) != 3 or any(k < 1 or k % 2 == 0 for k in self.kernel):
            raise ValueError(f"mixing kernel must be three odd sizes (kt, kh, kw), got {tuple(kernel)}")
        self.conv = nn.Conv3d(dim, dim, self.kernel, padding=tuple(k // 2 for k in self.kernel), groups=dim)
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.hidden = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, t'*h'*w', dim]`` in row-major (t, h, w) order -> the same shape."""
        t, h, w = self.grid
        if tokens.shape[1] != t * h * w:
            raise ValueError(f"mixing built for a {self.grid} token grid ({t * h * w} tokens), got {tokens.shape[1]}")
        # [B, t*h*w, d] viewed as [B, d, t, h, w] is channels-last: no copy on either side of the conv.
        grid = rearrange(tokens, "b (t h w) d -> b d t h w", t=t, h=h, w=w)
        mixed = rearrange(self._conv(grid), "b d t h w -> b (t h w) d")
        return tokens + self.out(self.act(self.hidden(self.norm(mixed))))

    def _conv(self, grid: torch.Tensor) -> torch.Tensor:
        # Elsewhere than CPU the library's own backward is kept: the slow path was measured on CPU only.
        if grid.device.type != "cpu" or not torch.is_grad_enabled():
            return self.conv(grid)
        return _DepthwiseConvSame.apply(grid, self.conv.weight, self.conv.bias, self.conv.padding)


@gin.register
class Tokenizer(nn.Module):
    """``[B, C, T, H, W]`` -> ``[B, t'*h'*w', dim]`` tokens (with position embedding).

    Args:
      in_channels: video channels.
      dim: token width.
      patch_res: the (fixed) video size it tokenizes, for the position table.
      token_size: cell size ``(kt, kh, kw)``.
      mixing_kernel: when given, a ``LocalTokenMixing`` of this kernel follows the embedding (not in
        the paper; None keeps the paper's linear tokenizer).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        patch_res: Sequence[int],
        token_size: Sequence[int] = (1, 4, 4),
        mixing_kernel: Sequence[int] | None = None,
    ):
        super().__init__()
        self.token_size = tuple(int(k) for k in token_size)
        self.grid = token_grid(patch_res, self.token_size)
        kt, kh, kw = self.token_size
        self.proj = nn.Linear(in_channels * kt * kh * kw, dim)
        self.norm = nn.LayerNorm(dim)
        self.pos = PositionEmbedding3D(self.grid, dim)
        self.mixing = LocalTokenMixing(self.grid, dim, mixing_kernel) if mixing_kernel is not None else None

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        grid = tuple(s // k for s, k in zip(video.shape[2:], self.token_size))
        if grid != self.grid:
            raise ValueError(f"tokenizer built for a {self.grid} token grid, got video {tuple(video.shape[2:])}")
        kt, kh, kw = self.token_size
        cells = rearrange(video, "b c (t kt) (h kh) (w kw) -> b (t h w) (c kt kh kw)", kt=kt, kh=kh, kw=kw)
        tokens = self.norm(self.proj(cells)) + self.pos()
        return tokens if self.mixing is None else self.mixing(tokens)


@gin.register
class Detokenizer(nn.Module):
    """``[B, t'*h'*w', dim]`` tokens -> ``[B, C, T, H, W]`` (inverse layout of ``Tokenizer``).

    The output projection starts at zero so that a fresh model's prediction is its skip path. Its
    parameters are listed in ``ZERO_INIT``: an optimiser with LAMB's layer adaptation must leave them
    unadapted, since the trust ratio ``||w|| / ||u||`` of a tensor that starts at zero limits its growth
    to a factor ``1 + lr`` per step after the first (``HPDM.no_weight_decay_names``).
    """

    ZERO_INIT = ("proj.weight", "proj.bias")

    def __init__(self, out_channels: int, dim: int, patch_res: Sequence[int], token_size: Sequence[int] = (1, 4, 4)):
        super().__init__()
        self.token_size = tuple(int(k) for k in token_size)
        self.grid = token_grid(patch_res, self.token_size)
        self.out_channels = out_channels
        kt, kh, kw = self.token_size
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_channels * kt * kh * kw)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t, h, w = self.grid
        kt, kh, kw = self.token_size
        cells = self.proj(self.norm(tokens))
        return rearrange(
            cells, "b (t h w) (c kt kh kw) -> b c (t kt) (h kh) (w kw)", t=t, h=h, w=w, kt=kt, kh=kh, kw=kw
        )
