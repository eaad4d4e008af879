"""Loading a trained HPDM for inference, from a training workdir or a self-contained export.

A training workdir holds ``config.gin`` (the operative config) and ``checkpoints/step_XXXXXXXX/``
directories with ``model.safetensors`` and ``ema.safetensors``. An export directory holds
``config.gin`` and ``model.safetensors`` (the EMA weights): everything needed to rebuild the model
without the training run.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Optional, Sequence

import gin
import torch
from absl import logging
from safetensors.torch import load_file, save_file

from hpdm import gin_utils
from hpdm.core.model import HPDM

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})$")
EXPORT_WEIGHTS = "model.safetensors"


def checkpoint_dirs(workdir: str) -> list[str]:
    """Finished checkpoint directories of a workdir, newest first (``.tmp`` ones are unfinished)."""
    root = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if CHECKPOINT_PATTERN.match(n)]
    return [os.path.join(root, n) for n in sorted(names, reverse=True)]


def _weights_file(path: str, use_ema: bool) -> str:
    if os.path.isfile(os.path.join(path, EXPORT_WEIGHTS)) and not os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return os.path.join(path, EXPORT_WEIGHTS)
    name = "ema.safetensors" if use_ema else "model.safetensors"
    for ckpt in checkpoint_dirs(path):
        candidate = os.path.join(ckpt, name)
        try:
            load_file(candidate)  # validates the file before we commit to it
            return candidate
        except Exception as err:  # noqa: BLE001 - any unreadable file means: try the previous one
            logging.warning("checkpoint %s is unreadable (%s); trying an older one", candidate, err)
    raise FileNotFoundError(f"no readable {name} under {os.path.join(path, CHECKPOINT_DIR)} and no {EXPORT_WEIGHTS} in {path}")


def load_state_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """``load_state_dict`` with an error that lists every missing, unexpected or mis-shaped tensor."""
    if hasattr(model, "upgrade_state_dict"):
        state = model.upgrade_state_dict(state, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the model architecture:"]
        if missing:
            lines.append(f"  missing tensors ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected tensors ({len(unexpected)}): {', '.join(unexpected)}")
        for k in shapes:
            lines.append(f"  {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)


def load_pretrained(
    path: str, use_ema: bool = True, bindings: Sequence[str] = (), trust_config: Optional[bool] = None
) -> HPDM:
    """Rebuild the model of a workdir or export directory and load its (EMA) weights, in eval mode.

    Replaces the process's gin config with the saved operative config (plus ``bindings``). Bindings
    of configurables that are not imported here (trainer, data) are skipped: they were validated
    when the run started.

    The saved config may import only hpdm modules (``hpdm.gin_utils.vet_config``): an export is a
    directory people share, and gin runs a config's imports. ``trust_config=True`` loads one that
    imports other code; None follows ``gin_utils.set_config_trust`` (``--trust_config``), else False.
    """
    config = os.path.join(path, gin_utils.OPERATIVE_CONFIG)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{path} has no {gin_utils.OPERATIVE_CONFIG}: not a training workdir or export")
    gin_utils.check_saved_config(config, trust_config)  # before anything else is read or replaced
    weights = _weights_file(path, use_ema)
    gin.clear_config()
    gin_utils.parse_saved_config(config, skip_unknown=True, trust=trust_config)
    if bindings:
        gin.parse_config(list(bindings), skip_unknown=True)
    model = HPDM()
    load_state_strict(model, load_file(weights), weights)
    logging.info("loaded %s", weights)
    return model.eval()


def export_model(workdir: str, output_dir: str, use_ema: bool = True, trust_config: Optional[bool] = None) -> str:
    """Write ``config.gin`` + ``model.safetensors`` (EMA weights by default) into ``output_dir``.

    A config that ``load_pretrained`` would refuse is refused here too (unless ``trust_config``):
    an export is made to be shared, and should not carry foreign code unnoticed.
    """
    config = os.path.join(workdir, gin_utils.OPERATIVE_CONFIG)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{workdir} has no {gin_utils.OPERATIVE_CONFIG}: not a training workdir")
    gin_utils.check_saved_config(config, trust_config)
    weights = _weights_file(workdir, use_ema)
    os.makedirs(output_dir, exist_ok=True)
    shutil.copyfile(config, os.path.join(output_dir, gin_utils.OPERATIVE_CONFIG))
    tmp = os.path.join(output_dir, EXPORT_WEIGHTS + ".tmp")
    save_file(load_file(weights), tmp)
    os.replace(tmp, os.path.join(output_dir, EXPORT_WEIGHTS))
    return output_dir
