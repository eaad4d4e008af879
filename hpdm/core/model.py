"""The HPDM denoiser (paper Sec. 3.2, 4, 4.2, 4.3, 4.6; Fig. 2; Appendix C).

Tokenizer -> RIN blocks with adaptive computation and context fusion before every block ->
detokenizer, over the patches of the first ``n`` pyramid levels of a sample, each denoised at its own
noise level (Eq. 4). Information flows coarse to fine only: level ``k``'s prediction never depends
on levels above ``k`` (every (sample, level) has its own latents and is folded into the batch, and
fusion only reads lower levels), which is what makes cascaded and cached inference exact.

``cond`` (optional) is a dict:

* ``"label"``: ``LongTensor[B]`` class ids; id ``num_classes`` is the null class. Absent -> null.
* ``"text"``: ``FloatTensor[B, S, text_dim]`` text-encoder embeddings; ``"text_mask"``:
  ``BoolTensor[B, S]`` (True = real token). Absent -> the learned null text token only.

``cond=None`` is fully unconditional (null class, no text).

Every entry point takes the noisy patches, their noise levels and their coordinates first, in that
order (``x, sigma, coords``: the EDM denoiser ``D(x; sigma)`` of a patch at ``coords``), and the rest
by keyword: ``forward(x, sigma, coords, cond=...)``, ``context_cache(x_anc, sigma_anc, coords_anc,
coords=..., cond=...)``, ``denoise_level(x, sigma, coords, level=..., cache=..., cond=...)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from absl import logging
import gin
import torch
import torch.nn as nn
import torch.utils.checkpoint

from hpdm.core.levels import LevelScheduler
from hpdm.core.precond import expand_sigma, v_preconditioning
from hpdm.core.schedule import NoiseSchedule
from hpdm.layers import (
    ClassEmbedding,
    ContextFuser,
    Detokenizer,
    LocalTokenMixing,
    NoiseLevelEmbedding,
    RINBlock,
    TextEmbedding,
    Tokenizer,
    sample_context,
)
from hpdm.pyramid import Pyramid, check_coords

FUSION_MODES = ("deep", "shallow")
_FUSER_NAME = re.compile(r"^fusers\.(\d+)\.")
COND_KEYS = ("label", "text", "text_mask")


@dataclass
class ContextCache:
    """What a level-``level`` patch needs from its ancestors, per block (cached inference, Sec. 4.5).

    ``terms[b]`` is the fusion's context term (``W_ctx ctx + W_c c + b``, see ``ContextFuser``) added
    before block ``b``, or None where the level is not fused before ``b``.
    """

    level: int
    terms: list

    def to(self, device) -> "ContextCache":
        return ContextCache(self.level, [None if t is None else t.to(device) for t in self.terms])

    def select(self, index: torch.Tensor) -> "ContextCache":
        """Rows ``index`` of every term (e.g. one tile batch out of a cache built for many tiles)."""
        return ContextCache(self.level, [None if t is None else t[index.to(t.device)] for t in self.terms])


@dataclass
class _Rows:
    """Distinct rows of a batch: ``first[u]`` is the first row equal to distinct row ``u``, and
    ``inverse[r]`` the distinct row of row ``r``."""

    first: torch.Tensor
    inverse: torch.Tensor


def _distinct_rows(parts: Sequence[torch.Tensor | None]) -> _Rows:
    """The rows that are equal in every tensor of ``parts`` (each ``[B, ...]``; None ignored)."""
    present = [p for p in parts if p is not None]
    batch = present[0].shape[0]
    key = torch.cat([p.reshape(batch, -1).to(torch.float64) for p in present], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    count = int(inverse.max()) + 1
    order = torch.arange(batch, device=inverse.device)
    first = torch.full((count,), batch, dtype=order.dtype, device=order.device).scatter_reduce(
        0, inverse, order, reduce="amin")
    # Distinct rows in the order of their first appearance, so a batch without repeats keeps its order.
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(count, device=first.device)
    return _Rows(first=first.sort().values, inverse=rank[inverse])


@gin.configurable
class HPDM(nn.Module):
    """Hierarchical patch diffusion denoiser; ``model(x, sigma, coords, cond=cond)`` returns x0 estimates.

    Args:
      target_res / patch_res: the pyramid (``hpdm.pyramid.Pyramid``).
      channels: video channels.
      token_size: tokenizer cell ``(kt, kh, kw)`` (paper: 1x4x4).
      token_mixing: kernel ``(kt, kh, kw)`` of a ``LocalTokenMixing`` after the tokenizer; None (the
        paper's linear tokenizer) by default. The quickstart sets (3, 3, 3): see that layer.
      block_mixing: kernel of a ``LocalTokenMixing`` on every level's tokens after each block's
        write, so every read after the first also pools locally mixed tokens; None (the paper) by
        default. Zero-initialised, so adding it to a trained model keeps the model's function.
      frame_latents: not in the paper: split the learned latents into one group per token frame; a
        group reads and writes only its frame's tokens (the noise and conditioning latents still see
        every token, and latent self-attention still mixes the groups). False (the paper) by default.
      token_dim: interface token width (Table 8 "Tokenization dim").
      latent_dim / num_latents: RIN latents per (sample, level) (Table 8).
      num_blocks / latent_layers_per_block: RIN depth.
      head_dim: width of one attention head (heads = width / head_dim).
      num_levels_per_block: adaptive computation loads (Listing 1); None = every block runs every level.
      num_classes: class-conditional when > 0 (plus the null class). None counts as 0 here; the
        trainer builds the model with the data's class count when the config leaves it None or unset.
      text_dim: width of external text embeddings when > 0.
      fusion: "deep" (Eq. 7-9 before every block) or "shallow" (parent pixels, once; Table 3).
      detach_context / use_coords: Table 3 ablation switches of the fuser.
      schedule: the ``NoiseSchedule`` (per-level input scaling, sigma_data).
    """

    def __init__(
        self,
        target_res: Sequence[int] = gin.REQUIRED,
        patch_res: Sequence[int] = gin.REQUIRED,
        channels: int = 3,
        token_size: Sequence[int] = (1, 4, 4),
        token_mixing: Sequence[int] | None = None,
        block_mixing: Sequence[int] | None = None,
        frame_latents: bool = False,
        token_dim: int = 256,
        latent_dim: int = 256,
        num_latents: int = 128,
        num_blocks: int = 6,
        latent_layers_per_block: int = 2,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        num_levels_per_block: Sequence[int] | None = None,
        num_classes: int | None = 0,
        text_dim: int = 0,
        fusion: str = "deep",
        detach_context: bool = False,
        use_coords: bool = True,
        schedule: NoiseSchedule | None = None,
    ):
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        for name, width in (("token_dim", token_dim), ("latent_dim", latent_dim)):
            if width % head_dim:
                raise ValueError(f"head_dim={head_dim} must divide {name}={width}")
        self.pyramid = Pyramid(target_res, patch_res)
        self.schedule = schedule if schedule is not None else NoiseSchedule()
        levels = self.pyramid.num_levels
        self.schedule.check_num_levels(levels)
        loads = list(num_levels_per_block) if num_levels_per_block is not None else [levels] * num_blocks
        if len(loads) != num_blocks:
            raise ValueError(f"num_levels_per_block has {len(loads)} entries for {num_blocks} blocks")
        self.scheduler = LevelScheduler(loads, levels)
        self.channels = channels
        num_classes = int(num_classes or 0)
        self.num_classes = num_classes
        self.text_dim = text_dim
        self.fusion = fusion
        self.activation_checkpointing = False
        self.level_block_evaluations = 0

        patch = self.pyramid.patch_res
        self.tokenizer = Tokenizer(channels, token_dim, patch, token_size, mixing_kernel=token_mixing)
        self.detokenizer = Detokenizer(channels, token_dim, patch, token_size)
        self.grid = self.tokenizer.grid
        if frame_latents and num_latents < self.grid[0]:
            raise ValueError(
                f"frame_latents needs at least one latent per token frame: {num_latents} latents, {self.grid[0]} frames"
            )
        self.latents = nn.Parameter(torch.randn(levels, num_latents, latent_dim) * 0.02)
        # Fixed by the grid and the latent count, so built once; not persistent, so checkpoints with
        # and without frame_latents hold the same tensors.
        self.register_buffer("frame_groups", self._frame_groups(num_latents) if frame_latents else None, persistent=False)
        self.noise_embed = NoiseLevelEmbedding(latent_dim)
        self.class_embed = ClassEmbedding(num_classes, latent_dim) if num_classes > 0 else None
        self.text_embed = TextEmbedding(text_dim, latent_dim) if text_dim > 0 else None
        self.blocks = nn.ModuleList(
            RINBlock(
                latent_dim,
                token_dim,
                num_latent_layers=latent_layers_per_block,
                latent_heads=latent_dim // head_dim,
                token_heads=token_dim // head_dim,
                mlp_ratio=mlp_ratio,
            )
            for _ in range(num_blocks)
        )
        self.block_mixers = (
            nn.ModuleList(LocalTokenMixing(self.grid, token_dim, block_mixing) for _ in range(num_blocks))
            if block_mixing is not None
            else None
        )
        # Keyed by block index. Deep fusion builds a fuser only where a block runs a level above 0:
        # a block that runs level 0 alone fuses nothing, and a fuser there would hold parameters that
        # never get a gradient (DDP's reducer then fails at the second step, and the optimizer never
        # makes state for them). Shallow fusion has one fuser, applied at each level's first block.
        fuser_blocks = [b for b in range(num_blocks) if loads[b] > 1] if fusion == "deep" else [0]
        self.fusers = nn.ModuleDict(
            {str(b): ContextFuser(token_dim, detach_context=detach_context, use_coords=use_coords) for b in fuser_blocks}
        )
        self.context_tokenizer = (
            Tokenizer(channels, token_dim, patch, token_size, mixing_kernel=token_mixing) if fusion == "shallow" else None
        )

    # ------------------------------------------------------------------ public API

    @property
    def num_levels(self) -> int:
        return self.pyramid.num_levels

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, coords: torch.Tensor, *, cond: dict | None = None
    ) -> torch.Tensor:
        """Denoise ``x [B, n, C, t, h, w]`` (levels ``0..n-1``) at ``sigma [B, n]``, the patches at
        ``coords [B, n, 6]``; returns x0 estimates."""
        batch, n = self._check_inputs(x, sigma, coords)
        pre, cond_tokens, cond_mask = self._prepare(x, sigma, cond, batch)
        tokens = [self.tokenizer(pre.c_in[:, l] * x[:, l]) for l in range(n)]
        latents = [self._initial_latents(l, pre.c_noise[:, l, 0, 0, 0, 0], cond_tokens) for l in range(n)]
        shallow = self._shallow_terms(x, pre.c_in, coords, range(1, n))
        tokens, _ = self._run_blocks(tokens, latents, cond_mask, coords, shallow)
        v = torch.stack([self.detokenizer(t) for t in tokens], dim=1)
        return pre.c_skip * x + pre.c_out * v

    @torch.no_grad()
    def context_cache(
        self,
        x_anc: torch.Tensor,
        sigma_anc: torch.Tensor,
        coords_anc: torch.Tensor,
        *,
        coords: torch.Tensor,
        cond: dict | None = None,
    ) -> ContextCache:
        """The ancestors' contribution to the fusion of a level-``l`` patch at ``coords [B, 6]``.

        ``x_anc [B, l, C, t, h, w]`` are the patches of levels ``0..l-1`` containing it (noisy at
        ``sigma_anc [B, l]``, at ``coords_anc [B, l, 6]``). Computed once per tile and reused for
        every sampling step.
        """
        batch, level = self._check_inputs(x_anc, sigma_anc, coords_anc)
        if level >= self.num_levels:
            raise ValueError(f"{level} ancestors given, but the model has only {self.num_levels} levels")
        check_coords(coords)
        pre, cond_tokens, cond_mask = self._prepare(x_anc, sigma_anc, cond, batch)
        terms: list = [None] * self.scheduler.num_blocks
        if self.fusion == "shallow":
            first = self.scheduler.blocks_for_level(level)[0]
            terms[first] = self._shallow_term(x_anc[:, -1], pre.c_in[:, -1], coords_anc[:, -1], coords)
            return ContextCache(level, terms)
        last = max(self.scheduler.blocks_for_level(level))
        # states[k][b]: level k's tokens entering block b, for the distinct rows of levels 0..k.
        states, rows = [], []
        for k in range(level):
            # Rows equal in levels 0..k: equal in levels 0..k-1 (the previous level's distinct row) and in level k.
            below = [cond_tokens, cond_mask] if k == 0 else [rows[k - 1].inverse]
            rows.append(_distinct_rows([*below, x_anc[:, k], sigma_anc[:, k], coords_anc[:, k]]))
            states.append(self._ancestor_states(k, last, rows, states, x_anc, pre, coords_anc, cond_tokens, cond_mask))
        for block in range(last + 1):
            if self.scheduler.loads[block] > level:
                ancestors = [states[k][block][rows[k].inverse] for k in range(level)]
                terms[block] = self._deep_term(block, ancestors, coords_anc.unbind(1), coords)
        return ContextCache(level, terms)

    def _ancestor_states(self, k, last, rows, states, x_anc, pre, coords_anc, cond_tokens, cond_mask) -> list:
        """Level ``k``'s tokens entering blocks ``0..last``, for its distinct rows ``rows[k]``.

        A level's states depend only on the levels below it (fusion reads lower levels only), so a
        level runs by itself once those below it are known: the blocks it runs, each after fusing
        the lower levels' states entering that block, exactly as in ``_run_blocks``. Tiles of one
        video share their low-level windows (every tile shares the whole level-0 video), so the
        distinct rows are far fewer than the tiles at the low levels, which run most blocks.
        """
        rep = rows[k].first
        pick = lambda t: None if t is None else t[rep]  # noqa: E731
        tokens = self.tokenizer(pre.c_in[rep, k] * x_anc[rep, k])
        latents = self._initial_latents(k, pre.c_noise[rep, k, 0, 0, 0, 0], pick(cond_tokens))
        # Lower levels' distinct rows for each of this level's rows: its prefix contains theirs.
        lower = [rows[j].inverse[rep] for j in range(k)]
        coords_k = coords_anc[rep]
        entering = []
        for b in range(last + 1):
            entering.append(tokens)
            if b == last or self.scheduler.loads[b] <= k:
                continue
            if k and self.fusion == "deep":
                ancestors = [states[j][b][lower[j]] for j in range(k)]
                term = self._deep_term(b, ancestors, coords_k[:, :k].unbind(1), coords_k[:, k])
                tokens = self._fuser(b).fuse(tokens, term)
            (latents,), (tokens,) = self._apply_block(b, [latents], [tokens], pick(cond_mask))
        return entering

    def denoise_level(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        coords: torch.Tensor,
        *,
        level: int,
        cache: ContextCache | None,
        cond: dict | None = None,
    ) -> torch.Tensor:
        """Denoise one level-``level`` patch ``x [B, C, t, h, w]`` at ``sigma [B]`` and ``coords [B, 6]``
        using a ``ContextCache`` of its ancestors (None at level 0).

        Runs only the blocks that ``level`` runs; equals the last level of ``forward`` given the
        same ancestors.
        """
        if level > 0 and (cache is None or cache.level != level):
            raise ValueError(f"level {level} needs a ContextCache built for level {level}")
        batch, _ = self._check_inputs(x[:, None], sigma[:, None], coords[:, None], first_level=level)
        pre = v_preconditioning(expand_sigma(sigma, x), self.schedule.sigma_data)
        c_noise = (sigma * self.schedule.level_scales(level + 1, sigma.device)[level]).log() / 4
        cond_tokens, cond_mask = self._cond_tokens(cond, batch, x.device)
        tokens = self.tokenizer(pre.c_in * x)
        latents = self._initial_latents(level, c_noise, cond_tokens)
        for b in self.scheduler.blocks_for_level(level):
            if cache is not None and cache.terms[b] is not None:
                tokens = self._fuser(b).fuse(tokens, cache.terms[b])
            latents_out, tokens_out = self._apply_block(b, [latents], [tokens], cond_mask)
            latents, tokens = latents_out[0], tokens_out[0]
        v = self.detokenizer(tokens)
        return pre.c_skip * x + pre.c_out * v

    def no_weight_decay_names(self) -> set[str]:
        """Parameters exempt from weight decay and LAMB's layer adaptation (Sec. 4.6): norms, biases,
        embeddings and latents, and every zero-initialised output projection (the ``ZERO_INIT`` names
        of the detokenizer and of ``LocalTokenMixing``).

        The last because LAMB's trust ratio ``||w|| / ||u||`` scales a tensor's update by its own norm:
        one that starts at zero is set to about ``lr_1`` per element by the first step and then grows at most by a factor
        ``1 + lr`` per step, so under the quickstart's schedule (200 warm-up steps to 0.005) the model's
        output would stay near its skip path for over a thousand steps (``tests/test_optim.py``).
        """
        zero_init = {
            f"{prefix}.{n}" for prefix, module in self.named_modules() for n in getattr(module, "ZERO_INIT", ())
        }
        names = set()
        for name, param in self.named_parameters():
            if param.dim() < 2 or name == "latents" or ".pos." in name or name in zero_init or name.startswith(
                ("class_embed.", "text_embed.null")
            ):
                names.add(name)
        return names

    def upgrade_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
        """``state`` without the tensors of fusers this model does not build.

        Models saved before fusers were built only where a block fuses a level hold a fuser for every
        block; those of blocks that run level 0 alone never took part in a forward pass, so dropping
        them leaves the function unchanged. Anything else is returned as is (and checked by the caller).
        """
        stale = sorted(
            name
            for name in state
            if (m := _FUSER_NAME.match(name)) and m.group(1) not in self.fusers and int(m.group(1)) < self.scheduler.num_blocks
        )
        if not stale:
            return dict(state)
        blocks = sorted({int(_FUSER_NAME.match(n).group(1)) for n in stale})
        logging.info(
            "%s: dropped %d tensors of the context fusers of blocks %s, which fuse no level (never used by "
            "that model's forward pass, so its output is unchanged)",
            source,
            len(stale),
            blocks,
        )
        return {k: v for k, v in state.items() if k not in set(stale)}

    # ------------------------------------------------------------------ internals

    def _fuser(self, block: int) -> ContextFuser:
        return self.fusers[str(block) if self.fusion == "deep" else "0"]

    def _check_inputs(self, x, sigma, coords, first_level: int = 0) -> tuple[int, int]:
        if x.dim() != 6:
            raise ValueError(f"x must be [B, n, C, t, h, w], got shape {tuple(x.shape)}")
        batch, n = x.shape[:2]
        if tuple(sigma.shape) == (batch, n, 6) and tuple(coords.shape) == (batch, n):
            # The order before the entry points agreed on one; shape errors alone would not say so.
            raise ValueError("sigma and coords are swapped: HPDM's entry points take (x, sigma, coords)")
        if not 1 <= first_level + n <= self.num_levels:
            raise ValueError(
                f"x holds {first_level + n} levels, but the model has {self.num_levels} (need 1..{self.num_levels})"
            )
        if x.shape[2] != self.channels or tuple(x.shape[3:]) != self.pyramid.patch_res:
            raise ValueError(
                f"patches must be [C={self.channels}, {self.pyramid.patch_res}], got {tuple(x.shape[2:])}"
            )
        if tuple(coords.shape) != (batch, n, 6):
            raise ValueError(f"coords must be [B={batch}, n={n}, 6], got {tuple(coords.shape)}")
        check_coords(coords)
        if tuple(sigma.shape) != (batch, n):
            raise ValueError(f"sigma must be [B={batch}, n={n}], got {tuple(sigma.shape)}")
        if not torch.isfinite(sigma).all() or (sigma <= 0).any():
            raise ValueError("sigma must be positive and finite")
        return batch, n

    def _prepare(self, x, sigma, cond, batch):
        """Preconditioning (with the per-level scaled noise embedding) and conditioning tokens."""
        pre = v_preconditioning(sigma, self.schedule.sigma_data)
        c_noise = self.schedule.model_sigma(sigma).log() / 4
        pre = pre._replace(
            c_skip=expand_sigma(pre.c_skip, x),
            c_out=expand_sigma(pre.c_out, x),
            c_in=expand_sigma(pre.c_in, x),
            c_noise=expand_sigma(c_noise, x),
        )
        tokens, mask = self._cond_tokens(cond, batch, x.device)
        return pre, tokens, mask

    def _cond_tokens(self, cond, batch, device):
        cond = dict(cond or {})
        unknown = set(cond) - set(COND_KEYS)
        if unknown:
            raise ValueError(f"unknown cond keys {sorted(unknown)}; expected a subset of {COND_KEYS}")
        parts, masks = [], []
        label = cond.get("label")
        if label is not None and self.class_embed is None:
            raise ValueError("class labels given to a model built with num_classes=0")
        if self.class_embed is not None:
            if label is None:
                label = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
            if tuple(label.shape) != (batch,):
                raise ValueError(f"cond['label'] must be [B={batch}], got {tuple(label.shape)}")
            parts.append(self.class_embed(label.to(device)))
        text = cond.get("text")
        if text is not None and self.text_embed is None:
            raise ValueError("text embeddings given to a model built with text_dim=0")
        if self.text_embed is not None:
            mask = cond.get("text_mask")
            tokens, valid = self.text_embed(text, mask, batch)
            parts.append(tokens)
            masks.append(valid)
        if not parts:
            return None, None
        tokens = torch.cat(parts, dim=1)
        if not masks:
            return tokens, None
        fixed = tokens.shape[1] - sum(m.shape[1] for m in masks)
        ones = torch.ones(batch, fixed, dtype=torch.bool, device=tokens.device)
        return tokens, torch.cat([ones, *masks], dim=1)

    def _initial_latents(self, level: int, c_noise: torch.Tensor, cond_tokens) -> torch.Tensor:
        batch = c_noise.shape[0]
        parts = [self.latents[level].expand(batch, -1, -1), self.noise_embed(c_noise)]
        if cond_tokens is not None:
            parts.append(cond_tokens)
        return torch.cat(parts, dim=1)

    def _latent_mask(self, cond_mask, latents_len: int):
        if cond_mask is None:
            return None
        batch = cond_mask.shape[0]
        ones = torch.ones(batch, latents_len - cond_mask.shape[1], dtype=torch.bool, device=cond_mask.device)
        return torch.cat([ones, cond_mask], dim=1)

    def _frame_groups(self, num_latents: int) -> torch.Tensor:
        """``[num_latents, tokens]``: learned latent ``i`` reads (and is written to by) the tokens of
        frame ``i * t' // num_latents`` only."""
        t = self.grid[0]
        frame = torch.arange(t).repeat_interleave(self.grid[1] * self.grid[2])
        group = torch.arange(num_latents) * t // num_latents
        return group[:, None] == frame[None, :]

    def _read_mask(self, latents_len: int) -> torch.Tensor:
        """``[latents_len, tokens]``: the frame groups of the learned latents, then the noise and
        conditioning latents, which read every token."""
        groups = self.frame_groups
        rest = groups.new_ones(latents_len - groups.shape[0], groups.shape[1])
        return torch.cat([groups, rest])

    def _as_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, t*h*w, d]`` -> ``[B, d, t, h, w]``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def _deep_term(self, block: int, ancestors: Sequence[torch.Tensor], anc_coords, coords) -> torch.Tensor:
        """Context term of block ``block`` for a patch at ``coords`` given ancestor token states."""
        pairs = [(self._as_grid(t), c) for t, c in zip(ancestors, anc_coords)]
        ctx = sample_context(pairs, coords, self.grid).flatten(2).transpose(1, 2)
        return self._fuser(block).context_term(ctx, coords)

    def _shallow_terms(self, x, c_in, coords, levels) -> dict:
        """Shallow pixel fusion terms for ``levels`` of a full forward (empty for deep fusion)."""
        if self.fusion != "shallow":
            return {}
        return {l: self._shallow_term(x[:, l - 1], c_in[:, l - 1], coords[:, l - 1], coords[:, l]) for l in levels}

    def _shallow_term(self, parent_x, parent_c_in, parent_coords, coords) -> torch.Tensor:
        """Table 3 "shallow fusion": the parent patch's input pixels resampled onto the child patch."""
        pixels = sample_context([(parent_c_in * parent_x, parent_coords)], coords, self.pyramid.patch_res)
        return self._fuser(0).context_term(self.context_tokenizer(pixels), coords)

    def _apply_block(self, b: int, latents: list, tokens: list, cond_mask):
        """Run block ``b`` on several levels at once by folding them into the batch."""
        count = len(tokens)
        batch = tokens[0].shape[0]
        lat = torch.cat(latents, dim=0)
        tok = torch.cat(tokens, dim=0)
        mask = self._latent_mask(cond_mask, lat.shape[1])
        if mask is not None:
            mask = mask.repeat(count, 1)
        read_mask = self._read_mask(lat.shape[1]) if self.frame_groups is not None else None
        if self.activation_checkpointing and torch.is_grad_enabled():
            lat, tok = torch.utils.checkpoint.checkpoint(self.blocks[b], lat, tok, mask, read_mask, use_reentrant=False)
        else:
            lat, tok = self.blocks[b](lat, tok, mask, read_mask)
        if self.block_mixers is not None:
            tok = self.block_mixers[b](tok)
        self.level_block_evaluations += count
        return list(lat.split(batch)), list(tok.split(batch))

    def _run_blocks(
        self,
        tokens: list,
        latents: list,
        cond_mask,
        coords: torch.Tensor,
        shallow: dict | None,
    ):
        """The block loop of Listing 1 with context fusion before every block (Eq. 7-9)."""
        n = len(tokens)
        level_coords = coords.unbind(1)
        for b in range(self.scheduler.num_blocks):
            active = self.scheduler.levels_in_block(b, n)
            fused = [tokens[0]]
            for l in range(1, active):
                if self.fusion == "deep":
                    term = self._deep_term(b, tokens[:l], level_coords[:l], level_coords[l])
                    fused.append(self._fuser(b).fuse(tokens[l], term))
                elif shallow and b == self.scheduler.blocks_for_level(l)[0]:
                    fused.append(self._fuser(0).fuse(tokens[l], shallow[l]))
                else:
                    fused.append(tokens[l])
            new_latents, new_tokens = self._apply_block(b, latents[:active], fused, cond_mask)
            latents = new_latents + latents[active:]
            tokens = new_tokens + tokens[active:]
        return tokens, latents
