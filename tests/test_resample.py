"""Eq. 8 resampling as three per-axis matrix products, against ``F.grid_sample`` (the reference)."""

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from hpdm.pyramid import interpolation_matrices, resample, sampling_grid

sizes = st.tuples(*[st.integers(1, 6)] * 3)


def reference(grid: torch.Tensor, relative: torch.Tensor, size) -> torch.Tensor:
    where = sampling_grid(relative, size).to(grid.dtype)
    return F.grid_sample(grid, where, mode="bilinear", padding_mode="border", align_corners=False)


def random_boxes(gen: torch.Generator, batch: int, spill: float) -> torch.Tensor:
    """``[B, 6]`` boxes; ``spill > 0`` lets them reach past the source's edges (the border clamp)."""
    extent = 0.05 + 0.95 * torch.rand(batch, 3, generator=gen, dtype=torch.float64)
    start = (1 - extent + 2 * spill) * torch.rand(batch, 3, generator=gen, dtype=torch.float64) - spill
    return torch.cat([extent, start], dim=1)


@settings(max_examples=60, deadline=None)
@given(source=sizes, size=sizes, batch=st.integers(1, 3), spill=st.sampled_from([0.0, 0.3]),
       channels_last=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_resample_equals_grid_sample_values_and_gradients(source, size, batch, spill, channels_last, seed):
    gen = torch.Generator().manual_seed(seed)
    relative = random_boxes(gen, batch, spill)
    grid = torch.randn(batch, 4, *source, generator=gen, dtype=torch.float64)
    if channels_last:  # the model's grids are views of [B, t*h*w, D] tokens
        grid = grid.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    ours = grid.clone().requires_grad_(True)
    ref = grid.clone().requires_grad_(True)
    out, expected = resample(ours, relative, size), reference(ref, relative, size)
    assert out.shape == expected.shape == (batch, 4, *size)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    weight = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(source=sizes, size=sizes, seed=st.integers(0, 2**31 - 1))
def test_interpolation_rows_are_convex_weights(source, size, seed):
    relative = random_boxes(torch.Generator().manual_seed(seed), 2, 0.3)
    for axis, mat in enumerate(interpolation_matrices(relative, source, size)):
        assert mat.shape == (2, size[axis], source[axis])
        assert (mat >= 0).all()
        torch.testing.assert_close(mat.sum(-1), torch.ones(2, size[axis], dtype=mat.dtype), rtol=0, atol=1e-12)
        assert ((mat > 0).sum(-1) <= 2).all(), "linear interpolation touches at most two cells per axis"


def test_the_identity_box_returns_the_grid():
    grid = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    whole = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    torch.testing.assert_close(resample(grid, whole, (4, 5, 6)), grid, rtol=0, atol=1e-12)


def test_float32_agrees_with_grid_sample_to_rounding():
    gen = torch.Generator().manual_seed(0)
    relative = random_boxes(gen, 8, 0.0)
    grid = torch.randn(8, 16, 4, 8, 8, generator=gen)
    torch.testing.assert_close(resample(grid, relative.float(), (4, 8, 8)), reference(grid, relative.float(), (4, 8, 8)),
                               rtol=0, atol=1e-5)


def test_bad_boxes_and_sizes_are_refused():
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        interpolation_matrices(torch.zeros(6), (2, 2, 2), (2, 2, 2))
    with pytest.raises(ValueError, match="both be"):
        interpolation_matrices(torch.zeros(1, 6), (2, 2), (2, 2, 2))
