"""Preview videos during training: which ones a rank samples, and sampling them.

Every rank samples its share of a preview (``preview_share``) so that no rank waits in a collective
while another samples alone, and video ``i`` has its own seed (``rng.preview_seed``), so a preview
does not depend on the number of ranks.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from hpdm.trainers import rng


def preview_share(num_samples: int, rank: int, world_size: int) -> list[int]:
    """Indices of the preview videos rank ``rank`` samples: every ``world_size``-th one from ``rank``."""
    return list(range(rank, num_samples, world_size))


def sample_previews(
    model: nn.Module,
    sample_fn: Callable,
    seed: int,
    indices: Sequence[int],
    steps: Optional[Sequence[int]] = None,
    overlap: Optional[str] = None,
) -> dict:
    """``{index: uint8 [T, H, W, C]}`` preview videos of ``model``, one sampler call each.

    Video ``i`` is of class ``i`` modulo the model's classes (unconditional without classes).
    ``steps`` / ``overlap`` replace the run's ``SamplingSteps`` / ``OverlapSampler.overlap`` when
    given.
    """
    options = {}
    if steps is not None:
        from hpdm.samplers import SamplingSteps

        options["level_schedule"] = SamplingSteps(num_steps=steps)
    if overlap is not None:
        options["overlap"] = overlap
    out = {}
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    for i in indices:
        cond = {"label": torch.tensor([i % num_classes])} if num_classes > 0 else None
        video = sample_fn(model, 1, seed=rng.preview_seed(seed, i), cond=cond, **options)
        video = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        out[i] = video[0]
    return out
