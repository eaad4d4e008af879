"""Sampling a real HPDM: cached == uncached with fewer block evaluations, guidance, seeds, errors."""

import pytest
import torch

from hpdm.core import HPDM
from hpdm.samplers import (
    HPDMTileModel,
    SamplingSteps,
    OverlapSampler,
    VideoNoise,
    sample_pyramid,
    sample_videos,
)
from hpdm.benchmarks.sampling import time_level_step

TILE_BATCH = 64

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead, and thrash badly on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

FAST = SamplingSteps(num_steps=[3, 2, 2], s_tmin=0.0, s_tmax=1e9)  # churn at every level-0 step


def tiny(num_classes=0, text_dim=0, seed=0, dtype=torch.float64) -> HPDM:
    torch.manual_seed(seed)
    model = HPDM(
        target_res=(2, 16, 16),
        patch_res=(2, 4, 4),
        token_size=(1, 2, 2),
        token_dim=16,
        latent_dim=16,
        num_latents=4,
        num_blocks=6,
        latent_layers_per_block=1,
        head_dim=8,
        num_levels_per_block=[1, 1, 2, 2, 3, 3],
        num_classes=num_classes,
        text_dim=text_dim,
    )
    # The detokenizer starts at zero (output = c_skip x); randomise it so the network matters.
    torch.nn.init.normal_(model.detokenizer.proj.weight, std=0.2)
    return model.to(dtype).eval()


def _run(model, cached, overlap="fhw", cond=None, guidance=1.0):
    before = model.level_block_evaluations
    out = sample_pyramid(
        HPDMTileModel(model, cached=cached, guidance_scale=guidance),
        model.pyramid,
        model.schedule.sigma_range,
        model.schedule.context_sigma,
        VideoNoise([1, 2], dtype=torch.float64),
        channels=3,
        cond=cond,
        level_schedule=FAST,
        overlap_sampler=OverlapSampler(overlap, tile_batch_size=TILE_BATCH),
        return_levels=True,
    )
    return out, model.level_block_evaluations - before


