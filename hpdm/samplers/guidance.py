"""The HPDM model as a tile model, cached or not, with classifier-free guidance (paper Sec. 4.5, 4.6).

``HPDMTileModel`` adapts ``hpdm.core.HPDM`` to the ``TileModel`` protocol of ``tiled.py``:

* cached (default): ``context`` = ``model.context_cache(...)`` (the ancestors' fusion terms, built once
  per tile), ``denoise`` = ``model.denoise_level(...)``, which runs only the blocks level ``l`` runs;
* uncached: ``context`` keeps the raw ancestor windows and ``denoise`` runs the full forward over all
  levels ``0..l`` at every step (the reference for "cached == uncached").

Ancestors are fed at ``model.schedule.context_sigma(k)`` (never at 0: docs/design.md "Inference").

Classifier-free guidance (Ho & Salimans 2022) runs the conditional and the null rows in one batch:
``x0 = x0_null + g (x0_cond - x0_null)``, so ``g = 1`` is plain conditional sampling (and skips the
null rows) and ``g = 0`` is unconditional. The null rows get their own cached context, because the
conditioning enters the ancestors' blocks too.

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"; not in
the HPDM paper) extrapolates away from a second, weaker model of the same pyramid:
``x0 = x0_weak + w (x0 - x0_weak)``, on chosen levels and within a sigma interval. With classifier-free
guidance too, both models are guided first, so the result stays linear in the four predictions.
The weak model's errors decide what it amplifies: ``pretrained/quickstart/README.md`` measures it on
the quickstart's level 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch


@dataclass(frozen=True)
class Autoguidance:
    """What ``HPDMTileModel`` extrapolates away from (Karras et al. 2024).

    Args:
      model: the weak ``HPDM``: the same pyramid, channels and conditioning as the guided model.
      scale: ``w`` in ``x0_weak + w (x0 - x0_weak)``; 1 leaves the guided model unchanged.
      levels: the pyramid levels it applies to (default: level 0, where the whole video is decided).
      sigma_min, sigma_max: it applies to the rows whose sigma (the level's model sigma, as the
        stepper passes it) lies in ``[sigma_min, sigma_max]`` (Kynkaanniemi et al. 2024 limit guidance
        to an interval); the weak model is not evaluated at steps outside it.
    """

    model: Any
    scale: float = 2.0
    levels: Sequence[int] = (0,)
    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(int(level) for level in self.levels))
        if not math.isfinite(self.scale):
            raise ValueError(f"autoguidance scale must be finite, got {self.scale}")
        if not 0.0 <= self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 <= sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if any(level < 0 for level in self.levels):
            raise ValueError(f"autoguidance levels must be >= 0, got {self.levels}")

    def check_compatible(self, model) -> None:
        """Raise ``ValueError`` unless the weak model can stand in for ``model`` on the guided levels."""
        weak = self.model
        problems = []
        for name in ("channels", "num_classes", "text_dim"):
            if getattr(weak, name) != getattr(model, name):
                problems.append(f"{name} {getattr(weak, name)} != {getattr(model, name)}")
        for name in ("target_res", "patch_res"):
            if tuple(getattr(weak.pyramid, name)) != tuple(getattr(model.pyramid, name)):
                problems.append(f"pyramid {name} {tuple(getattr(weak.pyramid, name))} != {tuple(getattr(model.pyramid, name))}")
        top = max(self.levels, default=-1)
        if top >= model.pyramid.num_levels:
            problems.append(f"level {top} is not in the model's {model.pyramid.num_levels}-level pyramid")
        elif not problems:
            # Both models denoise the same level inputs, scaled by the guided model's b_l (NoiseSchedule.input_scale).
            for level in range(top + 1):
                ours, theirs = model.schedule.input_scale(level), weak.schedule.input_scale(level)
                if not math.isclose(ours, theirs, rel_tol=1e-6):
                    problems.append(f"level {level} input scale {theirs} != {ours}")
        if problems:
            raise ValueError("the autoguidance model does not match the guided model: " + "; ".join(problems))

    def applies(self, level: int) -> bool:
        return self.scale != 1.0 and level in self.levels

    def rows(self, sigma: torch.Tensor) -> torch.Tensor:
        """Boolean ``[N]``: the rows inside the sigma interval."""
        return (sigma >= self.sigma_min) & (sigma <= self.sigma_max)


@dataclass
class _GuidedContext:
    """The two models' contexts for one tile batch of an autoguided level."""

    main: Any
    weak: Any

    def to(self, device) -> "_GuidedContext":
        """Both contexts on ``device`` (``OverlapSampler(offload_cache=True)`` moves contexts with ``.to``)."""
        from hpdm.samplers.tiled import move

        return _GuidedContext(move(self.main, device), move(self.weak, device))


def null_cond(model, cond: dict) -> dict:
    """The null conditioning matching ``cond`` row for row: the null class, text with every token masked."""
    out = {}
    if "label" in cond:
        out["label"] = torch.full_like(cond["label"], int(model.num_classes))
    if "text" in cond:
        text = cond["text"]
        out["text"] = torch.zeros_like(text)
        # Masking every real token leaves only the model's learned null text token visible.
        out["text_mask"] = torch.zeros(text.shape[:2], dtype=torch.bool, device=text.device)
    return out


