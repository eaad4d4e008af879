"""Loading a trained HPDM for inference, from a training workdir or a self-contained export.

A training workdir holds ``config.gin`` (the run's full gin config) and checkpoint directories; an export
holds ``config.gin`` and ``model.safetensors`` (the EMA weights): everything needed to rebuild the
model without the training run (layout: ``hpdm.core.checkpoints``).

Loading is pure: the model is built from the saved config inside ``gin_utils.SavedConfig.call``,
which applies that config to the build alone, so the caller's gin config is neither replaced nor
extended. The config comes back with the model; a caller that needs another setting of the run
(its sampler steps, its precision) asks it: ``config.call(SamplingSteps)``, ``config.query(...)``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional, Sequence

from absl import logging
from safetensors.torch import load_file, save_file

from hpdm import gin_utils
from hpdm.core.checkpoints import EXPORT_WEIGHTS, ArchitectureMismatch, load_state_strict, resolve_weights
from hpdm.core.model import HPDM


def read_saved_config(path: str, trust_config: Optional[bool] = None) -> gin_utils.SavedConfig:
    """The vetted ``config.gin`` of the workdir or export ``path`` (``gin_utils.SavedConfig.read``)."""
    config = os.path.join(path, gin_utils.OPERATIVE_CONFIG)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{path} has no {gin_utils.OPERATIVE_CONFIG}: not a training workdir or export")
    return gin_utils.SavedConfig.read(config, trust_config)


def _with_bindings(config: gin_utils.SavedConfig, bindings: Sequence[str]) -> gin_utils.SavedConfig:
    """``config`` with ``bindings`` after its own lines, so that they win wherever it is applied."""
    if not bindings:
        return config
    text = config.text + "\n# Bindings given when the model was loaded:\n" + "\n".join(bindings) + "\n"
    return dataclasses.replace(config, text=text)


def load_pretrained(
    path: str,
    *,
    use_ema: bool = True,
    bindings: Sequence[str] = (),
    trust_config: Optional[bool] = None,
    device=None,
) -> tuple[HPDM, gin_utils.SavedConfig]:
    """Rebuild the model of a workdir or export directory and load its (EMA) weights, in eval mode.

    Returns the model (on ``device``, default the CPU) and the config it was built with, the saved
    one plus ``bindings``. The caller's gin config is left as it was. Bindings of configurables that
    are not imported (trainer, data) are skipped: they were validated when the run started.

    The saved config may import only hpdm modules (``hpdm.gin_utils.vet_config``): an export is a
    directory people share, and gin runs a config's imports. ``trust_config=True`` loads one that
    imports other code; None follows ``gin_utils.set_config_trust`` (``--trust_config``), else False.
    """
    config = _with_bindings(read_saved_config(path, trust_config), bindings)  # vetted before any weights are read
    weights = resolve_weights(path, use_ema)
    model = config.call(HPDM)
    state = load_file(weights)
    try:
        load_state_strict(model, state, weights)
    except ArchitectureMismatch as err:
        _explain_missing_levels(model, state, path, err)
        raise
    logging.info("loaded %s", weights)
    if device is not None:
        model.to(device)
    return model.eval(), config


def _explain_missing_levels(model: HPDM, state: dict, path: str, err: Exception) -> None:
    """A clearer error than the tensor list when the checkpoint has fewer pyramid levels than the
    config builds (rows of the per-level ``latents``): the usual cause is a changed resolution."""
    latents = state.get("latents")
    have = None if latents is None else int(latents.shape[0])
    if have is not None and have < model.num_levels:
        raise ValueError(
            f"the checkpoint in {path} has {have} pyramid level(s), but the model config needs "
            f"{model.num_levels} (levels {model.pyramid.resolutions} for target {model.pyramid.target_res}); "
            "it cannot generate the missing levels. Sample at the resolution it was trained for "
            "(check bindings such as --gin_param of target_res / patch_res)."
        ) from err


def export_model(workdir: str, output_dir: str, use_ema: bool = True, trust_config: Optional[bool] = None) -> str:
    """Write ``config.gin`` + ``model.safetensors`` (EMA weights by default) into ``output_dir``.

    A config that ``load_pretrained`` would refuse is refused here too (unless ``trust_config``):
    an export is made to be shared, and should not carry foreign code unnoticed.
    """
    config = os.path.join(workdir, gin_utils.OPERATIVE_CONFIG)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{workdir} has no {gin_utils.OPERATIVE_CONFIG}: not a training workdir")
    gin_utils.check_saved_config(config, trust_config)
    weights = resolve_weights(workdir, use_ema)
    os.makedirs(output_dir, exist_ok=True)
    shutil.copyfile(config, os.path.join(output_dir, gin_utils.OPERATIVE_CONFIG))
    tmp = os.path.join(output_dir, EXPORT_WEIGHTS + ".tmp")
    save_file(load_file(weights), tmp)
    os.replace(tmp, os.path.join(output_dir, EXPORT_WEIGHTS))
    return output_dir
