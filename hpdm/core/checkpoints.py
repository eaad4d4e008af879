"""The checkpoint layout of a training workdir, and everything that reads it back.

Layout (the one contract the trainer, the samplers and ``load_pretrained`` share)::

    WORKDIR/config.gin                              the run's full gin config (gin.config_str())
    WORKDIR/checkpoints/step_{step:08d}/
        model.safetensors                           full state dict, plain module names
        ema.safetensors                             EMA weights, same names
        state.pt                                    optimiser, LR schedule, data-loader and RNG
                                                    states, step, skip counters (tensors and plain
                                                    Python containers only: torch.load(weights_only=True))
        manifest.json                               size and sha256 of the three files above

    EXPORT/config.gin + EXPORT/model.safetensors    an export (``export_model``): the EMA weights
                                                    and the config, nothing of the training run

Step directories are named with at least eight digits (a run past 10^8 steps gets more). A
directory ending in ``.tmp`` is an unfinished save and is never listed. Reading checks files against
the manifest, so a truncated file or a flipped bit makes a checkpoint unreadable (the next older one
is used) rather than weights that load without complaint; checkpoints written before the manifest
existed cannot be verified and are read with a warning. Writing, retention and resuming belong to
the trainer (``hpdm.trainers.checkpoint``). Weights never go through pickle (docs/design.md
"Checkpoints": reading a checkpoint never unpickles arbitrary objects).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Mapping, Optional

import torch
from absl import logging
from safetensors.torch import load_file
from torch import nn

from hpdm import gin_utils

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
EXPORT_WEIGHTS = MODEL_FILE  # an export's one set of weights (the EMA weights of the run)
SEALED_FILES = (MODEL_FILE, EMA_FILE, STATE_FILE)
MANIFEST_FORMAT = 1
STEP_PATTERN = re.compile(r"^step_(\d{8,})$")
_HASH_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not fit the model."""


class ArchitectureMismatch(CheckpointError, ValueError):
    """A state dict's tensors are not those of the model (names or shapes); the message lists them.

    Also a ``ValueError``: loaders of a trained model have always raised one for a model/checkpoint
    mismatch, and callers that explain such errors catch it.
    """


class NoCheckpointError(CheckpointError, FileNotFoundError):
    """A path holds no readable checkpoint or export."""


# --------------------------------------------------------------------------- layout


def checkpoints_root(workdir: str) -> str:
    """``WORKDIR/checkpoints``."""
    return os.path.join(workdir, CHECKPOINT_DIR)


def step_dir(workdir: str, step: int) -> str:
    """The directory of the checkpoint of ``step`` in ``workdir``."""
    return os.path.join(checkpoints_root(workdir), f"step_{step:08d}")


