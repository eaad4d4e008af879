"""LAMB against its equations (You et al., Alg. 2), param groups, LR schedule, EMA (paper Sec. 4.6)."""

import math

import pytest
import torch
from torch import nn

from hpdm.trainers.ema import EMA
from hpdm.trainers.lamb import Lamb, param_groups
from hpdm.trainers.lr_schedule import warmup_cosine


def reference_lamb(x, grads, lr, b1, b2, eps, wd, adapt=True):
    """Direct transcription of LAMB's update equations, in float64, one tensor."""
    x = x.double().clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        u = m_hat / (torch.sqrt(v_hat) + eps) + wd * x
        trust = 1.0
        if adapt:
            wn, un = x.norm().item(), u.norm().item()
            trust = wn / un if wn > 0 and un > 0 else 1.0
        x = x - lr * trust * u
    return x


@pytest.mark.parametrize("adapt,wd", [(True, 0.01), (True, 0.0), (False, 0.01)])
def test_lamb_matches_equations(adapt, wd):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(7, 5, generator=g)
    grads = [torch.randn(7, 5, generator=g) * (i + 1) for i in range(6)]
    p = nn.Parameter(x0.clone())
    opt = Lamb([p], lr=0.005, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd, layer_adaptation=adapt)
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    ref = reference_lamb(x0, grads, 0.005, 0.9, 0.99, 1e-6, wd, adapt)
    torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-6)


class _ShardLike(nn.Parameter):
    """A parameter with ``to_local`` (as FSDP's DTensors have), which sends LAMB down its per-tensor loop."""

    def to_local(self):
        return self


@pytest.mark.parametrize("max_trust", [None, 0.5])
def test_lamb_multi_tensor_update_equals_the_per_tensor_loop(max_trust):
    g = torch.Generator().manual_seed(1)
    shapes = [(6, 4), (4,), (3, 2, 2), (5,)]
    init = [torch.randn(s, generator=g) for s in shapes]
    init[3].zero_()  # a zero tensor: trust 1
    plain = [nn.Parameter(t.clone()) for t in init]
    looped = [_ShardLike(t.clone()) for t in init]
    make = lambda ps: Lamb([{"params": ps[:3]}, {"params": ps[3:], "weight_decay": 0.0, "layer_adaptation": False}],  # noqa: E731
                           lr=0.01, weight_decay=0.01, max_trust_ratio=max_trust)
    opt_plain, opt_loop = make(plain), make(looped)
    for step in range(5):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for ps in (plain, looped):
            for p, gr in zip(ps, grads):
                p.grad = None if (step == 2 and p is ps[1]) else gr.clone()  # a step without a gradient
        opt_plain.step()
        opt_loop.step()
    for a, b in zip(plain, looped):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    for a, b in zip(opt_plain.state_dict()["state"].values(), opt_loop.state_dict()["state"].values()):
        assert a["step"].item() == b["step"].item()
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=1e-6, atol=0)
    assert opt_plain.state_dict()["state"][1]["step"].item() == 4  # skipped once, like the loop


