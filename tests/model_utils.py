"""Tiny models and patch batches shared by the model tests."""

import torch

from hpdm.core import HPDM
from hpdm.layers import LocalTokenMixing
from hpdm.pyramid import sample_hierarchy

TARGET = (4, 32, 32)
PATCH = (2, 8, 8)


def tiny_model(seed: int = 0, **overrides) -> HPDM:
    torch.manual_seed(seed)
    kwargs = dict(
        target_res=TARGET,
        patch_res=PATCH,
        token_size=(1, 2, 2),
        token_dim=16,
        latent_dim=16,
        num_latents=4,
        num_blocks=6,
        latent_layers_per_block=1,
        head_dim=8,
        num_levels_per_block=[1, 1, 2, 2, 3, 3],
    )
    kwargs.update(overrides)
    model = HPDM(**kwargs)
    # The detokenizer starts at zero; randomise it so outputs depend on the whole network.
    torch.nn.init.normal_(model.detokenizer.proj.weight, std=0.2)
    for module in model.modules():
        if isinstance(module, LocalTokenMixing):
            torch.nn.init.normal_(module.out.weight, std=0.2)
    return model.double()


def hierarchy_batch(model, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pairs = [
        sample_hierarchy(torch.rand(3, *model.pyramid.target_res, generator=gen, dtype=torch.float64) * 2 - 1, model.pyramid, gen)
        for _ in range(batch)
    ]
    x0 = torch.stack([p[0] for p in pairs])
    coords = torch.stack([p[1] for p in pairs]).double()
    sigma = torch.exp(torch.randn(batch, model.num_levels, generator=gen, dtype=torch.float64))
    noisy = x0 + sigma[..., None, None, None, None] * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    return noisy, coords, sigma


def write_export(path, **arch) -> None:
    """An exported-model directory (random weights + ``config.gin``) of ``HPDM(**arch)`` for CLI tests."""
    from safetensors.torch import save_file

    model = HPDM(**arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.gin").write_text("".join(f"HPDM.{k} = {v!r}\n" for k, v in arch.items()))
