"""v-prediction preconditioning and per-level input scaling (Sec. 4.5, 4.6)."""

import math

import pytest
import torch

from hpdm.core import NoiseSchedule, v_preconditioning, v_to_x0, x0_to_v


def test_x0_v_round_trip_and_sign():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 2, 8, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64).view(4, 1, 1, 1, 1)
    x = x0 + sigma * eps
    v = x0_to_v(x0, x, sigma, 0.5)
    torch.testing.assert_close(v_to_x0(v, x, sigma, 0.5), x0, rtol=0, atol=1e-12)
    # v = alpha * eps - beta * x0 / sigma_data with alpha, beta > 0 (the sign convention).
    s = (sigma**2 + 0.25).sqrt()
    torch.testing.assert_close(v, (0.5 / s) * eps - (sigma / s) * x0 / 0.5, rtol=0, atol=1e-12)
    pre = v_preconditioning(sigma, 0.5)
    assert (pre.c_out < 0).all()
    # The network input has unit variance for unit-variance noise and sigma_data-scaled data.
    torch.testing.assert_close(pre.c_in**2 * (sigma**2 + 0.25), torch.ones_like(sigma))


def test_input_scaling_shared_by_training_model_and_sampling():
    schedule = NoiseSchedule(input_scale_decay=0.6, context_prob=0.0)
    sigma, mask = schedule.sample_training_sigmas(20000, 3, torch.Generator().manual_seed(1))
    assert mask.all()
    scaled = schedule.model_sigma(sigma).log()
    for level in range(3):
        # The scaled sigma the model embeds follows the same log-normal at every level.
        assert abs(scaled[:, level].mean().item() - schedule.p_mean) < 0.05
        assert abs(scaled[:, level].std().item() - schedule.p_std) < 0.05
        lo, hi = schedule.sigma_range(level)
        b = schedule.input_scale(level)
        assert math.isclose(lo * b, schedule.sigma_min) and math.isclose(hi * b, schedule.sigma_max)
        assert math.isclose(schedule.context_sigma(level) * b, schedule.sigma_min)


def test_context_regime_masks_levels_below_a_cut():
    schedule = NoiseSchedule(context_prob=1.0)
    sigma, mask = schedule.sample_training_sigmas(512, 3, torch.Generator().manual_seed(2))
    assert (~mask[:, 0]).all() and mask[:, 2].all()
    ctx = torch.tensor([schedule.context_sigma(l) for l in range(3)])
    torch.testing.assert_close(sigma[~mask], ctx.expand(512, 3)[~mask])
    # Both cuts occur: sometimes level 1 is context, sometimes it is trained.
    assert mask[:, 1].any() and (~mask[:, 1]).any()


def test_per_level_noise_distribution():
    schedule = NoiseSchedule(p_mean=(-0.4, -1.2, -2.0), p_std=(0.0, 0.0, 0.5), context_prob=0.0)
    sigma, _ = schedule.sample_training_sigmas(20000, 3, torch.Generator().manual_seed(3))
    scaled = schedule.model_sigma(sigma).log()
    # A zero spread gives exactly exp(p_mean) on the scaled axis at every draw.
    torch.testing.assert_close(scaled[:, 0], torch.full((20000,), -0.4), rtol=0, atol=1e-6)
    torch.testing.assert_close(scaled[:, 1], torch.full((20000,), -1.2), rtol=0, atol=1e-6)
    assert abs(scaled[:, 2].mean().item() + 2.0) < 0.02 and abs(scaled[:, 2].std().item() - 0.5) < 0.02


def test_per_level_noise_distribution_must_match_the_levels():
    schedule = NoiseSchedule(p_mean=(-0.4, -1.2))
    with pytest.raises(ValueError, match="2 per-level values for 3 levels"):
        schedule.sample_training_sigmas(4, 3)
    # A model checks its schedule against its pyramid when it is built, not at the first step.
    from hpdm.core import HPDM

    with pytest.raises(ValueError, match="2 per-level values for 3 levels"):
        HPDM(target_res=(4, 16, 16), patch_res=(1, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
             num_latents=4, num_blocks=1, head_dim=8, schedule=schedule)
    with pytest.raises(ValueError, match="p_std must be >= 0"):
        NoiseSchedule(p_std=(1.0, -1.0))