@pytest.mark.parametrize("overlap", ["hw", ""])
def test_cached_equals_uncached_and_runs_fewer_blocks(overlap):
    model = tiny()
    cached, blocks_cached = _run(model, True, overlap)
    uncached, blocks_uncached = _run(model, False, overlap)
    for a, b in zip(cached, uncached):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert blocks_cached < blocks_uncached
    # Exact count (the counter is per level per block call, whatever the batch). Loads [1,1,2,2,3,3];
    # a cached level-l evaluation runs only the blocks with load > l (+ one context build per tile
    # batch, running the ancestors up to the last block of level l); uncached runs
    # sum(min(load, l+1)) level-blocks at every evaluation.
    from hpdm.pyramid.tiles import TilePlan

    sched = model.scheduler
    steps = [3 * 2 - 1, 2, 2]  # evaluations: Heun (no correction on the last step), then Euler

    def expected(cached_run):
        total = 0
        for level in range(3):
            tiles = -(-2 * len(TilePlan.build(model.pyramid, level, overlap)) // TILE_BATCH)  # tile batches
            per_eval = len(sched.blocks_for_level(level)) if cached_run else sched.evaluations(level + 1)
            total += tiles * steps[level] * per_eval
            if cached_run and level > 0:
                last = max(sched.blocks_for_level(level))
                total += tiles * sum(min(sched.loads[b], level) for b in range(last))
        return total

    assert blocks_uncached == expected(False)
    assert blocks_cached == expected(True)


def test_sample_videos_cached_uncached_uint8_and_seeds():
    model = tiny()
    kwargs = dict(level_schedule=FAST, overlap="hw", tile_batch_size=64)
    kwargs["level_schedule"] = SamplingSteps(num_steps=[2, 1, 1], s_tmin=0.0, s_tmax=1e9)
    a = sample_videos(model, 2, seed=7, **kwargs)
    assert a.dtype == torch.uint8 and a.shape == (2, 2, 16, 16, 3)
    b = sample_videos(model, 2, seed=7, cached=False, **kwargs)
    assert torch.equal(a, b)
    c = sample_videos(model, 2, seed=7, batch_size=1, **kwargs)  # batching does not change a video
    assert (a.int() - c.int()).abs().max() <= 1
    d = sample_videos(model, 2, seed=8, **kwargs)
    assert not torch.equal(a, d)
    assert not torch.equal(a[0], a[1])  # videos differ from each other


def test_level_step_timing_counts_blocks():
    model = tiny(dtype=torch.float32)
    cached = time_level_step(model, cached=True, overlap="hw", repeats=1, tile_batch_size=16)
    uncached = time_level_step(model, cached=False, overlap="hw", repeats=1, tile_batch_size=16)
    assert cached["tiles"] == uncached["tiles"] == 7 * 7
    assert cached["tile_batches"] == 4
    # Level 2 alone runs blocks 4 and 5; the full forward runs 1+1+2+2+3+3 = 12 level-blocks.
    assert cached["block_evaluations_per_step"] == 4 * 2
    assert uncached["block_evaluations_per_step"] == 4 * 12
    assert cached["step_seconds"] > 0 and uncached["step_seconds"] > 0


def test_guidance_and_labels():
    model = tiny(num_classes=5)
    kwargs = dict(level_schedule=SamplingSteps(num_steps=[2, 1, 1]), overlap="", tile_batch_size=64)
    plain = sample_videos(model, 2, seed=0, labels=[1, 3], **kwargs)
    same = sample_videos(model, 2, seed=0, labels=[1, 3], guidance_scale=1.0, **kwargs)
    assert torch.equal(plain, same)
    guided = sample_videos(model, 2, seed=0, labels=[1, 3], guidance_scale=3.0, **kwargs)
    assert not torch.equal(plain, guided)
    guided_uncached = sample_videos(model, 2, seed=0, labels=[1, 3], guidance_scale=3.0, cached=False, **kwargs)
    assert torch.equal(guided, guided_uncached)
    other = sample_videos(model, 2, seed=0, labels=[2, 2], **kwargs)
    assert not torch.equal(plain, other)
    # No labels: random ones from the seed, reproducible.
    assert torch.equal(sample_videos(model, 2, seed=4, **kwargs), sample_videos(model, 2, seed=4, **kwargs))


def test_guidance_formula_on_one_tile():
    model = tiny(num_classes=3)
    tm = HPDMTileModel(model, cached=True, guidance_scale=2.5)
    x = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64)
    sigma = torch.full((2,), 1.5, dtype=torch.float64)
    coords = model.pyramid.coords(0, (0, 0, 0)).double().expand(2, 6)
    cond = {"label": torch.tensor([0, 2])}
    out = tm.denoise(x, sigma, coords, 0, None, cond)
    c = model(x[:, None], sigma[:, None], coords[:, None], cond=cond)[:, 0]
    u = model(x[:, None], sigma[:, None], coords[:, None], cond={"label": torch.tensor([3, 3])})[:, 0]
    torch.testing.assert_close(out, u + 2.5 * (c - u))


def test_text_guidance_runs():
    model = tiny(text_dim=6)
    text = torch.randn(2, 3, 6, dtype=torch.float64)
    cond = {"text": text, "text_mask": torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)}
    kwargs = dict(level_schedule=SamplingSteps(num_steps=[1, 1, 1]), overlap="", tile_batch_size=64)
    a = sample_videos(model, 2, seed=0, cond=cond, guidance_scale=2.0, **kwargs)
    b = sample_videos(model, 2, seed=0, cond=cond, guidance_scale=2.0, cached=False, **kwargs)
    assert torch.equal(a, b)


def test_bad_conditioning_errors():
    kwargs = dict(level_schedule=SamplingSteps(num_steps=[1, 1, 1]), overlap="")
    with pytest.raises(ValueError, match="out of range"):
        sample_videos(tiny(num_classes=5), 1, seed=0, labels=5, **kwargs)
    with pytest.raises(ValueError, match="out of range"):
        sample_videos(tiny(num_classes=5), 1, seed=0, labels=-1, **kwargs)
    with pytest.raises(ValueError, match="not class-conditional"):
        sample_videos(tiny(), 1, seed=0, labels=0, **kwargs)
    with pytest.raises(ValueError, match="not text-conditional"):
        sample_videos(tiny(num_classes=5), 1, seed=0, cond={"text": torch.zeros(1, 2, 4)}, **kwargs)


