"""Randomness of a training run: seeding, the keys of a step's per-sample draws, and the global RNG
state a checkpoint carries (exact resume).

What shapes a step (noise levels, noise, conditioning dropout) is drawn per sample from a generator
keyed by ``(seed, step, position of the sample in the global batch)``, hashed by the one seed hash
of the library (``hpdm.data.seeding.derive_seed``); a preview video is keyed by ``(seed, index)``.
The global generators (torch, NumPy, Python, CUDA) are seeded once for the initial weights and saved
per rank with every checkpoint, so whatever else draws from them resumes where it was.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from hpdm.data.seeding import derive_seed, generator

# Salts keep the step draws and the preview seeds apart from each other and from the data's keys.
SALT_STEP = 0x5EED
SALT_PREVIEW = 0x9E7


def step_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The generator of the sample at ``position`` of the global batch of optimiser step ``step``."""
    return generator(seed, SALT_STEP, step, position)


def preview_seed(seed: int, index: int) -> int:
    """The sampler seed of preview video ``index``: the same whatever the number of ranks."""
    return derive_seed(seed, SALT_PREVIEW, index)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the model's initial weights come from these)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's global RNG states, as tensors and plain containers (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        # Python's state is (version, tuple of ints, gauss): plain containers are weights_only-safe.
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` saved (CUDA's only where CUDA is available now)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
