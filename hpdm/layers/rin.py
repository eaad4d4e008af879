"""The Recurrent Interface Network block (paper Sec. 3.2; Appendix C, Fig. 11; Jabri et al. 2023).

One block: the latents *read* the interface tokens (cross-attention + MLP), process themselves with
a stack of self-attention + MLP layers, and the tokens *write* back from the latents
(cross-attention + MLP). Everything is pre-norm and residual, so cost grows linearly with the
number of interface tokens.
"""

from __future__ import annotations

import gin
import torch
import torch.nn as nn

from hpdm.layers.attention import MLP, Attention


class _Residual(nn.Module):
    """``x + attn(norm(x), norm_ctx(ctx))`` followed by ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, context_dim: int | None, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim) if context_dim else None
        self.attn = Attention(dim, context_dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x, context=None, key_mask=None, pair_mask=None):
        q = self.norm_q(x)
        ctx = q if self.norm_ctx is None else self.norm_ctx(context)
        x = x + self.attn(q, ctx, key_mask, pair_mask)
        return x + self.mlp(self.norm_mlp(x))


@gin.register
class RINBlock(nn.Module):
    """Read -> latent self-attention stack -> write.

    Args:
      latent_dim: width of the latents (and of any conditioning tokens appended to them).
      token_dim: width of the interface tokens.
      num_latent_layers: self-attention + MLP layers on the latents inside the block.
      latent_heads / token_heads: attention heads for the latent-side and token-side attention.
      mlp_ratio: hidden width of every MLP relative to its input.
    """

    def __init__(
        self,
        latent_dim: int,
        token_dim: int,
        num_latent_layers: int = 2,
        latent_heads: int = 4,
        token_heads: int = 4,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.read = _Residual(latent_dim, token_dim, latent_heads, mlp_ratio)
        self.latent_layers = nn.ModuleList(
            _Residual(latent_dim, None, latent_heads, mlp_ratio) for _ in range(num_latent_layers)
        )
        self.write = _Residual(token_dim, latent_dim, token_heads, mlp_ratio)

    def forward(
        self,
        latents: torch.Tensor,
        tokens: torch.Tensor,
        latent_mask: torch.Tensor | None = None,
        read_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents [B, N, latent_dim]``, ``tokens [B, M, token_dim]``, ``latent_mask [B, N]`` (True = valid),
        ``read_mask [N, M]`` (True = latent n may read token m; the write uses its transpose).

        Returns the updated ``(latents, tokens)``.
        """
        latents = self.read(latents, tokens, pair_mask=read_mask)
        for layer in self.latent_layers:
            latents = layer(latents, key_mask=latent_mask)
        write_mask = None if read_mask is None else read_mask.T
        tokens = self.write(tokens, latents, key_mask=latent_mask, pair_mask=write_mask)
        return latents, tokens
