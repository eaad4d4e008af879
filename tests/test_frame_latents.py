"""``HPDM(frame_latents=True)``: learned latent groups that read and write one token frame each."""

import pytest
import torch

from hpdm.layers import RINBlock
from hpdm.layers.attention import Attention

from model_utils import hierarchy_batch, tiny_model


def test_pair_mask_equals_a_masked_softmax():
    torch.manual_seed(0)
    attn = Attention(8, 6, num_heads=2).double()
    x, ctx = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    pair = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    key = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1]], dtype=torch.bool)
    q = attn.to_q(x).view(2, 3, 2, 4).transpose(1, 2)
    k, v = attn.to_kv(ctx).view(2, 5, 2, 2, 4).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / 2.0
    logits = logits.masked_fill(~(pair & key[:, None, None, :]), float("-inf"))
    expected = attn.out((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 8))
    torch.testing.assert_close(attn(x, ctx, key_mask=key, pair_mask=pair), expected, rtol=0, atol=1e-12)


def test_a_read_restricted_to_some_tokens_ignores_the_others():
    torch.manual_seed(0)
    block = RINBlock(8, 8, num_latent_layers=0, latent_heads=2, token_heads=2).double()
    latents, tokens = torch.randn(1, 2, 8, dtype=torch.float64), torch.randn(1, 6, 8, dtype=torch.float64)
    read = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    base_latents, base_tokens = block(latents, tokens, read_mask=read)
    changed = tokens.clone()
    changed[:, 3:] += 1.0
    new_latents, new_tokens = block(latents, changed, read_mask=read)
    assert torch.equal(new_latents[:, 0], base_latents[:, 0])  # latent 0 reads tokens 0-2 only
    assert not torch.equal(new_latents[:, 1], base_latents[:, 1])
    # Tokens 0-2 write from latent 0 alone (the write uses the transposed mask): unchanged too.
    assert torch.equal(new_tokens[:, :3], base_tokens[:, :3])
    full = torch.ones_like(read)
    torch.testing.assert_close(block(latents, tokens, read_mask=full), block(latents, tokens), rtol=0, atol=1e-12)


def test_read_mask_groups_latents_by_frame():
    model = tiny_model(frame_latents=True, num_latents=4)  # token grid (2, 4, 4): two frames
    mask = model._read_mask(4 + 1)  # + the noise-level latent
    frame = torch.arange(2).repeat_interleave(16)
    for i, group in enumerate([0, 0, 1, 1]):
        assert torch.equal(mask[i], frame == group)
    assert mask[4].all()


def test_without_it_the_model_is_unchanged_and_with_it_levels_still_flow_coarse_to_fine():
    base, grouped = tiny_model(), tiny_model(frame_latents=True)
    grouped.load_state_dict(base.state_dict())  # no new tensors
    x, coords, sigma = hierarchy_batch(base)
    with torch.no_grad():
        a, b = base(x, sigma, coords), grouped(x, sigma, coords)
    assert not torch.allclose(a, b)
    x2 = x.clone()
    x2[:, 2] += 0.5
    with torch.no_grad():
        c = grouped(x2, sigma, coords)
    torch.testing.assert_close(c[:, :2], b[:, :2], rtol=0, atol=0)


@pytest.mark.parametrize("num_latents", [3, 5])
def test_latents_not_divisible_by_frames_still_cover_every_frame(num_latents):
    model = tiny_model(frame_latents=True, num_latents=num_latents)
    mask = model._read_mask(num_latents + 1)
    assert mask[:num_latents].any(dim=0).all() and (mask[:num_latents].sum(dim=1) == 16).all()


def test_fewer_latents_than_frames_raise():
    with pytest.raises(ValueError, match="one latent per token frame"):
        tiny_model(frame_latents=True, num_latents=1)
