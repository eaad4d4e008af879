"""hpdm.diagnostics.denoising: the per-level denoising ratio is exact for known denoisers."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from hpdm.diagnostics.denoising import denoising_table, level_denoising_ratio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = [0.002, 0.004, 0.008]


class RecordingDenoiser:
    """Returns the input (identity) or the clean patches (oracle); records what it was called with."""

    def __init__(self, clean=None):
        self.clean = clean
        self.schedule = SimpleNamespace(context_sigma=lambda level: CONTEXT[level])
        self.calls = []

    def __call__(self, *, x, sigma, coords, cond=None):  # keywords only: the order of HPDM.forward is not pinned
        self.calls.append((x.shape, coords.shape, sigma.clone(), cond))
        return x.clone() if self.clean is None else self.clean[:, : x.shape[1]].clone()


def hierarchies(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, 3, 2, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1, torch.rand(4, 3, 6, dtype=torch.float64)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_identity_denoiser_gives_the_noise_energy_and_ancestors_get_context_noise(level):
    x0, coords = hierarchies()
    model = RecordingDenoiser()
    ratio = level_denoising_ratio(model, x0, coords, level, 0.3, cond={"label": 1}, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(x0[:, : level + 1].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert ratio == pytest.approx(noise[:, level].square().mean().item(), rel=1e-12)
    (x_shape, c_shape, sigma, cond), = model.calls
    assert x_shape[1] == c_shape[1] == level + 1  # finer levels are not run
    assert sigma.tolist() == [CONTEXT[:level] + [0.3]] * 4 and cond == {"label": 1}


def test_oracle_denoiser_gives_zero_for_every_level_and_sigma():
    x0, coords = hierarchies(1)
    table = denoising_table(RecordingDenoiser(clean=x0), x0, coords, [0.01, 1.0, 10.0])
    assert table == [[0.0] * 3] * 3


def test_bad_level_or_sigma_is_named():
    x0, coords = hierarchies()
    with pytest.raises(ValueError, match="level 3 out of range"):
        level_denoising_ratio(RecordingDenoiser(), x0, coords, 3, 0.1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        level_denoising_ratio(RecordingDenoiser(), x0, coords, 0, 0.0)


@pytest.mark.slow
def test_cli_on_the_shipped_quickstart_model_denoises():
    out = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.diagnose", "denoising", "--model=pretrained/quickstart", "--num_videos=2",
         "--sigmas=0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(0 < float(r[1]) < 0.5 for r in rows), out.stdout  # a trained model removes most noise
