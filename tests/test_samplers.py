"""EDM steppers and level schedules: k-diffusion oracle (s_churn = 0), EDM Algorithm 2 in float64.

k-diffusion is an optional test-only dependency (``pip install --no-deps k-diffusion``). Its package
``__init__`` imports training extras (scikit-image, torchvision, ...), so when a plain import fails
the test loads only ``k_diffusion/sampling.py`` by file path, with stand-ins for the few imports the
samplers under test never touch (``torchdiffeq``, ``torchsde``, its sibling ``utils``).
"""

import importlib.util
import math
import os
import sys
import types

import pytest
import torch

from hpdm.samplers import SamplingSteps, karras_sigmas, sample_euler, sample_heun


def _gaussian_denoiser(mu, s2):
    """Optimal denoiser for data ~ N(mu, s2) per pixel: E[x0 | x] = (s2 x + sigma^2 mu) / (s2 + sigma^2)."""

    def denoise(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        while sigma.dim() < x.dim() and sigma.dim() > 0:
            sigma = sigma[..., None]
        return (s2 * x + sigma**2 * mu) / (s2 + sigma**2)

    return denoise


def _mixture_denoiser(a=0.7):
    """Optimal denoiser for data = +-a with probability 1/2 per pixel: a tanh(a x / sigma^2)."""

    def denoise(x, sigma):
        return a * torch.tanh(a * x / float(sigma) ** 2)

    return denoise


def _load_kdiffusion_sampling(monkeypatch):
    try:
        import k_diffusion.sampling as sampling  # the whole package, when its extras are installed

        return sampling
    except Exception:
        pass
    spec = importlib.util.find_spec("k_diffusion")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion not installed (pip install --no-deps k-diffusion)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "sampling.py")
    for name, attrs in (("torchdiffeq", {"odeint": None}), ("torchsde", {"BrownianTree": object})):
        try:
            importlib.import_module(name)
        except ImportError:
            monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(__name__=name, **attrs))
    try:
        importlib.import_module("tqdm.auto")
    except ImportError:
        monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
        auto = types.ModuleType("tqdm.auto")
        auto.trange = lambda n, disable=None: range(n)
        auto.tqdm = lambda it, **_: it
        monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    pkg = types.ModuleType("_kdiffusion_stub")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_stub.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.dim())]
    pkg.utils = utils
    monkeypatch.setitem(sys.modules, "_kdiffusion_stub", pkg)
    monkeypatch.setitem(sys.modules, "_kdiffusion_stub.utils", utils)
    spec = importlib.util.spec_from_file_location("_kdiffusion_stub.sampling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_karras_sigmas_matches_edm_formula():
    s = karras_sigmas(8, 0.002, 80.0, 7.0)
    assert s.dtype == torch.float64 and s.shape == (9,) and s[-1] == 0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-12) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-12)
    assert (s[:-1][1:] < s[:-1][:-1]).all()
    i = 3
    expect = (80.0 ** (1 / 7) + i / 7 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert math.isclose(float(s[i]), expect, rel_tol=1e-12)
    assert karras_sigmas(1, 0.1, 5.0).tolist() == [5.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0, 0.1, 1.0)


def test_heun_matches_kdiffusion_at_zero_churn(monkeypatch):
    sampling = _load_kdiffusion_sampling(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 2, 4, 4, generator=gen, dtype=torch.float64) * 0.3
    denoise = _gaussian_denoiser(mu, 0.25)
    sigmas = karras_sigmas(12, 0.002, 80.0)
    x = torch.randn(2, 3, 2, 4, 4, generator=gen, dtype=torch.float64) * 80.0
    ours = sample_heun(denoise, x.clone(), sigmas, s_churn=0.0)
    theirs = sampling.sample_heun(lambda x_, s_: denoise(x_, s_), x.clone(), sigmas, disable=True, s_churn=0.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # The Karras schedule agrees too.
    torch.testing.assert_close(
        sigmas.float(), sampling.get_sigmas_karras(12, 0.002, 80.0, rho=7.0).float(), rtol=1e-6, atol=0
    )
    # Euler matches k-diffusion's sample_euler (deterministic).
    ours_e = sample_euler(denoise, x.clone(), sigmas)
    theirs_e = sampling.sample_euler(lambda x_, s_: denoise(x_, s_), x.clone(), sigmas, disable=True)
    torch.testing.assert_close(ours_e, theirs_e, rtol=1e-12, atol=1e-12)


def _edm_algorithm2(D, x0, t, eps, S_churn, S_tmin, S_tmax, S_noise):
    """EDM Algorithm 2 (Karras et al. 2022), line by line, float64; ``eps[i]`` is the i-th N(0, I) draw."""
    N = len(t) - 1
    x = x0.double()
    for i in range(N):
        t_i, t_next = float(t[i]), float(t[i + 1])
        gamma = min(S_churn / N, math.sqrt(2) - 1) if S_tmin <= t_i <= S_tmax else 0.0
        e = S_noise * eps[i]
        t_hat = t_i + gamma * t_i
        x_hat = x + math.sqrt(t_hat**2 - t_i**2) * e
        d = (x_hat - D(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d
        if t_next != 0:
            d_prime = (x_next - D(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


@pytest.mark.parametrize("denoiser", ["gaussian", "mixture"])
def test_heun_matches_edm_algorithm2_with_churn(denoiser):
    gen = torch.Generator().manual_seed(1)
    shape = (2, 3, 2, 4, 4)
    D = _gaussian_denoiser(torch.randn(shape, generator=gen).double() * 0.3, 0.2) if denoiser == "gaussian" else _mixture_denoiser()
    t = karras_sigmas(16, 0.002, 80.0)
    eps = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(16)]
    x0 = torch.randn(shape, generator=gen, dtype=torch.float64) * 80.0
    opts = dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
    ref = _edm_algorithm2(D, x0, t, eps, opts["s_churn"], opts["s_tmin"], opts["s_tmax"], opts["s_noise"])
    used = []

    def noise(i, x):
        used.append(i)
        return eps[i]

    ours = sample_heun(D, x0.clone(), t, noise=noise, **opts)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    # Noise is drawn only on churning steps (sigma inside [S_tmin, S_tmax]).
    assert used == [i for i in range(16) if 0.05 <= float(t[i]) <= 50.0]
    assert 0 < len(used) < 16
    # float32 run: same result to float tolerance.
    ours32 = sample_heun(D, x0.float(), t, noise=lambda i, x: eps[i].float(), **opts)
    torch.testing.assert_close(ours32.double(), ref, rtol=1e-3, atol=1e-3)


def test_optimal_denoiser_recovers_gaussian_moments():
    """Sanity of the ODE: sampling N(mu, s2) with its optimal denoiser gives that distribution."""
    gen = torch.Generator().manual_seed(2)
    D = _gaussian_denoiser(0.4, 0.09)
    x = torch.randn(20000, generator=gen, dtype=torch.float64) * 80.0
    out = sample_heun(D, x, karras_sigmas(32, 0.002, 80.0))
    assert abs(out.mean().item() - 0.4) < 0.01 and abs(out.std().item() - 0.3) < 0.01


def test_level_schedule_defaults_and_overrides():
    s = SamplingSteps()
    l0, l1, l2 = s.level(0), s.level(1), s.level(2)
    assert (l0.stepper, l0.num_steps) == ("heun", 128) and l0.s_churn > 0
    assert (l1.stepper, l1.num_steps, l1.s_churn) == ("euler", 64, 0.0)
    assert l2.num_steps == 32
    s = SamplingSteps(num_steps=[10, 3], steppers=["euler", "heun"], churn=[0.0, 5.0])
    assert [s.level(l).num_steps for l in range(3)] == [10, 3, 3]
    assert [s.level(l).stepper for l in range(3)] == ["euler", "heun", "heun"]
    assert s.level(2).s_churn == 5.0
    assert SamplingSteps(base_steps=4, step_decay=4).level(3).num_steps == 1
    with pytest.raises(ValueError, match="unknown stepper"):
        SamplingSteps(steppers=["dpm"])
