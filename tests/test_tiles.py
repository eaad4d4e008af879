"""Tile plans and ancestor windows (paper Sec. 4.4): coverage, flush edges, nesting, validity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpdm.pyramid import Pyramid
from hpdm.pyramid.tiles import TilePlan, ancestor_coords, ancestor_offsets, parse_overlap, tile_starts


def test_tile_starts_paper_count_and_flush():
    # Sec. 4.4: a 4p-long axis with 50% overlap has 2*4 - 1 = 7 tiles.
    assert tile_starts(64, 16, True) == [0, 8, 16, 24, 32, 40, 48]
    assert tile_starts(64, 16, False) == [0, 16, 32, 48]
    # Not a multiple of the stride: the last tile is still flush with the far edge.
    assert tile_starts(10, 4, False) == [0, 4, 6]
    assert tile_starts(10, 4, True) == [0, 2, 4, 6]
    assert tile_starts(4, 4, True) == [0]
    assert tile_starts(5, 1, True) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="does not fit"):
        tile_starts(3, 4, False)


def test_parse_overlap():
    assert parse_overlap("fhw") == (True, True, True)
    assert parse_overlap("hw") == (False, True, True)
    assert parse_overlap("t") == (True, False, False)
    assert parse_overlap("") == parse_overlap("none") == (False, False, False)
    with pytest.raises(ValueError, match="subset"):
        parse_overlap("xy")


def test_level0_is_one_tile_with_no_ancestors():
    pyr = Pyramid((16, 64, 64), (4, 16, 16))
    plan = TilePlan.build(pyr, 0, "fhw")
    assert plan.offsets == ((0, 0, 0),)
    assert ancestor_offsets(pyr, 0, (0, 0, 0)) == []


def test_ancestor_example():
    pyr = Pyramid((16, 64, 64), (4, 16, 16))  # levels 4x16x16, 8x32x32, 16x64x64
    offs = ancestor_offsets(pyr, 2, (12, 48, 8))
    assert offs[0] == (0, 0, 0)
    # Footprint at level 1: t [6, 8), h [24, 32), w [4, 12) -> centred windows, clamped.
    assert offs[1] == (4, 16, 0)


def _pow2_pyramid(draw):
    patch = tuple(draw(st.integers(1, 5)) for _ in range(3))
    doublings = tuple(draw(st.integers(0, 3)) for _ in range(3))
    target = tuple(p << d for p, d in zip(patch, doublings))
    return Pyramid(target, patch)


@st.composite
def pyramids_and_overlap(draw):
    return _pow2_pyramid(draw), tuple(draw(st.booleans()) for _ in range(3))


@settings(max_examples=60, deadline=None)
@given(pyramids_and_overlap())
def test_plan_covers_level_with_tiles_inside(args):
    pyr, overlap = args
    for level in range(pyr.num_levels):
        plan = TilePlan.build(pyr, level, overlap)
        res = pyr.resolutions[level]
        for o in plan.offsets:
            assert all(0 <= a <= r - p for a, r, p in zip(o, res, pyr.patch_res))
            pyr.coords(level, o)  # valid coordinates
        cov = plan.coverage()
        assert (cov >= 1).all(), "some pixel is covered by no tile"
        if not any(overlap):
            # Abutting tiles: at most the flush last tile overlaps its neighbour.
            assert len(plan) == len(set(plan.offsets))


@settings(max_examples=60, deadline=None)
@given(pyramids_and_overlap())
def test_ancestor_windows_nested_and_valid(args):
    pyr, overlap = args
    level = pyr.num_levels - 1
    plan = TilePlan.build(pyr, level, overlap)
    for tile in plan.offsets:
        offs, coords = ancestor_coords(pyr, level, tile)
        assert len(offs) == level and coords.shape == (level, 6)
        chain = offs + [tuple(tile)]
        for k in range(level):
            parent, child = chain[k], chain[k + 1]
            up = pyr.upscale(k + 1)
            for o_p, o_c, p, u, r in zip(parent, child, pyr.patch_res, up, pyr.resolutions[k]):
                assert 0 <= o_p <= r - p
                # child footprint [o_c / u, (o_c + p) / u) inside [o_p, o_p + p)
                assert o_p * u <= o_c and o_c + p <= (o_p + p) * u
        # Normalised coordinates: the tile's box lies inside every ancestor box.
        tile_c = pyr.coords(level, tile)
        for c in coords:
            assert (c[3:] <= tile_c[3:] + 1e-6).all()
            assert (tile_c[3:] + tile_c[:3] <= c[3:] + c[:3] + 1e-6).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 40), st.sampled_from([1, 2]))
def test_parent_window_is_centred(p, raw, u):
    """The window is the containing one closest to centred on the footprint."""
    from hpdm.pyramid.tiles import parent_window

    parent_len = p * 4
    child_len = parent_len * u
    o = raw % (child_len - p + 1)
    s = parent_window(o, p, u, parent_len)
    centre = (o + p / 2) / u
    valid = [
        c for c in range(parent_len - p + 1) if c * u <= o and o + p <= (c + p) * u
    ]
    assert s in valid
    assert abs((s + p / 2) - centre) <= min(abs((c + p / 2) - centre) for c in valid) + 1e-9


def test_coverage_counts():
    pyr = Pyramid((1, 8, 8), (1, 4, 4))
    plan = TilePlan.build(pyr, 1, "hw")
    cov = plan.coverage()
    assert len(plan) == 9
    assert cov[0, 0, 0] == 1 and cov[0, 3, 3] == 4 and cov[0, 2, 0] == 2
    assert torch.equal(cov, cov.flip(1).flip(2))
