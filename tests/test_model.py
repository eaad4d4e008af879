"""The HPDM denoiser: coarse-to-fine flow, adaptive computation, cached path, bad input (Sec. 4.2-4.3)."""

import pytest
import torch

from hpdm.pyramid import Pyramid, sample_nested_offsets

from model_utils import hierarchy_batch, tiny_model

VARIANTS = [
    dict(),
    dict(num_levels_per_block=[3] * 6),
    dict(fusion="shallow"),
    dict(detach_context=True),
    dict(use_coords=False),
    dict(num_classes=5),
    dict(text_dim=8),
    dict(token_mixing=(3, 3, 3)),
    dict(block_mixing=(3, 3, 3)),
]


def _cond(model, batch):
    cond = {}
    if model.num_classes:
        cond["label"] = torch.tensor([1, model.num_classes])[:batch]
    if model.text_dim:
        cond["text"] = torch.randn(batch, 3, model.text_dim, dtype=torch.float64)
        cond["text_mask"] = torch.tensor([[True, True, False], [True, False, False]])[:batch]
    return cond or None


def _other_coords(model, coords, level, seed):
    """Coordinates of another valid nested patch at ``level`` (same ancestors)."""
    pyramid: Pyramid = model.pyramid
    new = coords.clone()
    gen = torch.Generator().manual_seed(seed)
    for b in range(coords.shape[0]):
        res = pyramid.resolutions[level - 1]
        parent = [round(coords[b, level - 1, 3 + a].item() * res[a]) for a in range(3)]
        up = pyramid.upscale(level)
        off = [u * o + int(torch.randint(0, u * p - p + 1, (1,), generator=gen)) for u, o, p in zip(up, parent, pyramid.patch_res)]
        new[b, level] = pyramid.coords(level, off).double()
    return new


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "deep-adaptive")
def test_coarse_to_fine_flow_is_exact(variant):
    model = tiny_model(**variant)
    x, coords, sigma = hierarchy_batch(model)
    cond = _cond(model, 2)
    with torch.no_grad():
        base = model(x, sigma, coords, cond=cond)
    for j in range(1, model.num_levels):
        x2, s2 = x.clone(), sigma.clone()
        x2[:, j:] += 0.3
        s2[:, j:] *= 2.0
        c2 = _other_coords(model, coords, j, seed=j)
        with torch.no_grad():
            out = model(x2, s2, c2, cond=cond)
        assert torch.equal(out[:, :j], base[:, :j]), f"levels below {j} changed"
        assert not torch.equal(out[:, j:], base[:, j:])
        # Gradients of the lower levels' outputs w.r.t. level j's input are exactly zero.
        xg = x.clone().requires_grad_(True)
        model(xg, sigma, coords, cond=cond)[:, :j].sum().backward()
        assert torch.count_nonzero(xg.grad[:, j:]) == 0
        assert torch.count_nonzero(xg.grad[:, :j]) > 0
    # Running the first n levels alone gives the same outputs as running all of them.
    for n in range(1, model.num_levels):
        with torch.no_grad():
            part = model(x[:, :n], sigma[:, :n], coords[:, :n], cond=cond)
        torch.testing.assert_close(part, base[:, :n], rtol=0, atol=1e-10)


def test_higher_levels_depend_on_context():
    model = tiny_model()
    x, coords, sigma = hierarchy_batch(model)
    with torch.no_grad():
        base = model(x, sigma, coords)
        x2 = x.clone()
        x2[:, 0] += 0.3
        out = model(x2, sigma, coords)
    assert not torch.equal(out[:, 2], base[:, 2]), "level 2 ignores its context"


@pytest.mark.parametrize("loads, expected", [([1, 1, 2, 2, 3, 3], 12), ([3] * 6, 18)])
def test_adaptive_computation_counts(loads, expected):
    model = tiny_model(num_levels_per_block=loads)
    x, coords, sigma = hierarchy_batch(model)
    model.level_block_evaluations = 0
    with torch.no_grad():
        model(x, sigma, coords)
    assert model.level_block_evaluations == expected


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(fusion="shallow"), dict(num_levels_per_block=[3] * 6), dict(num_classes=5), dict(token_mixing=(1, 3, 3)),
     dict(block_mixing=(1, 3, 3), token_mixing=(3, 3, 3))],
)
def test_cached_level_equals_full_forward(variant):
    model = tiny_model(**variant)
    x, coords, sigma = hierarchy_batch(model)
    cond = _cond(model, 2)
    with torch.no_grad():
        full = model(x, sigma, coords, cond=cond)
        for level in range(model.num_levels):
            cache = None
            if level:
                cache = model.context_cache(x[:, :level], sigma[:, :level], coords[:, :level], coords=coords[:, level], cond=cond)
            model.level_block_evaluations = 0
            out = model.denoise_level(x[:, level], sigma[:, level], coords[:, level], level=level, cache=cache, cond=cond)
            torch.testing.assert_close(out, full[:, level], rtol=0, atol=1e-10)
            assert model.level_block_evaluations == len(model.scheduler.blocks_for_level(level))


