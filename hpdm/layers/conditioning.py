"""Conditioning tokens appended to the RIN latents (paper Sec. 3.2, Table 8; RIN's pix2seq design).

Each embedder returns tokens of the latent width; the model concatenates them to the latents, so
they take part in the latents' self-attention and are read by the interface tokens' write step.
"""

from __future__ import annotations

import math

import gin
import torch
import torch.nn as nn


@gin.register
class NoiseLevelEmbedding(nn.Module):
    """One token from the noise level: random Fourier features of ``c_noise`` and an MLP.

    ``c_noise`` is the preconditioned noise input (``log(sigma) / 4`` in EDM), one per row.
    """

    def __init__(self, dim: int, num_frequencies: int = 64, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_frequencies) * scale, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """``c_noise [B]`` -> ``[B, 1, dim]``."""
        angles = 2 * math.pi * c_noise[:, None].float() * self.freqs[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))[:, None]


@gin.register
class ClassEmbedding(nn.Module):
    """One token per class label; id ``num_classes`` is the null class for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels [B]`` in ``[0, num_classes]`` -> ``[B, 1, dim]``."""
        if labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"class labels must be integer, got {labels.dtype}")
        if (labels < 0).any() or (labels > self.num_classes).any():
            bad = labels[(labels < 0) | (labels > self.num_classes)][0].item()
            raise ValueError(
                f"unknown class id {bad}: valid ids are 0..{self.num_classes - 1}, and {self.num_classes} (null class)"
            )
        return self.table(labels)[:, None]


@gin.register
class TextEmbedding(nn.Module):
    """Text tokens: external (e.g. T5) embeddings projected to the latent width, plus a null token.

    The learned null token is always present and valid; dropping a sample's text (classifier-free
    guidance) masks its real text tokens so only the null token remains visible.
    """

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.text_dim = text_dim
        self.norm = nn.LayerNorm(text_dim)
        self.proj = nn.Linear(text_dim, dim)
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

    def forward(
        self, text: torch.Tensor | None, mask: torch.Tensor | None, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(tokens [B, 1+S, dim], valid [B, 1+S])``; ``text=None`` gives the null token only."""
        null = self.null.expand(batch, 1, -1)
        ones = torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if text is None:
            return null, ones
        if text.dim() != 3 or text.shape[0] != batch or text.shape[-1] != self.text_dim:
            raise ValueError(f"text embeddings must be [B={batch}, S, {self.text_dim}], got {tuple(text.shape)}")
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        tokens = self.proj(self.norm(text.to(null.dtype)))
        return torch.cat([null, tokens], dim=1), torch.cat([ones, mask.bool()], dim=1)