def test_lamb_zero_weights_trust_one_and_skips_gradless():
    p = nn.Parameter(torch.zeros(4))
    q = nn.Parameter(torch.ones(3))
    opt = Lamb([p, q], lr=0.1, weight_decay=0.0)
    p.grad = torch.ones(4)
    opt.step()
    # ||x|| = 0 -> trust 1: first Adam-like step moves by lr * 1/(1+eps).
    torch.testing.assert_close(p.detach(), torch.full((4,), -0.1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.detach(), torch.ones(3))
    sd = opt.state_dict()
    assert all(isinstance(v, torch.Tensor) for s in sd["state"].values() for v in s.values())


def test_lamb_grows_a_tensor_at_most_by_one_plus_lr_per_step():
    """Why zero-initialised tensors must not be layer-adapted: after its first step a tensor that starts
    at zero has norm ~lr_1 * sqrt(n) and ||x_t+1|| <= (1 + lr_t) ||x_t|| whatever the gradients."""
    g = torch.Generator().manual_seed(0)
    p = nn.Parameter(torch.zeros(12, 8))
    opt = Lamb([p], lr=0.005, weight_decay=0.01)
    lrs = [0.005 * min(1.0, t / 20) for t in range(1, 61)]
    norms = []
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.randn(12, 8, generator=g) * 100
        opt.step()
        norms.append(p.detach().norm().item())
    assert norms[0] == pytest.approx(lrs[0] * math.sqrt(p.numel()), rel=1e-4)
    for t in range(1, len(lrs)):
        assert norms[t] <= (1 + lrs[t]) * norms[t - 1] * (1 + 1e-6)
    assert norms[-1] < 0.01


def test_hpdm_output_projection_trains_at_the_full_rate():
    """The detokenizer's zero-initialised projection is not layer-adapted, so it leaves zero at Adam's
    pace; with adaptation it would stay below the bound of the test above (checked by removing it from
    ``HPDM.no_weight_decay_names``)."""
    from model_utils import hierarchy_batch, tiny_model

    from hpdm.core.loss import diffusion_loss
    from hpdm.trainers.lamb import build_optimizer

    model = tiny_model()
    names = model.no_weight_decay_names()
    assert {"detokenizer.proj.weight", "detokenizer.proj.bias"} <= names
    weight = model.detokenizer.proj.weight
    nn.init.zeros_(weight)  # as HPDM builds it (tiny_model randomises it for the other tests)
    opt = build_optimizer(model)
    x0, coords, _ = hierarchy_batch(model, batch=2)
    gen = torch.Generator().manual_seed(0)
    lrs = [0.005 * min(1.0, t / 10) for t in range(1, 21)]
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        loss, _ = diffusion_loss(model, x0, coords, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lamb_bound = lrs[0] * math.sqrt(weight.numel()) * math.prod(1 + lr for lr in lrs[1:])
    assert weight.detach().norm().item() > 20 * lamb_bound


def test_param_groups_exclude_the_names_given():
    """The exclusions are the names given (HPDM's no_weight_decay_names): no weight decay, no layer
    adaptation; build_optimizer takes them from the model, and a module without them has none."""
    from hpdm.trainers.lamb import build_optimizer

    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups(m, 0.01, {"0.weight", "1.bias", "2.weight", "2.bias"})
    assert {id(p) for p in groups[0]["params"]} == {id(m[1].weight)}
    assert groups[0]["weight_decay"] == 0.01 and groups[0]["layer_adaptation"] is True
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["layer_adaptation"] is False
    assert len(param_groups(m, 0.01, ())) == 1
    assert len(build_optimizer(m).param_groups) == 1

    m.no_weight_decay_names = lambda: {"1.bias"}
    decayed, excluded = build_optimizer(m).param_groups
    assert len(decayed["params"]) == 4 and [id(p) for p in excluded["params"]] == [id(m[1].bias)]


def test_warmup_cosine_shape():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.005)
    sched = warmup_cosine(opt, total_steps=20, warmup_steps=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001)
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))  # linear warm-up
    assert lrs[5] == pytest.approx(0.005)
    assert all(a > b for a, b in zip(lrs[5:19], lrs[6:20]))  # cosine decay
    assert lrs[5 + 15 // 2] == pytest.approx(0.005 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))


def test_ema_updates_every_tensor_and_roundtrips():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(m, decay=0.9, warmup=False)
    before = ema.state_dict()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    m(torch.randn(8, 3))  # moves the BatchNorm running stats (buffers are copied)
    ema.update(m)
    after = ema.state_dict()
    for name in before:
        if name.endswith("num_batches_tracked"):
            continue
        assert not torch.equal(before[name], after[name]), name
    torch.testing.assert_close(after["0.weight"], before["0.weight"] + 0.1)
    other = EMA(m, decay=0.9)
    other.load_state_dict(after, num_updates=1)
    for k, v in other.state_dict().items():
        assert torch.equal(v, after[k])


def test_ema_saves_what_the_module_saves():
    """A non-persistent buffer (derived from the module's arguments) stays out of the EMA, as out of
    ``state_dict``: otherwise ``ema.safetensors`` would not load into the model it came from."""
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    m.register_buffer("derived", torch.ones(2), persistent=False)
    ema = EMA(m, decay=0.9)
    m(torch.randn(8, 3))
    ema.update(m)
    assert set(ema.state_dict()) == set(m.state_dict())
    m.load_state_dict(ema.state_dict())
