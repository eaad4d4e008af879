"""Exactness of tiled hierarchical sampling with an analytic denoiser (issue item 1; Sec. 4.4).

Data model: level ``l`` is, per pixel and independently, a two-point mixture ``mu_l +- A`` whose
centre ``mu_l`` depends on the pixel's position and (for ``l >= 1``) on its parent pixel in the
already generated level ``l - 1``. Its optimal denoiser is pointwise,
``D(x; sigma) = mu + A tanh(A (x - mu) / sigma^2)``, so a tile's prediction is exactly the crop of
the whole-video prediction, provided the tile knows where it is (coords) and reads the right
ancestor pixels (ancestor windows). Tiled sampling -- every overlap setting, averaging, flush edge
tiles, stochastic Heun steps with noise drawn once per video -- must then equal plain untiled
sampling of the whole level videos, which this file implements independently of ``tiled.py``.
"""

import itertools

import pytest
import torch

from hpdm.pyramid import Pyramid
from hpdm.samplers import SamplingSteps, OverlapSampler, VideoNoise, get_sampler, sample_pyramid


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead, and thrash badly on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

A = 0.6
CHANNELS = 2


def position_term(level: int, res) -> torch.Tensor:
    """A fixed, position-dependent part of the mixture centre, ``[C, T, H, W]``."""
    t, h, w = (torch.arange(n, dtype=torch.float64) for n in res)
    grid = 0.7 * t[:, None, None] + 1.3 * h[None, :, None] + 2.1 * w[None, None, :]
    return torch.stack([0.3 * torch.sin(grid + level + c) for c in range(CHANNELS)])


