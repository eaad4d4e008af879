"""Every shipped experiment, mixin and sampler config parses strictly and builds a working model."""

import glob
import os

import gin
import pytest
import torch

from hpdm import gin_utils
from hpdm.core import HPDM

ROOT = gin_utils.GIN_ROOT
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.gin"))) + [
    os.path.join(ROOT, "quickstart.gin"),
    os.path.join(ROOT, "quickstart_t2v.gin"),
]
MIXINS = sorted(glob.glob(os.path.join(ROOT, "mixins", "*.gin")))
SAMPLERS = sorted(glob.glob(os.path.join(ROOT, "samplers", "*.gin")))
TINY = [
    "HPDM.token_dim = 16",
    "HPDM.latent_dim = 16",
    "HPDM.num_latents = 4",
    "HPDM.latent_layers_per_block = 1",
    "HPDM.head_dim = 8",
]
MACROS = [
    "DATA_ROOT = 'unused'",
    "CAPTIONS = 'unused'",
    "IMAGE_ROOT = 'unused'",
    "IMAGE_CAPTIONS = 'unused'",
]


def _tiny_geometry(levels: int) -> list[str]:
    patch = (2, 12, 16)
    target = tuple(p * 2 ** (levels - 1) for p in patch)
    return [f"TARGET_RES = {target}", f"PATCH_RES = {patch}"]


def _forward(model: HPDM) -> torch.Tensor:
    n = model.num_levels
    x = torch.randn(1, n, 3, *model.pyramid.patch_res)
    coords = torch.stack([model.pyramid.coords(l, (0, 0, 0)) for l in range(n)])[None]
    cond = {}
    if model.num_classes:
        cond["label"] = torch.tensor([0])
    if model.text_dim:
        cond["text"] = torch.randn(1, 2, model.text_dim)
    return model(x, torch.ones(1, n), coords, cond=cond or None)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_builds(path):
    gin_utils.parse([path], MACROS + TINY)
    target = gin.query_parameter("%TARGET_RES")
    patch = gin.query_parameter("%PATCH_RES")
    levels = max((t // p).bit_length() for t, p in zip(target, patch))
    # Rebuild with a small geometry of the same level count (the real one: test_model_configs).
    gin.clear_config()
    gin_utils.parse([path], MACROS + TINY + _tiny_geometry(levels))
    model = HPDM()
    assert model.num_levels == levels
    assert torch.isfinite(_forward(model)).all()


@pytest.mark.parametrize("mixin", MIXINS, ids=os.path.basename)
def test_mixins_apply_to_hpdm_s(mixin):
    base = os.path.join(ROOT, "experiments", "hpdm_s.gin")
    gin_utils.parse([base, mixin], MACROS + TINY + _tiny_geometry(3))
    model = HPDM()
    assert torch.isfinite(_forward(model)).all()


@pytest.mark.parametrize("path", SAMPLERS, ids=os.path.basename)
def test_sampler_configs_parse(path):
    import hpdm.samplers  # noqa: F401

    gin_utils.parse([path])
