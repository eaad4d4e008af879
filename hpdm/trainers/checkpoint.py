"""Checkpoints of a training run: atomic writes, retention, validated resume, partial (fine-tuning) loads.

The layout, manifest verification, the weights resolver and the architecture check are
``hpdm.core.checkpoints`` (re-exported here for the trainer). A checkpoint is written into
``step_XXXXXXXX.tmp``, every file and the directory are fsynced, and only then is it renamed into
place; so a crash, SIGKILL or power loss leaves either a complete checkpoint or a ``.tmp`` directory
that is ignored and later removed. Loading checks every file against the manifest, so a truncated
file or a flipped bit is an unreadable checkpoint (the next older one is used). Checkpoints written
before the manifest existed load with a warning that they cannot be verified. Retention counts only
verified checkpoints, so a newer corrupt one never causes the last good one to be deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Mapping, Optional

import torch
from absl import logging
from safetensors.torch import load_file, save_file
from torch import nn

from hpdm.core import checkpoints as layout
from hpdm.core.checkpoints import (  # noqa: F401  (some only re-exported: the trainer reads the layout here)
    EMA_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_FILE,
    SEALED_FILES,
    STATE_FILE,
    ArchitectureMismatch,
    CheckpointError,
    check_same_architecture,
    checkpoints_root,
    compare_state,
    forget_verified,
    list_checkpoints,
    mismatch_report,
    remember_verified,
    sha256_file,
    step_dir,
    upgrade_state,
    verify_checkpoint,
)

UNREADABLE_SUFFIX = ".unreadable"


def fsync_dir(path: str) -> None:
    """Make a directory's entries (files created or renamed in it) durable; a no-op where the OS
    cannot fsync directories."""
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


def _seal(path: str) -> dict:
    """fsync ``path`` and return its manifest entry (size and sha256 of the bytes written)."""
    return {"bytes": os.path.getsize(path), "sha256": sha256_file(path, fsync=True)}


def _write_manifest(directory: str, step: int) -> None:
    """Seal the tensor files of ``directory`` and record them in its manifest (fsynced too)."""
    manifest = {"format": MANIFEST_FORMAT, "step": step, "files": {n: _seal(os.path.join(directory, n)) for n in SEALED_FILES}}
    with open(os.path.join(directory, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


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
    """Write one checkpoint atomically and keep only the newest ``keep`` verified ones (call on one rank only).

    ``model_state``/``ema_state`` must be full (unsharded) state dicts with plain module names.
    """
    root = checkpoints_root(workdir)
    if not os.path.isdir(root):
        os.makedirs(root)
        fsync_dir(workdir)  # the new directory's own entry must survive a power loss too
    final = step_dir(workdir, step)
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    save_file(_plain(model_state), os.path.join(tmp, MODEL_FILE), metadata={"step": str(step)})
    save_file(_plain(ema_state), os.path.join(tmp, EMA_FILE), metadata={"step": str(step)})
    with open(os.path.join(tmp, STATE_FILE), "wb") as f:
        torch.save(state, f)
    # Only fsynced files may be renamed into place: without it a power loss can leave a "complete"
    # step directory whose safetensors files are empty.
    _write_manifest(tmp, step)
    fsync_dir(tmp)
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
    fsync_dir(root)
    remember_verified(final)  # hashed as it was sealed
    _prune(workdir, keep)
    return final


def _counts_as_kept(path: str) -> bool:
    """Whether ``path`` may stand in for the checkpoints retention deletes: only a verified one."""
    try:
        return verify_checkpoint(path, cached=True)
    except CheckpointError as e:
        logging.warning("Not counting a damaged checkpoint towards keep_checkpoints: %s", e)
        return False


def _prune(workdir: str, keep: int) -> None:
    """Remove leftovers of interrupted saves, and every checkpoint older than the ``keep``-th
    newest verified one (a damaged or unverifiable one newer than that is left alone)."""
    root = checkpoints_root(workdir)
    for name in os.listdir(root):
        if name.endswith(".tmp") or name.endswith(".old"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if not keep or keep <= 0:
        return
    verified = 0
    for _, path in list_checkpoints(workdir):
        if verified >= keep:
            shutil.rmtree(path, ignore_errors=True)
            forget_verified(path)
        elif _counts_as_kept(path):
            verified += 1


def load_checkpoint(path: str) -> tuple[dict, dict, dict]:
    """Read ``(model_state, ema_state, state)`` from a checkpoint directory; CheckpointError if unreadable
    or if a file differs from its manifest."""
    if not verify_checkpoint(path):
        logging.warning(
            "Checkpoint %s has no %s (written before checksums existed): loading it unverified", path, MANIFEST_FILE
        )
    try:
        model_state = load_file(os.path.join(path, MODEL_FILE))
        ema_state = load_file(os.path.join(path, EMA_FILE))
        state = torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure means "not a valid checkpoint"
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} has no 'step' entry")
    return model_state, ema_state, state


def load_latest(workdir: str, errors: Optional[list] = None) -> tuple[str, tuple[dict, dict, dict]] | None:
    """Newest readable checkpoint of ``workdir`` and its contents; older ones are tried with a warning.

    ``errors``, if given, receives the message of every checkpoint that could not be read.
    """
    for step, path in list_checkpoints(workdir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logging.warning("Skipping unreadable checkpoint (falling back to an older one): %s", e)
            if errors is not None:
                errors.append(str(e))
    return None


def set_aside(workdir: str) -> list[str]:
    """Rename every checkpoint of ``workdir`` to ``step_XXXXXXXX.unreadable`` (kept for inspection,
    never loaded or pruned); returns the new paths. For starting over when none is readable."""
    moved = []
    for _, path in list_checkpoints(workdir):
        target = path + UNREADABLE_SUFFIX
        if os.path.exists(target):  # set aside by an earlier start-over: the newer copy replaces it
            shutil.rmtree(target)
        os.rename(path, target)
        moved.append(target)
    fsync_dir(checkpoints_root(workdir))
    return moved


def latest_valid_checkpoint(workdir: str) -> str | None:
    """Path of the newest checkpoint in ``workdir`` that reads back completely, or None."""
    found = load_latest(workdir)
    return found[0] if found else None


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
        raise ArchitectureMismatch(mismatch_report(what, [], unexpected, mismatched))
    if not matching and not partial:
        raise CheckpointError(f"{what} shares no tensor with the model")
    model.load_state_dict({k: state[k] for k in matching}, strict=False)
    for name, k in partial.items():
        target = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        target[:k].copy_(state[name])
    logging.info("Loaded %d tensors from %s: %s", len(loaded), what, ", ".join(loaded))
    logging.info("Kept the initialisation of %d tensors: %s", len(initialised), ", ".join(initialised) or "(none)")
    return loaded, initialised
