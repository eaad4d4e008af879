"""Pyramid geometry: level resolutions, coordinates, nested patch extraction (Sec. 4.1, Eq. 6, 8)."""

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from hpdm.pyramid import (
    Pyramid,
    check_coords,
    extract_hierarchy,
    extract_patch,
    level_resolutions,
    level_video,
    patch_coords,
    remap_coords,
    sample_nested_offsets,
)


def test_paper_pyramids():
    assert level_resolutions((64, 256, 256), (16, 64, 64)) == [(16, 64, 64), (32, 128, 128), (64, 256, 256)]
    assert Pyramid((64, 288, 512), (8, 36, 64)).num_levels == 4
    # Per-axis cap: time stops doubling at 16 while space keeps going.
    assert level_resolutions((16, 576, 1024), (16, 72, 128)) == [
        (16, 72, 128), (16, 144, 256), (16, 288, 512), (16, 576, 1024)
    ]


@pytest.mark.parametrize(
    "target, patch, message",
    [
        ((16, 48, 64), (4, 16, 16), "not a power of two"),
        ((16, 50, 64), (4, 16, 16), "not an integer"),
        ((4, 16, 16), (8, 16, 16), "exceeds"),
        ((4, 16), (4, 16, 16), "three positive integers"),
    ],
)
def test_bad_pyramids(target, patch, message):
    with pytest.raises(ValueError, match=message):
        Pyramid(target, patch)


def test_patch_coords_normalised_to_full_extent():
    c = patch_coords((8, 32, 32), (4, 16, 16), (2, 8, 16))
    assert torch.equal(c, torch.tensor([0.5, 0.5, 0.5, 0.25, 0.25, 0.5]))
    with pytest.raises(ValueError, match="outside"):
        patch_coords((8, 32, 32), (4, 16, 16), (5, 0, 0))


def test_check_coords_rejects_malformed():
    with pytest.raises(ValueError, match="6 numbers"):
        check_coords(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="outside the video"):
        check_coords(torch.tensor([[0.5, 0.5, 0.5, 0.75, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        check_coords(torch.tensor([[float("nan"), 1, 1, 0, 0, 0]]))


geometries = st.sampled_from(
    [((8, 32, 32), (2, 8, 8)), ((4, 32, 16), (2, 8, 4)), ((8, 16, 32), (8, 4, 8)), ((4, 8, 8), (4, 8, 8))]
)


@settings(max_examples=40, deadline=None)
@given(geometry=geometries, seed=st.integers(0, 2**31 - 1))
def test_nested_patches_are_exact_crops(geometry, seed):
    target, patch = geometry
    pyramid = Pyramid(target, patch)
    gen = torch.Generator().manual_seed(seed)
    video = torch.rand(2, *target, generator=gen, dtype=torch.float64)
    offsets = sample_nested_offsets(pyramid, gen)
    patches, coords = extract_hierarchy(video, pyramid, offsets)
    for level, off in enumerate(offsets):
        factor = pyramid.pool_factor(level)
        pooled = F.avg_pool3d(video[None], factor, factor)[0]  # the whole level video, reference only
        crop = pooled[:, off[0] : off[0] + patch[0], off[1] : off[1] + patch[1], off[2] : off[2] + patch[2]]
        torch.testing.assert_close(patches[level], crop, rtol=0, atol=1e-12)
        res = pyramid.resolutions[level]
        # The coordinates describe exactly the cropped region of the full extent.
        for a in range(3):
            assert coords[level, a].item() == pytest.approx(patch[a] / res[a])
            assert coords[level, 3 + a].item() == pytest.approx(off[a] / res[a])
        if level:
            rel = remap_coords(coords[level], coords[level - 1])
            assert (rel[3:] >= -1e-6).all() and (rel[3:] + rel[:3] <= 1 + 1e-6).all(), "child outside parent"


def test_level_video_tiles_into_its_patches():
    pyramid = Pyramid((8, 32, 48), (4, 8, 12))
    videos = torch.randn(2, 3, 8, 32, 48, dtype=torch.float64)
    for level in range(pyramid.num_levels):
        whole = level_video(videos, pyramid, level)
        assert tuple(whole.shape) == (2, 3, *pyramid.resolutions[level])
        t, h, w = pyramid.patch_res
        for offsets in [(0, 0, 0), tuple(m for m in pyramid.max_offsets(level))]:
            patch = extract_patch(videos[1], pyramid, level, offsets)
            crop = whole[1, :, offsets[0] : offsets[0] + t, offsets[1] : offsets[1] + h, offsets[2] : offsets[2] + w]
            torch.testing.assert_close(crop, patch, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="videos must be"):
        level_video(videos[0], pyramid, 0)
