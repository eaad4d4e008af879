"""Deep context fusion alignment (Sec. 4.2, Eq. 7-8) against an independent computation."""

import torch

from hpdm.layers import ContextFuser, sample_context
from hpdm.pyramid import Pyramid

# Three channels hold linear ramps of the absolute (full-video) position along t, h and w.


def ramp_grid(coords: torch.Tensor, size) -> torch.Tensor:
    """Token grid [1, 3, t, h, w] of a patch at ``coords``: channel a = absolute centre along axis a."""
    axes = [coords[3 + a] + coords[a] * (torch.arange(n, dtype=torch.float64) + 0.5) / n for a, n in enumerate(size)]
    t, h, w = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([t, h, w])[None]


def expected_context(child: torch.Tensor, parent: torch.Tensor, size) -> torch.Tensor:
    """Ramp value at each child cell centre, clamped to the parent's outermost cell centres."""
    out = []
    for a, n in enumerate(size):
        centres = child[3 + a] + child[a] * (torch.arange(n, dtype=torch.float64) + 0.5) / n
        lo = parent[3 + a] + parent[a] * 0.5 / n
        hi = parent[3 + a] + parent[a] * (n - 0.5) / n
        out.append(centres.clamp(lo.item(), hi.item()))
    t, h, w = torch.meshgrid(*out, indexing="ij")
    return torch.stack([t, h, w])[None]


def test_context_matches_parent_region_three_level_chain():
    pyramid = Pyramid((8, 64, 64), (2, 16, 16))
    size = (2, 4, 4)  # token grid of a 2x16x16 patch with 1x4x4 tokens
    offsets = [(0, 0, 0), (2, 8, 16), (5, 24, 40)]
    coords = [pyramid.coords(l, o).double() for l, o in enumerate(offsets)]
    ancestors = [(ramp_grid(c, size), c[None]) for c in coords[:2]]
    # Level 1 from level 0, then level 2 from the mean over levels 0 and 1.
    ctx1 = sample_context(ancestors[:1], coords[1][None], size)
    torch.testing.assert_close(ctx1, expected_context(coords[1], coords[0], size), rtol=0, atol=1e-5)
    ctx2 = sample_context(ancestors, coords[2][None], size)
    expect2 = (expected_context(coords[2], coords[0], size) + expected_context(coords[2], coords[1], size)) / 2
    torch.testing.assert_close(ctx2, expect2, rtol=0, atol=1e-5)
    # Interior child cells see the exact ramp: no clamping happens away from the parent's border.
    torch.testing.assert_close(ctx2[0, 1, 0, 1:3, 1:3], ramp_grid(coords[2], size)[0, 1, 0, 1:3, 1:3], rtol=0, atol=1e-5)


def test_context_on_non_cubic_grid():
    pyramid = Pyramid((4, 16, 64), (2, 8, 16))
    size = (2, 4, 8)
    parent = pyramid.coords(0, (0, 0, 0)).double()
    child = pyramid.coords(1, (1, 4, 12)).double()
    ctx = sample_context([(ramp_grid(parent, size), parent[None])], child[None], size)
    torch.testing.assert_close(ctx, expected_context(child, parent, size), rtol=0, atol=1e-5)


def test_fuser_is_linear_split_of_eq9_and_switches_work():
    torch.manual_seed(0)
    fuser = ContextFuser(8)
    tokens, ctx, coords = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.rand(2, 6)
    concat = torch.cat([tokens, ctx, coords[:, None].expand(2, 5, 6)], -1)
    weight = torch.cat([fuser.proj_tokens.weight, fuser.proj_context.weight, fuser.proj_coords.weight], 1)
    torch.testing.assert_close(fuser.fuse(tokens, fuser.context_term(ctx, coords)), concat @ weight.T + fuser.proj_context.bias)
    assert ContextFuser(8, use_coords=False).proj_coords is None
    ctx.requires_grad_(True)
    ContextFuser(8, detach_context=True).context_term(ctx, coords).sum().backward()
    assert ctx.grad is None
