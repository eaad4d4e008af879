"""Multi-head attention and MLP, the two primitives of a RIN block (paper Sec. 3.2, Appendix C Fig. 11)."""

from __future__ import annotations

import gin
import torch
import torch.nn as nn
import torch.nn.functional as F


@gin.register
class Attention(nn.Module):
    """Multi-head (cross-)attention over ``scaled_dot_product_attention``.

    Queries come from ``query_dim`` tokens, keys and values from ``context_dim`` tokens (the same
    tokens for self-attention). The inner width equals ``query_dim``.

    Args:
      query_dim: width of the query tokens and of the output.
      context_dim: width of the key/value tokens; defaults to ``query_dim``.
      num_heads: attention heads; must divide ``query_dim``.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, num_heads: int = 4):
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide query_dim={query_dim}")
        context_dim = context_dim or query_dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * query_dim, bias=False)
        self.out = nn.Linear(query_dim, query_dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        pair_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [B, N, query_dim]``, ``context [B, M, context_dim]``, ``key_mask [B, M]`` and ``pair_mask
        [N, M]`` (True = attend; both apply where both are given)."""
        context = x if context is None else context
        b, n, d = x.shape
        h = self.num_heads
        q = self.to_q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.to_kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if pair_mask is not None:
            mask = pair_mask if mask is None else mask & pair_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


@gin.register
class MLP(nn.Module):
    """Two-layer GELU MLP with hidden width ``dim * ratio``."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
