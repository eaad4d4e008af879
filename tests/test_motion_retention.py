"""Motion retention of a level-0 denoiser: exact on denoisers whose answer is known, and the CLI on the
shipped quickstart model."""

import json
import os
import subprocess
import sys

import copy

import pytest
import torch
import torch.nn.functional as F

from hpdm.data.synthetic import SyntheticVideos
from hpdm.diagnostics.motion_retention import format_table, measure, sample_level0, size_ratios, travels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clean(n=6, res=(4, 16, 16)):
    source = SyntheticVideos(radius=(0.24, 0.32), texture=0.0)
    rendered = [source.render(100 + i, res) for i in range(n)]
    return torch.stack([v for v, _, _ in rendered]), torch.tensor([l for _, l, _ in rendered])


def test_real_level0_videos_move():
    clean, _ = _clean()
    assert (travels(clean) > 0.2).all()


@pytest.mark.parametrize("sigma", [0.5, 4.0])
def test_a_denoiser_that_returns_the_video_keeps_all_motion(sigma):
    clean, labels = _clean()
    oracle = lambda x, s, y: clean  # noqa: E731
    (r,) = measure(oracle, clean, labels, [sigma], repeats=2)
    assert r.median_ratio == pytest.approx(1.0, abs=1e-12) and r.videos == 2 * len(clean)
    assert r.median_travel == pytest.approx(r.median_real_travel, abs=1e-12)
    assert r.frame_mse == [0.0] * clean.shape[2]


def test_a_denoiser_that_draws_the_object_still_keeps_none():
    clean, labels = _clean()
    still = lambda x, s, y: clean[:, :, :1].expand_as(clean)  # noqa: E731  first frame everywhere
    (r,) = measure(still, clean, labels, [1.0], repeats=1)
    assert r.median_ratio == pytest.approx(0.0, abs=1e-9) and r.median_travel == pytest.approx(0.0, abs=1e-9)
    expected = (clean[:, :, :1].double() - clean.double()).square().mean(dim=(0, 1, 3, 4))
    assert r.frame_mse[0] == 0.0 and r.frame_mse == pytest.approx(expected.tolist(), rel=1e-12)
    assert r.frame_mse[-1] > r.frame_mse[1] > 0  # the farther from frame 0, the larger the error
    assert "ratio" in format_table([r]) and "frame mse" in format_table([r])


def _place_oracle(clean, background, max_shift=10.0, step=0.5):
    """Denoiser that knows each frame's background and object look exactly, but not the object's place:
    per frame, the posterior mean over translations of the object layer (uniform prior over a wide
    window) - an independent reference for what the noisy input itself says about the motion."""
    layer = clean - background
    offs = torch.arange(-max_shift, max_shift + step / 2, step, dtype=clean.dtype)
    dy, dx = (g.flatten() for g in torch.meshgrid(offs, offs, indexing="ij"))
    h, w = clean.shape[-2:]
    theta = torch.zeros(dx.numel(), 2, 3, dtype=clean.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -dx * 2 / w, -dy * 2 / h
    grid = F.affine_grid(theta, (dx.numel(), 3, h, w), align_corners=False)

    def denoise(x, sigma, labels):
        out = torch.empty_like(x)
        for n in range(x.shape[0]):
            for f in range(x.shape[2]):
                moved = F.grid_sample(layer[n, :, f][None].expand(dx.numel(), -1, -1, -1), grid, align_corners=False)
                cand = background[n, :, f][None] + moved
                logw = -((x[n, :, f][None] - cand) ** 2).flatten(1).sum(1) / (2 * float(sigma[n]) ** 2)
                out[n, :, f] = torch.einsum("k,kchw->chw", torch.softmax(logw, 0), cand)
        return out

    return denoise


def test_an_oracle_that_knows_all_but_the_place_keeps_the_motion_at_moderate_noise():
    """Where run 7 keeps 0.63 / 0.31 (sigma 1 / 2), the input alone supports about all of it."""
    source = SyntheticVideos(radius=(0.24, 0.32), texture=0.0)
    clean, background, labels = [], [], []
    for i in range(6):
        attrs = source.attributes(100 + i)
        video, label, _ = source.render_attributes(attrs, (4, 16, 16))
        hidden = copy.deepcopy(attrs)
        hidden["objects"][0]["radius"] = 1e-6  # the same clip without the object
        clean.append(video)
        background.append(source.render_attributes(hidden, (4, 16, 16))[0])
        labels.append(label)
    clean, background = torch.stack(clean).double(), torch.stack(background).double()
    results = measure(_place_oracle(clean, background), clean, torch.tensor(labels), [1.0, 2.0], repeats=2)
    assert all(r.median_ratio > 0.9 for r in results), results


def _cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "hpdm.cli.diagnose", "motion", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"),
    )


