"""LocalTokenMixing: identity at initialisation, exactly local, and a drop-in for a trained model."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from hpdm.layers import LocalTokenMixing, Tokenizer
from hpdm.trainers.checkpoint import load_matching

from model_utils import hierarchy_batch, tiny_model


def _randomised(grid, dim, kernel, seed=0):
    torch.manual_seed(seed)
    mixing = LocalTokenMixing(grid, dim, kernel).double()
    torch.nn.init.normal_(mixing.out.weight, std=0.3)
    return mixing


def test_starts_as_the_identity():
    mixing = LocalTokenMixing((2, 3, 4), 8, (3, 3, 3)).double()
    tokens = torch.randn(2, 24, 8, dtype=torch.float64)
    assert torch.equal(mixing(tokens), tokens)


@settings(max_examples=40, deadline=None)
@given(
    grid=st.tuples(*(st.integers(1, 5) for _ in range(3))),
    kernel=st.tuples(*(st.sampled_from([1, 3, 5]) for _ in range(3))),
    data=st.data(),
)
def test_a_token_reaches_exactly_its_kernel_neighbourhood(grid, kernel, data):
    mixing = _randomised(grid, 4, kernel)
    t, h, w = grid
    pos = tuple(data.draw(st.integers(0, g - 1)) for g in grid)
    tokens = torch.randn(1, t * h * w, 4, dtype=torch.float64)
    bumped = tokens.clone()
    bumped[0, (pos[0] * h + pos[1]) * w + pos[2]] += 1.0
    with torch.no_grad():
        change = (mixing(bumped) - mixing(tokens)).abs().sum(-1).reshape(t, h, w)
    reach = torch.zeros(t, h, w, dtype=torch.bool)
    box = tuple(slice(max(0, p - k // 2), p + k // 2 + 1) for p, k in zip(pos, kernel))
    reach[box] = True
    assert (change[~reach] == 0).all()  # row-major (t, h, w) order kept, nothing leaks past the kernel
    assert change[pos] > 0


def test_bad_kernel_and_grid_raise():
    with pytest.raises(ValueError, match="three odd sizes"):
        LocalTokenMixing((2, 2, 2), 8, (2, 3, 3))
    with pytest.raises(ValueError, match="three odd sizes"):
        LocalTokenMixing((2, 2, 2), 8, (3, 3))
    with pytest.raises(ValueError, match="token grid"):
        LocalTokenMixing((2, 2, 2), 8, (3, 3, 3))(torch.zeros(1, 9, 8))


def test_tokenizer_applies_it_after_the_embedding():
    plain = Tokenizer(3, 8, (2, 4, 4), (1, 2, 2))
    mixed = Tokenizer(3, 8, (2, 4, 4), (1, 2, 2), mixing_kernel=(1, 3, 3))
    mixed.load_state_dict(plain.state_dict(), strict=False)
    video = torch.randn(2, 3, 2, 4, 4)
    assert plain.mixing is None and torch.equal(mixed(video), plain(video))
    torch.nn.init.normal_(mixed.mixing.out.weight)
    assert not torch.allclose(mixed(video), plain(video))


def test_zero_initialised_output_is_exempt_from_layer_adaptation():
    names = tiny_model(token_mixing=(3, 3, 3)).no_weight_decay_names()
    assert {"tokenizer.mixing.out.weight", "tokenizer.mixing.out.bias", "detokenizer.proj.weight"} <= names
    assert "tokenizer.mixing.hidden.weight" not in names and "tokenizer.mixing.conv.weight" not in names


def test_block_mixers_are_exempt_from_layer_adaptation_too():
    model = tiny_model(block_mixing=(1, 3, 3))
    names = model.no_weight_decay_names()
    assert len(model.block_mixers) == model.scheduler.num_blocks
    for b in range(model.scheduler.num_blocks):
        assert {f"block_mixers.{b}.out.weight", f"block_mixers.{b}.out.bias"} <= names
        assert f"block_mixers.{b}.conv.weight" not in names
    x, coords, sigma = hierarchy_batch(model)
    with torch.no_grad():
        before = model(x, sigma, coords)
        torch.nn.init.zeros_(model.block_mixers[-1].out.weight)
        torch.nn.init.zeros_(model.block_mixers[-1].out.bias)
        assert not torch.allclose(model(x, sigma, coords), before)  # the last block's mixer reaches the output


@pytest.mark.parametrize(
    "fusion, arch",
    [
        ("deep", dict(token_mixing=(3, 3, 3))),
        ("shallow", dict(token_mixing=(3, 3, 3))),
        ("deep", dict(token_mixing=(3, 3, 3), block_mixing=(3, 3, 3))),
    ],
)
def test_fine_tuning_a_model_without_it_starts_from_the_same_function(fusion, arch):
    trained = tiny_model(seed=1, fusion=fusion)
    grown = tiny_model(seed=2, fusion=fusion, **arch)
    for module in grown.modules():
        if isinstance(module, LocalTokenMixing):
            torch.nn.init.zeros_(module.out.weight)
    loaded, initialised = load_matching(grown, trained.state_dict())
    assert initialised and all(".mixing." in name or name.startswith("block_mixers.") for name in initialised)
    x, coords, sigma = hierarchy_batch(trained)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, sigma, coords), trained(x, sigma, coords), rtol=0, atol=0)


def _reference_mixing(mixing, tokens):
    """``LocalTokenMixing`` written out plainly: a depthwise ``F.conv3d`` with autograd's own backward."""
    t, h, w = mixing.grid
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], t, h, w)
    conv = torch.nn.functional.conv3d(grid, mixing.conv.weight, mixing.conv.bias, padding=mixing.conv.padding,
                                      groups=tokens.shape[2])
    mixed = conv.flatten(2).transpose(1, 2)
    return tokens + mixing.out(mixing.act(mixing.hidden(mixing.norm(mixed))))


