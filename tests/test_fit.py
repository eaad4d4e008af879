"""The model can learn: fitting one fixed batch lowers every level's loss at least 5x (Eq. 4)."""

import torch

from hpdm.core import diffusion_loss

from model_utils import hierarchy_batch, tiny_model


def test_fit_one_batch_lowers_every_level_loss():
    model = tiny_model(token_dim=32, latent_dim=32, num_latents=8).float()
    torch.nn.init.zeros_(model.detokenizer.proj.weight)
    noisy, coords, _ = hierarchy_batch(model, batch=4, seed=3)
    gen = torch.Generator().manual_seed(4)
    x0 = (torch.rand(noisy.shape, generator=gen) * 2 - 1).float()
    coords = coords.float()
    sigma = torch.tensor([0.3, 1.0, 3.0]).expand(4, 3).clone()
    noise = torch.randn(x0.shape, generator=gen)
    mask = torch.ones(4, 3, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss, per_level = diffusion_loss(model, x0, coords, sigma=sigma, noise=noise, loss_mask=mask)
        first = per_level if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (per_level * 5 < first).all(), f"per-level loss {first.tolist()} -> {per_level.tolist()}"