def concat_cond(a: dict, b: dict) -> dict:
    """Stack two conditioning dicts along the batch (cond rows first, null rows second)."""
    keys = set(a) | set(b)
    out = {}
    for key in keys:
        if key == "text_mask" and key not in a:
            a = dict(a, text_mask=torch.ones(a["text"].shape[:2], dtype=torch.bool, device=a["text"].device))
        out[key] = torch.cat([a[key], b[key]])
    return out


class HPDMTileModel:
    """``TileModel`` over an ``HPDM``: cached or full-forward denoising, optional guidance.

    Args:
      model: an ``hpdm.core.HPDM`` (in eval mode).
      cached: use context caching (Sec. 4.5); False runs every lower level at every step.
      guidance_scale: classifier-free guidance scale ``g`` (1 = none).
      autoguidance: a weaker model to extrapolate away from (``Autoguidance``); None = none.
    """

    def __init__(self, model, cached: bool = True, guidance_scale: float = 1.0, autoguidance: Optional[Autoguidance] = None):
        self.model = model
        self.cached = cached
        self.guidance_scale = float(guidance_scale)
        self.autoguidance = autoguidance
        self._weak = None
        if autoguidance is not None:
            autoguidance.check_compatible(model)
            self._weak = HPDMTileModel(autoguidance.model, cached=cached, guidance_scale=guidance_scale)

    def _autoguided(self, level: int) -> bool:
        return self.autoguidance is not None and self.autoguidance.applies(level)

    def _guided(self, cond: Optional[dict]) -> bool:
        return cond is not None and len(cond) > 0 and self.guidance_scale != 1.0

    def _sigma_anc(self, level: int, n: int, device) -> torch.Tensor:
        sig = [self.model.schedule.context_sigma(k) for k in range(level)]
        return torch.tensor(sig, dtype=torch.float32, device=device).expand(n, level)

    @torch.no_grad()
    def context(self, level: int, x_anc, coords_anc, coords, cond) -> Any:
        if level == 0:
            return None
        if self._autoguided(level):
            return _GuidedContext(
                self._own_context(level, x_anc, coords_anc, coords, cond),
                self._weak.context(level, x_anc, coords_anc, coords, cond),
            )
        return self._own_context(level, x_anc, coords_anc, coords, cond)

    def _own_context(self, level: int, x_anc, coords_anc, coords, cond) -> Any:
        if self._guided(cond):
            x_anc, coords_anc, coords = (torch.cat([t, t]) for t in (x_anc, coords_anc, coords))
            cond = concat_cond(cond, null_cond(self.model, cond))
        sigma_anc = self._sigma_anc(level, x_anc.shape[0], x_anc.device)
        if not self.cached:
            return (x_anc, sigma_anc, coords_anc)
        return self.model.context_cache(x_anc, sigma_anc, coords_anc, coords=coords, cond=cond)

    @torch.no_grad()
    def denoise(self, x, sigma, coords, level: int, context: Any, cond) -> torch.Tensor:
        if not self._autoguided(level):
            return self._cfg_denoise(x, sigma, coords, level, context, cond)
        main, weak = (context.main, context.weak) if isinstance(context, _GuidedContext) else (context, context)
        x0 = self._cfg_denoise(x, sigma, coords, level, main, cond)
        rows = self.autoguidance.rows(sigma)
        if not bool(rows.any()):
            return x0
        x0_weak = self._weak.denoise(x, sigma, coords, level, weak, cond)
        guided = x0_weak + self.autoguidance.scale * (x0 - x0_weak)
        return torch.where(rows.view(-1, *([1] * (x0.dim() - 1))), guided, x0)

    def _cfg_denoise(self, x, sigma, coords, level: int, context: Any, cond) -> torch.Tensor:
        guided = self._guided(cond)
        if guided:
            x, sigma, coords = torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([coords, coords])
            cond = concat_cond(cond, null_cond(self.model, cond))
        x0 = self._denoise(x, sigma, coords, level, context, cond)
        if not guided:
            return x0
        x0_cond, x0_null = x0.chunk(2)
        return x0_null + self.guidance_scale * (x0_cond - x0_null)

    def _denoise(self, x, sigma, coords, level, context, cond):
        if level == 0 or not self.cached:
            if level == 0:
                xs, ss, cs = x[:, None], sigma[:, None], coords[:, None]
            else:
                x_anc, sigma_anc, coords_anc = context
                xs = torch.cat([x_anc, x[:, None]], dim=1)
                ss = torch.cat([sigma_anc, sigma[:, None]], dim=1)
                cs = torch.cat([coords_anc, coords[:, None]], dim=1)
            return self.model(xs, ss, cs, cond=cond)[:, -1]
        return self.model.denoise_level(x, sigma, coords, level=level, cache=context, cond=cond)


def load_autoguidance_model(
    path: str,
    *,
    scale: float = 2.0,
    levels: Sequence[int] = (0,),
    sigma_min: float = 0.0,
    sigma_max: float = math.inf,
    device=None,
    trust_config: Optional[bool] = None,
) -> Autoguidance:
    """``Autoguidance`` with the weak model of the workdir or export ``path`` (its EMA weights) on
    ``device``; the other arguments are ``Autoguidance``'s. Loading leaves the gin config as it was,
    so it may come before or after the guided model's."""
    from hpdm.core import load_pretrained

    weak, _ = load_pretrained(path, use_ema=True, trust_config=trust_config, device=device)
    return Autoguidance(weak, scale, levels, sigma_min, sigma_max)
