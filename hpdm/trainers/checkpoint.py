"""Checkpoints: layout, atomic writes, retention, validated resume, partial (fine-tuning) loads.

Layout (a contract the sampler and ``hpdm.core`` loaders rely on)::

    WORKDIR/config.gin                              operative gin config of the run
    WORKDIR/checkpoints/step_{step:08d}/
        model.safetensors                           full state dict, plain module names
        ema.safetensors                             EMA weights, same names
        state.pt                                    optimiser, LR schedule, data-loader and RNG
                                                    states, step, skip counters (tensors and plain
                                                    Python containers only: torch.load(weights_only=True))

A checkpoint is written into ``step_XXXXXXXX.tmp`` and renamed into place, so a crash (or SIGKILL)
leaves either a complete checkpoint or a ``.tmp`` directory that is ignored and later removed.
Weights never go through pickle (DESIGN.md: never unpickle arbitrary objects from a checkpoint).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Mapping

import torch
from absl import logging
from safetensors.torch import load_file, save_file
from torch import nn

from hpdm import gin_utils

CHECKPOINT_SUBDIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
_STEP_RE = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not fit the model."""


def checkpoints_root(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINT_SUBDIR)


def step_dir(workdir: str, step: int) -> str:
    return os.path.join(checkpoints_root(workdir), f"step_{step:08d}")


def list_checkpoints(workdir: str) -> list[tuple[int, str]]:
    """Completed checkpoint directories, newest first (``.tmp`` leftovers are not listed)."""
    root = checkpoints_root(workdir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP_RE.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found, reverse=True)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights, views): store private copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    workdir: str,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor],
    state: dict,
    keep: int = 3,
) -> str:
    """Write one checkpoint atomically and keep only the newest ``keep`` (call on one rank only).

    ``model_state``/``ema_state`` must be full (unsharded) state dicts with plain module names.
    """
    root = checkpoints_root(workdir)
    os.makedirs(root, exist_ok=True)
    final = step_dir(workdir, step)
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    save_file(_plain(model_state), os.path.join(tmp, MODEL_FILE), metadata={"step": str(step)})
    save_file(_plain(ema_state), os.path.join(tmp, EMA_FILE), metadata={"step": str(step)})
    with open(os.path.join(tmp, STATE_FILE), "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if os.path.exists(final):
        # Re-saving a step (e.g. the final step after a resume at that step): swap atomically-ish,
        # the old copy stays complete until the new one is in place.
        old = final + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    _prune(workdir, keep)
    return final


def _prune(workdir: str, keep: int) -> None:
    root = checkpoints_root(workdir)
    for name in os.listdir(root):
        if name.endswith(".tmp") or name.endswith(".old"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if keep and keep > 0:
        for _, path in list_checkpoints(workdir)[keep:]:
            shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str) -> tuple[dict, dict, dict]:
    """Read ``(model_state, ema_state, state)`` from a checkpoint directory; CheckpointError if unreadable."""
    try:
        model_state = load_file(os.path.join(path, MODEL_FILE))
        ema_state = load_file(os.path.join(path, EMA_FILE))
        state = torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure means "not a valid checkpoint"
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} has no 'step' entry")
    return model_state, ema_state, state


def load_latest(workdir: str) -> tuple[str, tuple[dict, dict, dict]] | None:
    """Newest readable checkpoint of ``workdir`` and its contents; older ones are tried with a warning."""
    for step, path in list_checkpoints(workdir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logging.warning("Skipping unreadable checkpoint (falling back to an older one): %s", e)
    return None


def latest_valid_checkpoint(workdir: str) -> str | None:
    """Path of the newest checkpoint in ``workdir`` that reads back completely, or None."""
    found = load_latest(workdir)
    return found[0] if found else None


def resolve_weights(path: str, ema: bool = True) -> str:
    """A ``.safetensors`` file, a checkpoint directory, a workdir, or an export directory (``config.gin``
    and ``model.safetensors``, which holds EMA weights: ``hpdm.core.export_model``) -> the weights file."""
    if os.path.isfile(path):
        return path
    name = EMA_FILE if ema else MODEL_FILE
    if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    export = os.path.join(path, MODEL_FILE)
    if ema and os.path.isfile(export) and os.path.isfile(os.path.join(path, gin_utils.OPERATIVE_CONFIG)):
        return export
    latest = latest_valid_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"no checkpoint found at {path}")
    return os.path.join(latest, name)


def upgrade_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> dict:
    """``state`` as ``model`` names it today: the model's own ``upgrade_state_dict`` (HPDM drops the
    tensors of fusers that older versions built for blocks that fuse nothing), else unchanged."""
    upgrade = getattr(model, "upgrade_state_dict", None)
    return upgrade(state, what) if upgrade is not None else dict(state)


