"""Learning-rate schedule: linear warm-up then cosine decay (paper Sec. 4.6; Table 8).

HPDM follows RIN: warm up linearly to the target LR (0.005) over 10k steps (5k for the text-to-video
models), then decay it with a cosine to ``final_lr_fraction`` of the target at the last training
step. Built from torch's own schedulers (``LinearLR`` -> ``CosineAnnealingLR`` via ``SequentialLR``)
so the state dict is torch's and loads with ``torch.load(weights_only=True)``. Call
``scheduler.step()`` once per optimiser step.
"""

from __future__ import annotations

import warnings

import gin
import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


@gin.configurable
def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int = gin.REQUIRED,
    warmup_steps: int = 10_000,
    final_lr_fraction: float = 0.0,
    cosine: bool = True,
) -> LRScheduler:
    """Linear warm-up over ``warmup_steps`` then cosine decay until ``total_steps``.

    The warm-up starts at ``lr / warmup_steps`` (step 0 already moves the weights) and reaches the
    optimiser's LR at step ``warmup_steps``. ``cosine=False`` keeps the LR constant after warm-up.
    A warm-up longer than the run is clipped to the run, so short test runs stay valid.
    """
    if total_steps <= 0:
        raise ValueError(f"warmup_cosine: total_steps must be > 0, got {total_steps}")
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps)))
    decay_steps = max(1, int(total_steps) - warmup_steps)
    if cosine:
        base_lr = optimizer.param_groups[0]["lr"]
        after = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=base_lr * final_lr_fraction)
    else:
        after = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup_steps == 0:
        return after
    warm = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps)
    with warnings.catch_warnings():
        # SequentialLR re-steps the child schedulers on construction; torch warns about the
        # "epoch" argument it uses internally, which is not ours to fix.
        warnings.simplefilter("ignore", UserWarning)
        return SequentialLR(optimizer, schedulers=[warm, after], milestones=[warmup_steps])
