"""Every shipped gin model config builds with tiny widths and runs forward + backward (Table 8)."""

import glob
import os

import pytest
import torch

from hpdm import gin_utils
from hpdm.core import HPDM, diffusion_loss
from hpdm.pyramid import sample_hierarchy

MODEL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(gin_utils.GIN_ROOT, "models", "*.gin")) if not p.endswith("_base.gin")
)
GEOMETRY = {"t2v": ("(64, 288, 512)", "(8, 36, 64)"), "t2v_1k": ("(16, 576, 1024)", "(16, 72, 128)")}
TINY = [
    "HPDM.token_dim = 16",
    "HPDM.latent_dim = 16",
    "HPDM.num_latents = 4",
    "HPDM.latent_layers_per_block = 1",
    "HPDM.head_dim = 8",
]


def test_configs_found():
    names = {os.path.basename(p) for p in MODEL_CONFIGS}
    assert {"hpdm_s.gin", "hpdm_m.gin", "hpdm_l.gin", "t2v.gin", "t2v_1k.gin", "quickstart.gin"} <= names


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=os.path.basename)
def test_model_config_forward_backward(path):
    name = os.path.basename(path)[:-4]
    target, patch = GEOMETRY.get(name, ("(64, 256, 256)", "(16, 64, 64)"))
    if name == "quickstart":
        target, patch = "(16, 64, 64)", "(4, 16, 16)"
    gin_utils.parse([path], [f"TARGET_RES = {target}", f"PATCH_RES = {patch}"] + TINY)
    model = HPDM()
    x0, coords = sample_hierarchy(torch.rand(3, *model.pyramid.target_res) * 2 - 1, model.pyramid)
    cond = {}
    if model.num_classes:
        cond["label"] = torch.tensor([1])
    if model.text_dim:
        cond["text"] = torch.randn(1, 2, model.text_dim)
    loss, per_level = diffusion_loss(model, x0[None], coords[None], cond or None, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and per_level.shape == (model.num_levels,)
    assert model.tokenizer.proj.weight.grad is not None