def upsample(video: torch.Tensor, factors) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``[..., T, H, W]`` by integer per-axis factors."""
    for axis, u in zip((-3, -2, -1), factors):
        video = video.repeat_interleave(u, dim=axis)
    return video


def centre_whole(pyr: Pyramid, level: int, parent) -> torch.Tensor:
    mu = position_term(level, pyr.resolutions[level])
    if level > 0:
        mu = mu + 0.5 * upsample(parent, pyr.upscale(level))
    return mu


def mixture_x0(x, mu, sigma):
    return mu + A * torch.tanh(A * (x - mu) / float(sigma) ** 2)


class AnalyticTiles:
    """``TileModel`` that computes the optimal denoiser of one tile from its coords and ancestors."""

    def __init__(self, pyr: Pyramid):
        self.pyr = pyr
        self.contexts = 0

    def context(self, level, x_anc, coords_anc, coords, cond):
        self.contexts += 1
        if level == 0:
            return None
        return x_anc[:, -1], coords_anc[:, -1]  # the parent window and its coordinates

    def denoise(self, x, sigma, coords, level, context, cond):
        pyr, p = self.pyr, self.pyr.patch_res
        res = pyr.resolutions[level]
        out = []
        for j in range(x.shape[0]):
            off = [round(float(coords[j, 3 + a]) * res[a]) for a in range(3)]
            mu = position_term(level, res)[:, off[0] : off[0] + p[0], off[1] : off[1] + p[1], off[2] : off[2] + p[2]]
            if level > 0:
                parent, pc = context
                pres = pyr.resolutions[level - 1]
                poff = [round(float(pc[j, 3 + a]) * pres[a]) for a in range(3)]
                u = pyr.upscale(level)
                idx = [torch.div(off[a] + torch.arange(p[a]), u[a], rounding_mode="floor") - poff[a] for a in range(3)]
                for a in range(3):
                    assert (idx[a] >= 0).all() and (idx[a] < p[a]).all(), "ancestor window misses the tile"
                win = parent[j][:, idx[0]][:, :, idx[1]][:, :, :, idx[2]]
                mu = mu + 0.5 * win
            out.append(mixture_x0(x[j], mu, sigma[j]))
        return torch.stack(out)


def sigma_range(level):
    return 0.002 / 0.7**level, 20.0 / 0.7**level


def context_sigma(level):
    return 0.01 / 0.7**level


def untiled_reference(pyr, seeds, schedule):
    """Whole-video sampling of every level with the same noise draws, in the same order."""
    noise = VideoNoise(seeds, dtype=torch.float64)
    parent = None
    for level in range(pyr.num_levels):
        steps = schedule.level(level)
        sigmas = steps.sigmas(*sigma_range(level))
        mu = centre_whole(pyr, level, parent)
        x = noise.draw((CHANNELS, *pyr.resolutions[level])) * float(sigmas[0])
        x = get_sampler(steps.stepper)(lambda v, s: mixture_x0(v, mu, s), x, sigmas, noise=noise, **steps.options())
        if level + 1 < pyr.num_levels:
            parent = x + context_sigma(level) * noise.draw(x.shape[1:])
    return x


PYRAMIDS = [
    Pyramid((4, 16, 16), (2, 4, 4)),  # t capped at the last level (upscale 1 on t)
    Pyramid((3, 12, 24), (3, 3, 6)),  # odd tiles: 50% overlap stride is floor(p / 2)
]
OVERLAPS = ["".join(c for c, on in zip("fhw", flags) if on) for flags in itertools.product([0, 1], repeat=3)]
# Heun with churn at every level (stochastic steps with noise at later levels too), and the defaults.
SCHEDULES = {
    "stochastic_heun": SamplingSteps(num_steps=[6, 4, 3], steppers=["heun"], churn=[30.0]),
    "default_kinds": SamplingSteps(base_steps=8, s_tmin=0.0, s_tmax=100.0),
}


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("pyr_index", [0, 1])
def test_tiled_equals_untiled(pyr_index, overlap, schedule_name):
    pyr, schedule = PYRAMIDS[pyr_index], SCHEDULES[schedule_name]
    seeds = [11, 12]
    model = AnalyticTiles(pyr)
    sampler = OverlapSampler(overlap=overlap, tile_batch_size=7)
    tiled = sample_pyramid(
        model, pyr, sigma_range, context_sigma, VideoNoise(seeds, dtype=torch.float64), channels=CHANNELS,
        level_schedule=schedule, overlap_sampler=sampler,
    )
    ref = untiled_reference(pyr, seeds, schedule)
    assert tiled.shape == (2, CHANNELS, *pyr.target_res)
    # float64 throughout: what remains is rounding of the averages (k equal predictions / k).
    assert tiled.dtype == torch.float64
    torch.testing.assert_close(tiled, ref, rtol=1e-9, atol=1e-9)
    # Contexts were built once per tile batch and level, not per step.
    per_level = [-(-2 * len(sampler_plan) // 7) for sampler_plan in _plans(pyr, overlap)]
    assert model.contexts == sum(per_level)


def _plans(pyr, overlap):
    from hpdm.pyramid.tiles import TilePlan

    return [TilePlan.build(pyr, l, overlap).offsets for l in range(pyr.num_levels)]


def test_vectorised_gather_scatter_equals_slicing():
    """The accelerator path (one index op per tile batch) gives the same prediction as slicing."""
    pyr = PYRAMIDS[1]
    gen = torch.Generator().manual_seed(0)
    ancestors = [torch.randn(2, CHANNELS, *pyr.resolutions[k], generator=gen, dtype=torch.float64) for k in range(2)]
    x = torch.randn(2, CHANNELS, *pyr.resolutions[2], generator=gen, dtype=torch.float64)
    denoiser = OverlapSampler("fhw", tile_batch_size=9).level_denoiser(AnalyticTiles(pyr), pyr, 2, ancestors)
    sliced = denoiser(x, 0.7)
    denoiser.vectorised = True
    torch.testing.assert_close(denoiser(x, 0.7), sliced, rtol=1e-12, atol=1e-12)


def test_overlap_actually_overlaps_and_tile_batching_is_invisible():
    pyr = PYRAMIDS[0]
    schedule = SCHEDULES["stochastic_heun"]
    outs = []
    for tile_batch in (1, 5, 1000):
        outs.append(
            sample_pyramid(
                AnalyticTiles(pyr), pyr, sigma_range, context_sigma, VideoNoise([3]), channels=CHANNELS,
                level_schedule=schedule, overlap_sampler=OverlapSampler("fhw", tile_batch, offload_cache=tile_batch == 5),
            )
        )
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    from hpdm.pyramid.tiles import TilePlan

    assert TilePlan.build(pyr, 2, "fhw").coverage().max() > 1


def test_same_seed_same_video_any_batch():
    pyr = PYRAMIDS[1]
    schedule = SCHEDULES["stochastic_heun"]
    kwargs = dict(channels=CHANNELS, level_schedule=schedule, overlap_sampler=OverlapSampler("hw"))
    both = sample_pyramid(AnalyticTiles(pyr), pyr, sigma_range, context_sigma, VideoNoise([5, 6]), **kwargs)
    alone = sample_pyramid(AnalyticTiles(pyr), pyr, sigma_range, context_sigma, VideoNoise([6]), **kwargs)
    torch.testing.assert_close(both[1:], alone)
    assert not torch.allclose(both[0], both[1])