def test_bad_inputs_raise_named_errors():
    model = tiny_model(num_classes=3)
    x, coords, sigma = hierarchy_batch(model)
    with pytest.raises(ValueError, match="levels"):
        model(torch.cat([x, x[:, :1]], 1), torch.cat([sigma, sigma[:, :1]], 1), torch.cat([coords, coords[:, :1]], 1))
    with pytest.raises(ValueError, match="patches must be"):
        model(x[..., :4], sigma, coords)
    with pytest.raises(ValueError, match="coords must be"):
        model(x, sigma, coords[:, :2])
    bad = coords.clone()
    bad[0, 1, 3] = 0.9
    with pytest.raises(ValueError, match="outside the video"):
        model(x, sigma, bad)
    with pytest.raises(ValueError, match="sigma must be positive"):
        model(x, -sigma, coords)
    with pytest.raises(ValueError, match="unknown class id 7"):
        model(x, sigma, coords, cond={"label": torch.tensor([0, 7])})
    with pytest.raises(ValueError, match="unknown cond keys"):
        model(x, sigma, coords, cond={"labels": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="text_dim=0"):
        model(x, sigma, coords, cond={"text": torch.zeros(2, 3, 4)})
    with pytest.raises(ValueError, match=r"swapped: HPDM's entry points take \(x, sigma, coords\)"):
        model(x, coords, sigma)  # the order of old callers
    with pytest.raises(ValueError, match="never runs level 2"):
        tiny_model(num_levels_per_block=[1, 1, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="not a power of two"):
        tiny_model(target_res=(4, 24, 32))


def test_no_weight_decay_names_cover_norms_biases_embeddings_latents():
    model = tiny_model(num_classes=3)
    names = model.no_weight_decay_names()
    assert "latents" in names and "class_embed.table.weight" in names
    assert "tokenizer.pos.tables.0" in names and "tokenizer.norm.weight" in names
    assert "blocks.0.read.attn.to_q.weight" not in names


def _tile_rows(model, label: bool):
    """Five level-2 "tiles" as the tiled sampler builds them: rows 0-2 share sample 0's level 0, rows 0-1
    also its level-1 window, row 3 is sample 1, row 4 repeats row 0 (with another label when ``label``)."""
    x, coords, sigma = hierarchy_batch(model)
    other1 = _other_coords(model, coords, 1, seed=1)
    other2 = _other_coords(model, other1, 2, seed=2)
    moved2 = _other_coords(model, coords, 2, seed=3)
    x_rows = torch.stack([x[0], x[0], x[0], x[1], x[0]])
    x_rows[2, 1] += 0.25  # another level-1 window of the same video
    coords_rows = torch.stack([coords[0], moved2[0], other2[0], coords[1], coords[0]])
    sigma_rows = torch.stack([sigma[0], sigma[0], sigma[0], sigma[1], sigma[0]])
    cond = None
    if label:
        cond = {"label": torch.tensor([1, 1, 1, 2, model.num_classes])}
    return x_rows, sigma_rows, coords_rows, cond


@pytest.mark.parametrize("variant", [dict(), dict(num_classes=5), dict(block_mixing=(1, 3, 3), frame_latents=True),
                                     dict(num_levels_per_block=[3, 1, 2, 3, 1, 3])])
def test_context_cache_runs_shared_ancestors_once_and_equals_row_by_row(variant):
    model = tiny_model(**variant)
    x, sigma, coords, cond = _tile_rows(model, label=bool(model.num_classes))
    seen = []
    model.tokenizer.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    with torch.no_grad():
        cache = model.context_cache(x[:, :2], sigma[:, :2], coords[:, :2], coords=coords[:, 2], cond=cond)
        # Level 0: sample 0 and sample 1 (and row 4 apart when its label differs); level 1 adds row 2.
        assert seen == ([3, 4] if cond else [2, 3])
        for row in range(x.shape[0]):
            one = None if cond is None else {"label": cond["label"][row : row + 1]}
            alone = model.context_cache(x[row : row + 1, :2], sigma[row : row + 1, :2], coords[row : row + 1, :2],
                                        coords=coords[row : row + 1, 2], cond=one)
            for shared, own in zip(cache.terms, alone.terms):
                assert (shared is None) == (own is None)
                if own is not None:
                    torch.testing.assert_close(shared[row : row + 1], own, rtol=0, atol=1e-12)


def test_distinct_rows_first_and_inverse():
    from hpdm.core.model import _distinct_rows

    a = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([True, True, True, True, False])
    rows = _distinct_rows([a, None, b])
    assert rows.first.tolist() == [0, 1, 3, 4] and rows.inverse.tolist() == [0, 1, 0, 2, 3]
    unique = _distinct_rows([torch.arange(4.0)[:, None]])
    assert unique.first.tolist() == [0, 1, 2, 3] and unique.inverse.tolist() == [0, 1, 2, 3]