def test_given_levels_are_kept_and_condition_the_rest():
    model = tiny()
    pyramid = model.pyramid

    def run(given):
        return sample_pyramid(
            HPDMTileModel(model), pyramid, model.schedule.sigma_range, model.schedule.context_sigma,
            VideoNoise([1, 2], dtype=torch.float64), level_schedule=FAST,
            overlap_sampler=OverlapSampler("hw", tile_batch_size=TILE_BATCH), return_levels=True,
            given_levels=given,
        )

    gen = torch.Generator().manual_seed(0)
    g0 = torch.rand(2, 3, *pyramid.resolutions[0], generator=gen, dtype=torch.float64) * 2 - 1
    g1 = torch.rand(2, 3, *pyramid.resolutions[1], generator=gen, dtype=torch.float64) * 2 - 1
    one = run([g0])
    assert torch.equal(one[0], g0) and len(one) == pyramid.num_levels
    two = run([g0, g1])
    assert torch.equal(two[0], g0) and torch.equal(two[1], g1)
    # Same noise stream, different coarse video: the generated finer level depends on it.
    assert not torch.allclose(run([-g0])[1], one[1])
    with pytest.raises(ValueError, match="leave nothing to generate"):
        run([g0, g1, torch.zeros(2, 3, *pyramid.resolutions[2], dtype=torch.float64)])
    with pytest.raises(ValueError, match=r"given level 0 has shape"):
        run([g0[:, :, :1]])
    with pytest.raises(ValueError, match="holds 2 videos for num_videos=3"):
        sample_videos(model, 3, seed=0, level_schedule=FAST, given_levels=[g0])
    out = sample_videos(model, 2, seed=0, level_schedule=FAST, overlap="hw", given_levels=[g0])
    assert out.shape == (2, *pyramid.target_res, 3)


def _level0_inputs(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 2, 4, 4, generator=gen, dtype=torch.float64)
    coords = model.pyramid.coords(0, (0, 0, 0)).double().expand(3, 6)
    return x, coords


def _level0(model, x, coords, sigma, labels):
    return model(x[:, None], sigma[:, None], coords[:, None], cond={"label": labels})[:, 0]


def test_autoguidance_formula_with_and_without_cfg():
    from hpdm.samplers import Autoguidance

    good, weak = tiny(num_classes=3, seed=0), tiny(num_classes=3, seed=1)
    x, coords = _level0_inputs(good)
    sigma = torch.full((3,), 1.5, dtype=torch.float64)
    labels, null = torch.tensor([0, 2, 1]), torch.tensor([3, 3, 3])
    out = HPDMTileModel(good, autoguidance=Autoguidance(weak, scale=2.5)).denoise(x, sigma, coords, 0, None, {"label": labels})
    g, w = _level0(good, x, coords, sigma, labels), _level0(weak, x, coords, sigma, labels)
    torch.testing.assert_close(out, w + 2.5 * (g - w), rtol=1e-12, atol=1e-12)
    # With classifier-free guidance g = 2 both models are guided first.
    out = HPDMTileModel(good, guidance_scale=2.0, autoguidance=Autoguidance(weak, scale=2.5)).denoise(
        x, sigma, coords, 0, None, {"label": labels}
    )
    g_cfg = _level0(good, x, coords, sigma, null) + 2.0 * (g - _level0(good, x, coords, sigma, null))
    w_cfg = _level0(weak, x, coords, sigma, null) + 2.0 * (w - _level0(weak, x, coords, sigma, null))
    torch.testing.assert_close(out, w_cfg + 2.5 * (g_cfg - w_cfg), rtol=1e-12, atol=1e-12)


