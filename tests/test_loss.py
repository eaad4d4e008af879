"""Per-level loss weights of the joint loss (paper Eq. 4): exact weighted means, checked arguments, and
the trainer's gradient-accumulation normalisation under weights."""

import pytest
import torch

from hpdm.core import diffusion_loss
from hpdm.core.loss import level_term_weights

from model_utils import hierarchy_batch, tiny_model
from train_helpers import load_ckpt, run, train_cmd, write_gin


def _fixed_draws(model, batch=4, seed=1):
    noisy, coords, _ = hierarchy_batch(model, batch=batch, seed=seed)
    gen = torch.Generator().manual_seed(seed + 10)
    x0 = (torch.rand(noisy.shape, generator=gen, dtype=torch.float64) * 2 - 1)
    sigma = torch.exp(torch.randn(batch, model.num_levels, generator=gen, dtype=torch.float64))
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, model.num_levels, generator=gen) < 0.7
    mask[0] = True
    return x0, coords, sigma, noise, mask


@torch.no_grad()
def test_weighted_loss_is_the_weighted_mean_of_the_terms():
    model = tiny_model().double().eval()
    x0, coords, sigma, noise, mask = _fixed_draws(model)
    plain, per_level = diffusion_loss(model, x0, coords, sigma=sigma, noise=noise, loss_mask=mask)
    ones, per_level_ones = diffusion_loss(
        model, x0, coords, sigma=sigma, noise=noise, loss_mask=mask, level_weights=[1.0] * model.num_levels
    )
    assert torch.equal(plain, ones) and torch.equal(per_level, per_level_ones)

    w = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    weighted, per_level_w = diffusion_loss(model, x0, coords, sigma=sigma, noise=noise, loss_mask=mask, level_weights=w)
    torch.testing.assert_close(per_level_w, per_level, rtol=0, atol=0)  # reported per level unweighted
    count = mask.double().sum(0)
    expected = (per_level * count * w).sum() / (count * w).sum()
    torch.testing.assert_close(weighted, expected, rtol=1e-12, atol=0)
    # A level of weight 0 leaves the loss: it equals the mean over the other levels' terms.
    w0 = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    only, _ = diffusion_loss(model, x0, coords, sigma=sigma, noise=noise, loss_mask=mask, level_weights=w0)
    torch.testing.assert_close(only, (per_level * count)[1:].sum() / count[1:].sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [[1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0]])
def test_bad_level_weights_are_named(bad):
    with pytest.raises(ValueError, match="level_weights"):
        level_term_weights(bad, 3)


@pytest.mark.slow
def test_trainer_level_weights_take_effect_and_survive_accumulation(tmp_path):
    """Two micro-batches give the single-batch update under weights: the normalisation is weighted."""
    gin_file = write_gin(tmp_path)
    params = ("TRAIN_STEPS=2", "CHECKPOINT_EVERY=2", "Trainer.level_loss_weights=(4.0, 1.0, 0.5)")
    run(train_cmd(gin_file, tmp_path / "one", *params))
    run(train_cmd(gin_file, tmp_path / "accum", *params, "Trainer.grad_accum=2"))
    run(train_cmd(gin_file, tmp_path / "plain", *params[:2]))
    one, accum, plain = (load_ckpt(tmp_path / name, 2)[0] for name in ("one", "accum", "plain"))
    for k in one:
        torch.testing.assert_close(accum[k], one[k], rtol=0, atol=1e-5, msg=k)
    assert any(not torch.allclose(one[k], plain[k], atol=1e-6) for k in one), "weights changed nothing"


@pytest.mark.slow
def test_trainer_rejects_weights_of_the_wrong_length_before_training(tmp_path):
    gin_file = write_gin(tmp_path)
    code, _, err = run(train_cmd(gin_file, tmp_path / "w", "TRAIN_STEPS=2", "Trainer.level_loss_weights=(1.0, 1.0)"), check=False)
    assert code != 0 and "level_weights has 2 entries for 3 levels" in err
    assert not (tmp_path / "w" / "checkpoints").exists()