def list_checkpoints(workdir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every completed checkpoint directory, newest first (``.tmp`` leftovers and
    checkpoints set aside as unreadable are not listed)."""
    root = checkpoints_root(workdir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = STEP_PATTERN.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found, reverse=True)


def weights_name(use_ema: bool) -> str:
    """The file of a checkpoint directory holding the EMA (``use_ema``) or the trained weights."""
    return EMA_FILE if use_ema else MODEL_FILE


def is_export(path: str) -> bool:
    """Whether ``path`` is an export directory: ``config.gin`` and ``model.safetensors`` and no
    checkpoints of a training run."""
    return (
        os.path.isfile(os.path.join(path, EXPORT_WEIGHTS))
        and os.path.isfile(os.path.join(path, gin_utils.OPERATIVE_CONFIG))
        and not os.path.isdir(checkpoints_root(path))
    )


# --------------------------------------------------------------------------- manifest verification


def sha256_file(path: str, fsync: bool = False) -> str:
    """Hex sha256 of a file, read in chunks (checkpoint files can be tens of gigabytes); ``fsync``
    also flushes it to the disk (sealing a file just written)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


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


def remember_verified(path: str) -> None:
    """Record that every file of checkpoint ``path`` matches its manifest as the files stand now."""
    _VERIFIED[os.path.abspath(path)] = _signature(path)


def forget_verified(path: str) -> None:
    """Drop the record of ``remember_verified`` (the checkpoint was deleted)."""
    _VERIFIED.pop(os.path.abspath(path), None)


def _remembered(path: str) -> bool:
    """Whether this process verified ``path`` and its files are unchanged since."""
    signature = _signature(path)
    return signature is not None and _VERIFIED.get(os.path.abspath(path)) == signature


def verify_checkpoint(path: str, cached: bool = False, files: tuple[str, ...] = SEALED_FILES) -> bool:
    """Check the tensor files ``files`` (default: all) of checkpoint ``path`` against its manifest.

    Returns True when they match, False when the checkpoint has no manifest (written before
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
            entries = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} is unreadable: {type(e).__name__}: {e}") from e
    for name in files:
        if name not in entries:
            raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} does not list {name}")
        _check_file(path, name, entries[name])
    if set(files) >= set(SEALED_FILES):
        remember_verified(path)
    return True


def _check_file(path: str, name: str, entry: dict) -> None:
    """CheckpointError unless file ``name`` of checkpoint ``path`` has the size and sha256 of ``entry``."""
    file_path = os.path.join(path, name)
    if not os.path.isfile(file_path):
        raise CheckpointError(f"checkpoint {path}: {name} is missing")
    size = os.path.getsize(file_path)
    if size != entry["bytes"]:
        raise CheckpointError(f"checkpoint {path}: {name} has {size} bytes, {entry['bytes']} were written (truncated?)")
    if sha256_file(file_path) != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: {name} does not match its sha256 in {MANIFEST_FILE} (its bytes changed after it "
            "was written: a flipped bit or a damaged disk)"
        )


# --------------------------------------------------------------------------- finding weights


def _readable_weights(checkpoint: str, name: str) -> str:
    """``checkpoint/name`` once it is known to be intact: checked against the manifest, or, for a
    checkpoint without one, read in full; CheckpointError otherwise."""
    candidate = os.path.join(checkpoint, name)
    if verify_checkpoint(checkpoint, files=(name,)):
        return candidate
    logging.warning("Checkpoint %s has no %s (written before checksums existed): reading it unverified", checkpoint, MANIFEST_FILE)
    try:
        load_file(candidate)
    except Exception as e:  # noqa: BLE001 - any read failure means "not a valid checkpoint"
        raise CheckpointError(f"checkpoint {candidate} is unreadable: {type(e).__name__}: {e}") from e
    return candidate


def resolve_weights(path: str, use_ema: bool = True) -> str:
    """The weights file that ``path`` stands for.

    ``path`` is a ``.safetensors`` file (itself); a checkpoint directory (its ``ema.safetensors``, or
    ``model.safetensors`` without ``use_ema``); an export directory (``config.gin`` and
    ``model.safetensors``, which holds the EMA weights: its one file either way); or a training
    workdir (that file of its newest intact checkpoint, older ones tried with a warning when a newer
    one is damaged). NoCheckpointError when there is none.
    """
    if os.path.isfile(path):
        return path
    name = weights_name(use_ema)
    if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    if is_export(path):
        return os.path.join(path, EXPORT_WEIGHTS)
    for _, checkpoint in list_checkpoints(path):
        try:
            return _readable_weights(checkpoint, name)
        except CheckpointError as e:
            logging.warning("Skipping unreadable checkpoint (falling back to an older one): %s", e)
    raise NoCheckpointError(
        f"no checkpoint found at {path}: no readable {name} under {checkpoints_root(path)}, and it is no export "
        f"({gin_utils.OPERATIVE_CONFIG} + {EXPORT_WEIGHTS})"
    )


# --------------------------------------------------------------------------- strict loads


def upgrade_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> dict:
    """``state`` as ``model`` names it today: the model's own ``upgrade_state_dict`` (HPDM drops the
    tensors of fusers that older versions built for blocks that fuse nothing), else unchanged."""
    upgrade = getattr(model, "upgrade_state_dict", None)
    return upgrade(state, what) if upgrade is not None else dict(state)


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


def mismatch_report(what: str, missing: list, unexpected: list, mismatched: list) -> str:
    """The one message of every load that needs the model's exact tensors: each mis-shaped, missing
    and unexpected tensor of ``what`` (lists as ``compare_state`` returns them)."""
    lines = [f"{what} does not match the model's architecture:"]
    if mismatched:
        lines.append(f"  shape mismatch ({len(mismatched)}): " + "; ".join(mismatched))
    if missing:
        lines.append(f"  missing from the {what} ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): " + ", ".join(unexpected))
    return "\n".join(lines)


def check_same_architecture(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise ArchitectureMismatch listing every tensor that differs (resume and inference need an exact fit)."""
    _, missing, unexpected, mismatched = compare_state(model, state)
    if missing or unexpected or mismatched:
        raise ArchitectureMismatch(mismatch_report(what, missing, unexpected, mismatched))


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` (upgraded, ``upgrade_state``) into ``model``, every tensor and nothing else;
    ArchitectureMismatch (``mismatch_report``) names what does not fit."""
    state = upgrade_state(model, state, source)
    check_same_architecture(model, state, what=source)
    model.load_state_dict(state)