def test_autoguidance_sigma_interval_and_levels():
    from hpdm.samplers import Autoguidance

    good, weak = tiny(num_classes=3, seed=0), tiny(num_classes=3, seed=1)
    x, coords = _level0_inputs(good)
    labels = torch.tensor([0, 2, 1])
    sigma = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)  # below, inside, above [1, 4]
    tm = HPDMTileModel(good, autoguidance=Autoguidance(weak, scale=3.0, sigma_min=1.0, sigma_max=4.0))
    out = tm.denoise(x, sigma, coords, 0, None, {"label": labels})
    g, w = _level0(good, x, coords, sigma, labels), _level0(weak, x, coords, sigma, labels)
    assert torch.equal(out[[0, 2]], g[[0, 2]])
    torch.testing.assert_close(out[1], w[1] + 3.0 * (g[1] - w[1]), rtol=1e-12, atol=1e-12)
    # Outside the interval the weak model is not run at all.
    before = weak.level_block_evaluations
    tm.denoise(x, torch.full((3,), 8.0, dtype=torch.float64), coords, 0, None, {"label": labels})
    assert weak.level_block_evaluations == before
    # A level it does not cover: the guided model alone.
    only1 = HPDMTileModel(good, autoguidance=Autoguidance(weak, scale=3.0, levels=[1]))
    assert torch.equal(only1.denoise(x, sigma, coords, 0, None, {"label": labels}), g)


def test_autoguidance_sampling():
    import copy

    from hpdm.samplers import Autoguidance

    good, weak = tiny(num_classes=5, seed=0), tiny(num_classes=5, seed=1)
    kwargs = dict(labels=[1, 3], level_schedule=SamplingSteps(num_steps=[2, 2, 2]), overlap="fhw", tile_batch_size=64)
    plain = sample_videos(good, 2, seed=0, **kwargs)
    # Scale 1, or a weak model identical to the guided one, change nothing.
    assert torch.equal(plain, sample_videos(good, 2, seed=0, autoguidance=Autoguidance(weak, scale=1.0), **kwargs))
    twin = copy.deepcopy(good)
    assert torch.equal(plain, sample_videos(good, 2, seed=0, autoguidance=Autoguidance(twin, scale=3.0, levels=[0, 1, 2]), **kwargs))
    # On every level, cached (each model with its own cached context) == uncached.
    guide = Autoguidance(weak, scale=2.0, levels=[0, 1, 2])
    weak.train()
    cached = sample_videos(good, 2, seed=0, autoguidance=guide, **kwargs)
    assert weak.training  # its mode is restored
    uncached = sample_videos(good, 2, seed=0, autoguidance=guide, cached=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)
    # Offloading moves both models' cached contexts (to the CPU here, so the videos stay the same).
    assert torch.equal(cached, sample_videos(good, 2, seed=0, autoguidance=guide, offload_cache=True, **kwargs))
    x_anc = torch.randn(2, 1, 3, 2, 4, 4, dtype=torch.float64)
    coords = good.pyramid.coords(1, (0, 0, 0)).double().expand(2, 6)
    context = HPDMTileModel(good, autoguidance=guide).context(1, x_anc, coords[:, None], coords, {"label": torch.tensor([1, 3])})
    from hpdm.samplers.tiled import move

    moved = move(context, "meta")
    assert all(t.device.type == "meta" for part in (moved.main, moved.weak) for t in _tensors(part))
    with_cfg = sample_videos(good, 2, seed=0, autoguidance=guide, guidance_scale=2.0, **kwargs)
    assert torch.equal(with_cfg, sample_videos(good, 2, seed=0, autoguidance=guide, guidance_scale=2.0, cached=False, **kwargs))


def test_autoguidance_refuses_a_mismatched_model():
    from hpdm.samplers import Autoguidance

    good = tiny(num_classes=5)
    with pytest.raises(ValueError, match="num_classes 3 != 5"):
        HPDMTileModel(good, autoguidance=Autoguidance(tiny(num_classes=3)))
    other = HPDM(target_res=(2, 8, 8), patch_res=(2, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
                 num_latents=4, num_blocks=2, latent_layers_per_block=1, head_dim=8, num_classes=5)
    with pytest.raises(ValueError, match="target_res"):
        HPDMTileModel(good, autoguidance=Autoguidance(other))
    with pytest.raises(ValueError, match="level 3 is not in"):
        HPDMTileModel(good, autoguidance=Autoguidance(tiny(num_classes=5, seed=1), levels=[3]))
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        Autoguidance(good, sigma_min=4.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="finite"):
        Autoguidance(good, scale=float("nan"))
    with pytest.raises(ValueError, match="levels must be >= 0"):
        Autoguidance(good, levels=[0, -1])


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return [t for o in vars(obj).values() for t in _tensors(o)] if hasattr(obj, "__dict__") else []
