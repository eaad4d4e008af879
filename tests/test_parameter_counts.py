"""Parameter counts of the paper's configs (the paper, Table 8; docs/parameter_counts.md).

Every model is built on the meta device, so even the 3.5B-parameter T2V models cost no memory.
The totals pinned here are this implementation's, not the paper's (178M / 321M / 725M / 3,934M):
docs/parameter_counts.md explains the gap. A change to a shipped model config or to a layer that
moves one of them must update that document too.
"""

import functools

import gin
import pytest

from hpdm import gin_utils
from hpdm.core.accounting import UNUSED_MACROS, count_config, parameter_table

UCF = ("hpdm_s", "hpdm_m", "hpdm_l")
T2V = ("t2v", "t2v_1k")

# Exact totals as built from gin/experiments/<name>.gin; for the text models without the text
# embedder, whose size follows the text encoder's width (checked in closed form below).
PINNED = {
    "hpdm_s": 101_450_800,
    "hpdm_m": 177_087_536,
    "hpdm_l": 465_593_392,
    "t2v": 3_453_495_332,
    "t2v_1k": 3_455_636_516,
}


@functools.lru_cache(maxsize=None)
def _table(name: str) -> dict:
    return count_config([f"gin/experiments/{name}.gin"])


def _binding(name: str, binding: str):
    gin_utils.parse([f"gin/experiments/{name}.gin"], UNUSED_MACROS)
    try:
        return gin.query_parameter(binding)
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name", UCF + T2V)
def test_paper_config_totals(name):
    table = _table(name)
    text = table["conditioning.text"]
    if name in T2V:
        text_dim, d = _binding(name, "HPDM.text_dim"), _binding(name, "HPDM.latent_dim")
        # LayerNorm(text_dim), Linear(text_dim -> d), the learned null token.
        assert text == 2 * text_dim + (text_dim * d + d) + d
    else:
        assert text == 0
    assert table["total"] - text == PINNED[name]


@pytest.mark.parametrize("name", UCF + T2V)
def test_components_add_up(name):
    table = _table(name)
    assert sum(v for k, v in table.items() if k != "total") == table["total"]
    expected = {"tokenizer", "detokenizer", "latents", "conditioning.noise", "conditioning.class", "conditioning.text"}
    expected |= {f"block{b}.{part}" for b in range(6) for part in ("read", "latent_layers", "write", "fuser")}
    assert set(table) - {"total"} == expected
    loads = _binding(name, "HPDM.num_levels_per_block")
    # A fuser exactly where a block runs a level above 0.
    assert [table[f"block{b}.fuser"] > 0 for b in range(6)] == [load > 1 for load in loads]


def test_hpdm_s_closed_form():
    """Every component of HPDM-S against a hand count (d = 256 latents, D = 1024 tokens)."""
    d, D, layers, latents, levels, classes = 256, 1024, 4, 768, 3, 101

    def norm(n):
        return 2 * n

    def attention(q, ctx):  # inner width = query width; bias on the output only
        return q * q + ctx * 2 * q + (q * q + q)

    def mlp(n):  # hidden 4n
        return (n * 4 * n + 4 * n) + (4 * n * n + n)

    read = norm(d) + norm(D) + attention(d, D) + norm(d) + mlp(d)
    layer = norm(d) + attention(d, d) + norm(d) + mlp(d)
    write = norm(D) + norm(d) + attention(D, d) + norm(D) + mlp(D)
    fuser = D * D + (D * D + D) + 6 * D  # tokens, context (+bias), 6 coordinates
    cell = 3 * 1 * 4 * 4
    tokenizer = (cell * D + D) + norm(D) + (16 + 16 + 16) * D  # 16x64x64 patch -> 16x16x16 tokens
    detokenizer = norm(D) + (D * cell + cell)
    noise = (128 * d + d) + (d * d + d)  # 64 Fourier frequencies -> MLP
    expected = {
        "tokenizer": tokenizer,
        "detokenizer": detokenizer,
        "latents": levels * latents * d,
        "conditioning.noise": noise,
        "conditioning.class": (classes + 1) * d,
        "conditioning.text": 0,
    }
    for b, load in enumerate((1, 1, 2, 2, 3, 3)):
        expected[f"block{b}.read"] = read
        expected[f"block{b}.latent_layers"] = layers * layer
        expected[f"block{b}.write"] = write
        expected[f"block{b}.fuser"] = fuser if load > 1 else 0
    expected["total"] = sum(expected.values())
    assert _table("hpdm_s") == expected


@pytest.mark.parametrize("fusion", ["deep", "shallow"])
def test_parameter_table_of_a_built_model(fusion):
    """A real tiny model with token and block mixing: nothing lost, nothing counted twice."""
    from hpdm.core import HPDM

    model = HPDM(
        target_res=(4, 32, 32),
        patch_res=(2, 16, 16),
        token_dim=16,
        latent_dim=8,
        num_latents=4,
        num_blocks=2,
        latent_layers_per_block=1,
        head_dim=8,
        token_mixing=(1, 3, 3),
        block_mixing=(1, 3, 3),
        num_levels_per_block=[1, 2],
        num_classes=3,
        text_dim=12,
        fusion=fusion,
    )
    table = parameter_table(model)
    assert table["total"] == sum(p.numel() for p in model.parameters())
    assert table["tokenizer"] == sum(p.numel() for p in model.tokenizer.parameters())
    assert table["block0.mixer"] == table["block1.mixer"] > 0
    if fusion == "deep":
        assert table["block0.fuser"] == 0 and table["block1.fuser"] > 0
        assert "context_tokenizer" not in table and "fuser.shallow" not in table
    else:
        assert table["block0.fuser"] == table["block1.fuser"] == 0
        assert table["fuser.shallow"] > 0
        assert table["context_tokenizer"] == table["tokenizer"]
