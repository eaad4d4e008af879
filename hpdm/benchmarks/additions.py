"""What each addition that is not in the paper costs a training step (issue 24, item 2).

The quickstart model (``gin/models/quickstart.gin``) carries three: a ``LocalTokenMixing`` after
the tokenizer (``token_mixing``), the same after every block's write (``block_mixing``) and one group
of RIN latents per token frame (``frame_latents``). Each is measured as the quickstart model's
training step (forward, backward, LAMB) over the same model with that one addition switched off,
all four models in interleaved rounds, so a ratio of 1.3 means the addition makes a step 30% longer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from hpdm import gin_utils
from hpdm.benchmarks.interleave import MIN_ROUNDS, interleave, ratio
from hpdm.benchmarks.measure import TrainStep, release, wall_clock
from hpdm.core import HPDM

QUICKSTART_MODEL = "models/quickstart.gin"

# The HPDM argument of each addition and the value that switches it off (the paper's model).
ADDITIONS = {"token_mixing": None, "block_mixing": None, "frame_latents": False}

WITH_ALL = "quickstart"


def quickstart_model(target_res: Sequence[int], patch_res: Sequence[int], bindings: Sequence[str] = (),
                     **overrides) -> HPDM:
    """The quickstart model at ``target_res`` / ``patch_res`` (plus gin ``bindings``), built in a gin
    config of its own so the caller's is untouched; ``overrides`` are HPDM arguments."""
    geometry = [f"TARGET_RES = {tuple(target_res)}", f"PATCH_RES = {tuple(patch_res)}"]
    with gin_utils.isolated_config():
        gin_utils.parse([QUICKSTART_MODEL], [*geometry, *bindings])
        return HPDM(**overrides)


def addition_models(target_res, patch_res, bindings: Sequence[str] = (), device=None) -> dict:
    """``quickstart`` (every addition on) and ``without_<name>`` for each addition, on ``device``."""
    models = {WITH_ALL: quickstart_model(target_res, patch_res, bindings)}
    for name, off in ADDITIONS.items():
        if not _enabled(models[WITH_ALL], name):
            raise ValueError(f"{QUICKSTART_MODEL} no longer enables {name}: there is nothing to compare")
        models[f"without_{name}"] = quickstart_model(target_res, patch_res, bindings, **{name: off})
    return {name: model.to(device) for name, model in models.items()}


def _enabled(model: HPDM, name: str) -> bool:
    """Whether ``model`` has addition ``name`` (the module or buffer that exists only with it)."""
    parts = {"token_mixing": model.tokenizer.mixing, "block_mixing": model.block_mixers,
             "frame_latents": model.frame_groups}
    return parts[name] is not None


def measure_additions(models: dict, batch: int, device: torch.device, rounds: int, bf16: bool = False,
                      best_of: int = 1) -> tuple:
    """Interleaved training steps of ``addition_models``; returns the JSON record and the ``Spread``
    of each addition's step ratio (with / without)."""
    steps = {name: TrainStep(model, batch, device, bf16) for name, model in models.items()}
    try:
        times = interleave(steps, wall_clock(device), rounds=max(MIN_ROUNDS, rounds), best_of=best_of)
    finally:
        for step in steps.values():
            step.close()
        for model in models.values():
            model.zero_grad(set_to_none=True)
        release(device)
    spreads = {name: ratio(times[WITH_ALL], times[f"without_{name}"]) for name in ADDITIONS}
    record = {
        "model": QUICKSTART_MODEL,
        "batch": batch,
        "best_of": best_of,
        "parameters": {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()},
        "step_times": times,
        "step_ratios": {name: list(s.values) for name, s in spreads.items()},
    }
    return record, spreads
