"""Checkpoints: layout, atomic writes, retention, validated resume, partial (fine-tuning) loads.

Layout (a contract the sampler and ``hpdm.core`` loaders rely on)::

    WORKDIR/config.gin                              operative gin config of the run
    WORKDIR/checkpoints/step_{step:08d}/
        model.safetensors                           full state dict, plain module names
        ema.safetensors                             EMA weights, same names
        state.pt                                    optimiser, LR schedule, data-loader and RNG
                                                    states, step, skip counters (tensors and plain
                                                    Python containers only: torch.load(weights_only=True))
        manifest.json                               size and sha256 of the three files above

A checkpoint is written into ``step_XXXXXXXX.tmp``, every file and the directory are fsynced, and
only then is it renamed into place; so a crash, SIGKILL or power loss leaves either a complete
checkpoint or a ``.tmp`` directory that is ignored and later removed. Loading checks every file
against the manifest, so a truncated file or a flipped bit is an unreadable checkpoint (the next
older one is used), never weights that load without complaint. Checkpoints written before the
manifest existed load with a warning that they cannot be verified. Retention counts only verified
checkpoints, so a newer corrupt one never causes the last good one to be deleted.
Weights never go through pickle (DESIGN.md: never unpickle arbitrary objects from a checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Mapping, Optional

import torch
from absl import logging
from safetensors.torch import load_file, save_file
from torch import nn

from hpdm import gin_utils

CHECKPOINT_SUBDIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
SEALED_FILES = (MODEL_FILE, EMA_FILE, STATE_FILE)
UNREADABLE_SUFFIX = ".unreadable"
_MANIFEST_FORMAT = 1
_HASH_CHUNK = 1 << 20
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


def _sha256(path: str, fsync: bool = False) -> str:
    """Hex sha256 of a file, read in chunks (checkpoint files can be tens of gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _seal(path: str) -> dict:
    """fsync ``path`` and return its manifest entry (size and sha256 of the bytes written)."""
    return {"bytes": os.path.getsize(path), "sha256": _sha256(path, fsync=True)}


def _write_manifest(directory: str, step: int) -> None:
    """Seal the tensor files of ``directory`` and record them in its manifest (fsynced too)."""
    manifest = {"format": _MANIFEST_FORMAT, "step": step, "files": {n: _seal(os.path.join(directory, n)) for n in SEALED_FILES}}
    with open(os.path.join(directory, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


# Checkpoints this process has hashed (or written), with the stat of their files then: pruning
# asks at every save whether the newest checkpoints are good, and re-hashing tens of gigabytes each
# time would cost more than the save. A file changed since (size, mtime or inode) is hashed again.
_VERIFIED: dict[str, tuple] = {}


def _signature(path: str) -> Optional[tuple]:
    try:
        stats = [os.stat(os.path.join(path, n)) for n in (*SEALED_FILES, MANIFEST_FILE)]
    except OSError:
        return None
    return tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in stats)


def _remember_verified(path: str) -> None:
    _VERIFIED[os.path.abspath(path)] = _signature(path)


def _remembered(path: str) -> bool:
    """Whether this process verified ``path`` and its files are unchanged since."""
    signature = _signature(path)
    return signature is not None and _VERIFIED.get(os.path.abspath(path)) == signature


def verify_checkpoint(path: str, cached: bool = False) -> bool:
    """Check every tensor file of ``path`` against its manifest.

    Returns True when all match, False when the checkpoint has no manifest (written before
    checksums existed: it cannot be verified); raises CheckpointError naming the first file that is
    missing or differs from what was written. ``cached``: trust this process's earlier verdict on
    files whose stat has not changed since (pruning); a load always hashes.
    """
    if cached and _remembered(path):
        return True
    manifest_path = os.path.join(path, MANIFEST_FILE)
    if not os.path.exists(manifest_path):
        return False
    try:
        with open(manifest_path, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} is unreadable: {type(e).__name__}: {e}") from e
    for name in SEALED_FILES:
        if name not in files:
            raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} does not list {name}")
        _check_file(path, name, files[name])
    _remember_verified(path)
    return True


def _check_file(path: str, name: str, entry: dict) -> None:
    """CheckpointError unless file ``name`` of checkpoint ``path`` has the size and sha256 of ``entry``."""
    file_path = os.path.join(path, name)
    if not os.path.isfile(file_path):
        raise CheckpointError(f"checkpoint {path}: {name} is missing")
    size = os.path.getsize(file_path)
    if size != entry["bytes"]:
        raise CheckpointError(f"checkpoint {path}: {name} has {size} bytes, {entry['bytes']} were written (truncated?)")
    if _sha256(file_path) != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: {name} does not match its sha256 in {MANIFEST_FILE} (its bytes changed after it "
            "was written: a flipped bit or a damaged disk)"
        )


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
    _remember_verified(final)  # hashed as it was sealed
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
            _VERIFIED.pop(os.path.abspath(path), None)
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