@pytest.mark.parametrize("grid, kernel", [((4, 8, 8), (3, 3, 3)), ((2, 3, 5), (1, 3, 3)), ((3, 4, 2), (5, 1, 3))])
def test_the_cheap_backward_matches_a_plain_convolution(grid, kernel):
    mixing = _randomised(grid, 6, kernel)
    torch.nn.init.normal_(mixing.conv.bias)
    tokens = torch.randn(3, grid[0] * grid[1] * grid[2], 6, dtype=torch.float64, requires_grad=True)
    weights = [tokens, *mixing.parameters()]
    out, expected = mixing(tokens), _reference_mixing(mixing, tokens)
    assert torch.equal(out, expected)  # the forward is the same convolution
    upstream = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, weights, upstream), torch.autograd.grad(expected, weights, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_cheap_backward_keeps_the_parameters_and_follows_float32_under_autocast():
    torch.manual_seed(0)
    mixing = LocalTokenMixing((2, 4, 4), 8, (3, 3, 3))
    assert {k: tuple(v.shape) for k, v in mixing.state_dict().items()} == {
        "conv.weight": (8, 1, 3, 3, 3), "conv.bias": (8,), "norm.weight": (8,), "norm.bias": (8,),
        "hidden.weight": (16, 8), "hidden.bias": (16,), "out.weight": (8, 16), "out.bias": (8,),
    }
    torch.nn.init.normal_(mixing.out.weight, std=0.3)
    tokens = torch.randn(2, 32, 8, requires_grad=True)
    weights = [tokens, *mixing.parameters()]
    want = torch.autograd.grad(_reference_mixing(mixing, tokens).square().sum(), weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mixing(tokens).float().square().sum()
    for got, expected in zip(torch.autograd.grad(loss, weights), want):
        assert got.dtype == torch.float32
        assert (got - expected).abs().max() <= 0.05 * expected.abs().max()  # bfloat16 rounding only
