"""The HPDM model as a tile model, cached or not, with classifier-free guidance (paper Sec. 4.5, 4.6).

``HPDMTileModel`` adapts ``hpdm.core.HPDM`` to the ``TileModel`` protocol of ``tiled.py``:

* cached (default): ``context`` = ``model.context_cache(...)`` (the ancestors' fusion terms, built once
  per tile), ``denoise`` = ``model.denoise_level(...)``, which runs only the blocks level ``l`` runs;
* uncached: ``context`` keeps the raw ancestor windows and ``denoise`` runs the full forward over all
  levels ``0..l`` at every step (the reference for "cached == uncached").

Ancestors are fed at ``model.schedule.context_sigma(k)`` (never at 0: DESIGN.md "Inference").

Classifier-free guidance (Ho & Salimans 2022) runs the conditional and the null rows in one batch:
``x0 = x0_null + g (x0_cond - x0_null)``, so ``g = 1`` is plain conditional sampling (and skips the
null rows) and ``g = 0`` is unconditional. The null rows get their own cached context, because the
conditioning enters the ancestors' blocks too.
"""

from __future__ import annotations

from typing import Any, Optional

import torch


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
    """

    def __init__(self, model, cached: bool = True, guidance_scale: float = 1.0):
        self.model = model
        self.cached = cached
        self.guidance_scale = float(guidance_scale)

    def _guided(self, cond: Optional[dict]) -> bool:
        return cond is not None and len(cond) > 0 and self.guidance_scale != 1.0

    def _sigma_anc(self, level: int, n: int, device) -> torch.Tensor:
        sig = [self.model.schedule.context_sigma(k) for k in range(level)]
        return torch.tensor(sig, dtype=torch.float32, device=device).expand(n, level)

    @torch.no_grad()
    def context(self, level: int, x_anc, coords_anc, coords, cond) -> Any:
        if level == 0:
            return None
        if self._guided(cond):
            x_anc, coords_anc, coords = (torch.cat([t, t]) for t in (x_anc, coords_anc, coords))
            cond = concat_cond(cond, null_cond(self.model, cond))
        sigma_anc = self._sigma_anc(level, x_anc.shape[0], x_anc.device)
        if not self.cached:
            return (x_anc, coords_anc, sigma_anc)
        return self.model.context_cache(x_anc, coords_anc, sigma_anc, coords, cond)

    @torch.no_grad()
    def denoise(self, x, sigma, coords, level: int, context: Any, cond) -> torch.Tensor:
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
                xs, cs, ss = x[:, None], coords[:, None], sigma[:, None]
            else:
                x_anc, coords_anc, sigma_anc = context
                xs = torch.cat([x_anc, x[:, None]], dim=1)
                cs = torch.cat([coords_anc, coords[:, None]], dim=1)
                ss = torch.cat([sigma_anc, sigma[:, None]], dim=1)
            return self.model(xs, cs, ss, cond)[:, -1]
        return self.model.denoise_level(x, sigma, coords, level, context, cond)