@pytest.mark.slow
def test_cli_on_the_shipped_quickstart_model(tmp_path):
    """The shipped model keeps nearly all motion at low noise and less at sigma 2 (run 8: 0.99 and 0.70)."""
    out = _cli("--model=pretrained/quickstart", "--num_videos=12", "--sigmas=0.25,2", f"--output={tmp_path / 'm.json'}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["sigma"]: r for r in json.loads((tmp_path / "m.json").read_text())}
    assert set(rows) == {0.25, 2.0} and rows[0.25]["videos"] == 24
    assert len(rows[2.0]["frame_mse"]) == 4 and rows[2.0]["frame_mse"][0] > rows[0.25]["frame_mse"][0]
    assert rows[0.25]["median_ratio"] > 0.8
    assert rows[2.0]["median_ratio"] < rows[0.25]["median_ratio"]
    assert "sigma    ratio" in out.stdout


@pytest.mark.slow
def test_cli_refuses_start_sigmas_without_sampling():
    out = _cli("--model=pretrained/quickstart", "--sample_from_sigmas=2")
    assert out.returncode != 0 and "--sample_from_sigmas needs --sample_steps" in out.stderr


@pytest.mark.slow
def test_cli_rejects_an_unconditional_model(tmp_path):
    from model_utils import write_export

    write_export(tmp_path, target_res=(2, 16, 16), patch_res=(2, 8, 8), token_size=(1, 4, 4), token_dim=16,
                 latent_dim=16, num_latents=4, num_blocks=2, latent_layers_per_block=1, head_dim=8)
    out = _cli(f"--model={tmp_path}")
    assert out.returncode != 0 and "class-conditional" in out.stderr


def test_rows_do_not_depend_on_the_sigma_list():
    clean, labels = _clean()
    blur = lambda x, s, y: 0.5 * (x + clean)  # noqa: E731  a denoiser whose answer depends on the draw
    both = measure(blur, clean, labels, [0.25, 0.5], repeats=2, seed=3)
    alone = measure(blur, clean, labels, [0.5], repeats=2, seed=3)
    assert both[1] == alone[0] and alone[0].videos > 0


def test_sampling_with_a_denoiser_that_knows_the_video_ends_on_it():
    """Heun on ``D(x) = x0`` contracts ``x - x0`` by ``sigma_next / sigma`` per step: it ends at
    ``x0 + (sigma_min / sigma_max) n``, so the samples travel as far as the videos."""
    clean, labels = _clean()
    oracle = lambda x, s, y: clean  # noqa: E731
    sampled = sample_level0(oracle, labels, clean.shape[1:], (0.002, 80.0), num_steps=8, seed=1)
    torch.testing.assert_close(sampled, clean, rtol=0, atol=0.002 / 80.0 * 6)
    assert travels(sampled) == pytest.approx(travels(clean), abs=1e-9)
    assert size_ratios(sampled) == pytest.approx(size_ratios(clean), abs=1e-9)
    still = lambda x, s, y: clean[:, :, :1].expand_as(clean)  # noqa: E731
    sampled = sample_level0(still, labels, clean.shape[1:], (0.002, 80.0), num_steps=8)
    assert travels(sampled) == pytest.approx([0.0] * len(clean), abs=1e-9)


def test_sampling_from_noised_videos_starts_there():
    """From ``videos + sigma n``, Heun with ``D(x) = x0`` ends on the videos (the residual shrinks
    by ``sigma_next / sigma`` per step) and never evaluates above ``sigma``."""
    clean, labels = _clean()
    calls = []

    def oracle(x, s, y):
        calls.append(float(s[0]))
        return clean

    sampled = sample_level0(oracle, labels, clean.shape[1:], (0.002, 80.0), num_steps=16, start=(clean, 3.0))
    torch.testing.assert_close(sampled, clean, rtol=0, atol=0.002 / 3.0 * 6)
    assert calls[0] == 3.0 and max(calls) == 3.0  # no step above the start
    with pytest.raises(ValueError, match="do not match"):
        sample_level0(oracle, labels[:2], clean.shape[1:], (0.002, 80.0), start=(clean, 3.0))


@pytest.mark.slow
def test_cli_samples_level_0_on_request(tmp_path):
    out = _cli("--model=pretrained/quickstart", "--num_videos=4", "--sigmas=1", "--sample_steps=4", "--sample_from_sigmas=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "level-0 samples, 4 Heun steps" in out.stdout and "from noise" in out.stdout
    assert "from the videos at sigma 2" in out.stdout and "(ratio" in out.stdout and "size ratio" in out.stdout


@pytest.mark.slow
def test_cli_autoguidance_by_the_model_itself_changes_nothing(tmp_path):
    """x0_weak + w (x0 - x0_weak) is x0 when the weak model is the model: the same lines, digit for digit."""
    flags = ("--model=pretrained/quickstart", "--num_videos=4", "--sigmas=1,2", "--sample_steps=4")
    plain = _cli(*flags)
    guided = _cli(*flags, "--guide_model=pretrained/quickstart", "--autoguidance_scale=2.5")
    assert plain.returncode == 0 and guided.returncode == 0, guided.stderr[-3000:]
    assert guided.stdout == plain.stdout and "level-0 samples" in plain.stdout


@pytest.mark.slow
def test_autoguidance_by_run_7_moves_the_shipped_models_objects_further():
    """pretrained/quickstart_run7 draws objects nearly still; extrapolating level 0 away from it moves
    the shipped model's level-0 samples further (36 videos, 64 steps: travel 0.12 -> 0.37 at scale 3)."""
    import numpy as np

    from hpdm.core import load_pretrained
    from hpdm.diagnostics.label_sensitivity import level0_denoiser
    from hpdm.diagnostics.motion_retention import real_level0_videos
    from hpdm.samplers import Autoguidance

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weak, _ = load_pretrained(os.path.join(ROOT, "pretrained", "quickstart_run7"))
        model, config = load_pretrained(os.path.join(ROOT, "pretrained", "quickstart"))
        clean, labels = real_level0_videos(config.call(SyntheticVideos), model.pyramid, 1000, 12)
        sigma_range = model.schedule.sigma_range(0)
        plain = travels(sample_level0(level0_denoiser(model), labels, clean.shape[1:], sigma_range, 16))
        guided = level0_denoiser(model, autoguidance=Autoguidance(weak, scale=3.0))
        far = travels(sample_level0(guided, labels, clean.shape[1:], sigma_range, 16))
    finally:
        torch.set_num_threads(threads)
    assert np.nanmedian(far) > np.nanmedian(plain) + 0.1, (np.nanmedian(plain), np.nanmedian(far))