def load_model_and_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, model_state: Mapping, optim_state: Mapping
) -> None:
    """Load full (unsharded) model and optimizer state dicts, also into an FSDP-sharded model.

    A parameter without optimizer state in the checkpoint (frozen, or one that never received a
    gradient) is not an error: it is left without state, exactly as the optimizer of the run that
    saved it had it, so resuming reproduces the uninterrupted run.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    saved = set(optim_state.get("state", {}))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=dict(model_state),
        optim_state_dict=optim_state,
        # strict=False only for the optimizer's missing entries: the model's tensors were checked
        # against its architecture by the caller.
        options=StateDictOptions(full_state_dict=True, strict=False),
    )
    # torch initialises every parameter's state with a zero-gradient step before loading; a
    # parameter the checkpoint has no state for must not keep that (its step count would differ).
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if names.get(id(param)) not in saved and param in optimizer.state:
                del optimizer.state[param]


def compare_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list, list, list, list]:
    """Compare a state dict with ``model.state_dict()``.

    Returns (matching, missing_in_state, unexpected_in_state, shape_mismatched) name lists, the
    last as ``"name: checkpoint (shape) vs model (shape)"`` strings.
    """
    own = model.state_dict()
    matching, missing, mismatched = [], [], []
    for name, t in own.items():
        if name not in state:
            missing.append(name)
        elif tuple(state[name].shape) != tuple(t.shape):
            mismatched.append(f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(t.shape)}")
        else:
            matching.append(name)
    unexpected = [n for n in state if n not in own]
    return matching, missing, unexpected, mismatched


def check_same_architecture(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise CheckpointError listing every tensor that differs (resume requires an exact fit)."""
    _, missing, unexpected, mismatched = compare_state(model, state)
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(what, missing, unexpected, mismatched))


def _mismatch_message(what, missing, unexpected, mismatched) -> str:
    lines = [f"{what} does not match the model's architecture:"]
    if mismatched:
        lines.append(f"  shape mismatch ({len(mismatched)}): " + "; ".join(mismatched))
    if missing:
        lines.append(f"  missing from the {what} ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): " + ", ".join(unexpected))
    return "\n".join(lines)


LEVEL_INDEXED = ("latents",)


@torch.no_grad()
def load_matching(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    what: str = "checkpoint",
    level_indexed: tuple[str, ...] = LEVEL_INDEXED,
) -> tuple[list, list]:
    """Fine-tuning load (paper Sec. 5.2): copy every tensor the checkpoint shares with ``model``.

    A model with more pyramid levels than the checkpoint keeps its own initialisation for what the
    checkpoint lacks. Tensors indexed by level along dim 0 (``level_indexed``: HPDM's per-level
    ``latents [L+1, N, D]``) load the checkpoint's levels into the first rows, since level ``l`` is
    the same resolution in both pyramids when the patch size is the same. Any other tensor present
    in both with a different shape, or a checkpoint tensor the model does not have, means a
    different architecture: CheckpointError listing them. Returns ``(loaded, initialised)`` name
    lists (partial loads appear as ``name[0:k]`` and ``name[k:n]``), also logged.
    """
    state = upgrade_state(model, state, what)
    matching, missing, unexpected, mismatched = compare_state(model, state)
    own = model.state_dict()
    partial, loaded, initialised = {}, list(matching), list(missing)
    for name in level_indexed:
        if name in own and name in state:
            src, dst = state[name], own[name]
            if (
                tuple(src.shape) != tuple(dst.shape)
                and src.dim() == dst.dim()
                and tuple(src.shape[1:]) == tuple(dst.shape[1:])
                and src.shape[0] < dst.shape[0]
            ):
                k, n = src.shape[0], dst.shape[0]
                partial[name] = k
                mismatched = [m for m in mismatched if not m.startswith(f"{name}: ")]
                loaded.append(f"{name}[0:{k}]")
                initialised.append(f"{name}[{k}:{n}]")
    if unexpected or mismatched:
        raise CheckpointError(_mismatch_message(what, [], unexpected, mismatched))
    if not matching and not partial:
        raise CheckpointError(f"{what} shares no tensor with the model")
    model.load_state_dict({k: state[k] for k in matching}, strict=False)
    for name, k in partial.items():
        target = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        target[:k].copy_(state[name])
    logging.info("Loaded %d tensors from %s: %s", len(loaded), what, ", ".join(loaded))
    logging.info("Kept the initialisation of %d tensors: %s", len(initialised), ", ".join(initialised) or "(none)")
    return loaded, initialised
