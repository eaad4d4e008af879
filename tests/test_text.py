"""Text conditioning (paper Sec. 4.6, Table 8: T5 embeddings): a tiny random T5 with ByT5Tokenizer
saved to a temporary directory, loaded offline, with the on-disk caption-embedding cache."""

import os

import pytest
import torch

from train_helpers import load_ckpt, run, train_cmd, write_gin


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    from hpdm.trainers.text import make_tiny_t5

    return make_tiny_t5(str(tmp_path_factory.mktemp("t5")), d_model=16)


def test_text_encoder_offline_and_cache(tiny_t5, tmp_path, monkeypatch):
    from hpdm.trainers.text import TextEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "cache")
    enc = TextEncoder(tiny_t5, max_length=32, cache_dir=cache, device="cpu")
    emb, mask = enc(["a red ball", "a blue square moving left", "a red ball"])
    assert emb.shape == (3, mask.shape[1], 16) and mask.dtype == torch.bool
    assert enc.num_encoded == 2  # the repeated caption is encoded once
    assert torch.equal(emb[0], emb[2]) and (emb[0][~mask[0]] == 0).all()
    # A fresh encoder (a resumed run, another rank) reads the cache and encodes nothing.
    again = TextEncoder(tiny_t5, max_length=32, cache_dir=cache, device="cpu")
    emb2, mask2 = again(["a red ball", "a blue square moving left"])
    assert again.num_encoded == 0
    assert torch.equal(emb2, emb[:2, : emb2.shape[1]]) and torch.equal(mask2, mask[:2, : mask2.shape[1]])
    files = [f for _, _, fs in os.walk(cache) for f in fs]
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)


@pytest.mark.slow
def test_text_conditioned_training_end_to_end(tiny_t5, tmp_path):
    cache = tmp_path / "cache"
    gin_file = write_gin(
        tmp_path,
        "\n".join(
            [
                "import hpdm.trainers.text",
                "HPDM.num_classes = 0",
                "HPDM.text_dim = 16",
                "Trainer.text_encoder_fn = @TextEncoder",
                f"TextEncoder.name_or_path = '{tiny_t5}'",
                f"TextEncoder.cache_dir = '{cache}'",
                "TextEncoder.max_length = 64",
                "TextEncoder.device = 'cpu'",
            ]
        ),
    )
    work = tmp_path / "w"
    run(train_cmd(gin_file, work, "TRAIN_STEPS=2"))
    model, _, state = load_ckpt(work, 2)
    assert any(k.startswith("text_embed.") for k in model)
    assert all(torch.isfinite(v).all() for v in model.values())
    files = [f for _, _, fs in os.walk(cache) for f in fs if f.endswith(".safetensors")]
    assert 1 <= len(files) <= 8  # at most one file per distinct caption of the 2 x 4 samples


@pytest.mark.slow
def test_text_width_must_match_the_encoder(tiny_t5, tmp_path):
    """HPDM.text_dim other than the T5's width fails at set-up (training) and at prompt encoding
    (hpdm-sample), naming both widths and the binding."""
    import types

    import gin

    from hpdm.pipeline import build_text_encoder, encode_prompts, register_configurables

    gin_file = write_gin(
        tmp_path,
        "\n".join(
            [
                "import hpdm.trainers.text",
                "HPDM.num_classes = 0",
                "HPDM.text_dim = 24",
                "Trainer.text_encoder_fn = @TextEncoder",
                f"TextEncoder.name_or_path = '{tiny_t5}'",
                "TextEncoder.device = 'cpu'",
            ]
        ),
    )
    code, _, err = run(train_cmd(gin_file, tmp_path / "w", "TRAIN_STEPS=1"), check=False)
    assert code != 0 and "16-wide embeddings" in err and "HPDM.text_dim = 24" in err
    assert "set HPDM.text_dim = 16" in err
    assert not os.path.isdir(tmp_path / "w" / "checkpoints")

    gin.parse_config([f"TextEncoder.name_or_path = '{tiny_t5}'", "TextEncoder.device = 'cpu'"])
    try:
        with pytest.raises(ValueError, match=r"16-wide embeddings but the model has HPDM.text_dim = 24"):
            register_configurables()
            encoder = build_text_encoder(gin.get_bindings("TextEncoder"))
            encode_prompts(types.SimpleNamespace(text_dim=24, num_classes=0), ["a red ball"], encoder)
    finally:
        gin.clear_config()
