"""Level-0 label sensitivity: exact on denoisers whose use of the label is known."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hpdm.data.synthetic import (
    CLASS_NAMES,
    COLOURS,
    SHAPES,
    SyntheticVideos,
    class_attributes,
    class_label,
    with_first_object,
)
from hpdm.diagnostics.label_sensitivity import ATTRIBUTES, counterfactuals, measure, projections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = (4, 16, 16)


def _pool(videos: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool3d(videos, (1, 2, 2))


def _sets(attribute: str, count: int = 3):
    source = SyntheticVideos(texture=0.0)
    return [counterfactuals(source, 100 + i, attribute, _pool, RES) for i in range(count)]


def _blend(videos, labels, weight: float):
    """A denoiser returning ``weight * (clean video of the given label) + (1 - weight) * input``."""
    by_label = {int(label): video for video, label in zip(videos, labels)}

    def denoise(x, sigma, given):
        return weight * torch.stack([by_label[int(label)] for label in given]) + (1 - weight) * x

    return denoise


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_projection_equals_the_share_the_label_decides(attribute, weight):
    for videos, labels, true in _sets(attribute):
        for r in measure(_blend(videos, labels, weight), [(videos, labels, true)], attribute, sigmas=[0.5, 5.0]):
            assert r.attribute == attribute and r.pairs == 2
            assert r.mean == pytest.approx(weight, abs=1e-5)
            assert r.stderr == pytest.approx(0.0, abs=1e-5)


def test_label_blind_denoiser_reads_zero_at_any_noise():
    sets = _sets("shape")
    noise = torch.randn(sets[0][0].shape[1:], generator=torch.Generator().manual_seed(1))
    for sigma in (0.1, 1.0, 10.0):
        assert projections(lambda x, s, y: 0.7 * x, *sets[0], sigma, noise) == [0.0, 0.0]


def test_counterfactuals_differ_in_one_attribute_only():
    source = SyntheticVideos(texture=0.0)
    for attribute, values in ATTRIBUTES.items():
        videos, labels, true = counterfactuals(source, 7, attribute, _pool, RES)
        first = source.attributes(7)["objects"][0]
        assert values[true] == first[attribute]
        assert int(labels[true]) == first["label"]
        for value, label in zip(values, labels):
            colour, shape = CLASS_NAMES[int(label)].split()
            assert (colour if attribute == "colour" else shape) == value
            assert (shape if attribute == "colour" else colour) == first["shape" if attribute == "colour" else "colour"]
        assert videos.shape == (len(values), 3, RES[0], RES[1] // 2, RES[2] // 2)  # pooled by _pool
        assert all(not torch.equal(videos[true], videos[j]) for j in range(len(values)) if j != true)


def test_render_attributes_matches_render_and_keeps_labels_consistent():
    source = SyntheticVideos()
    attrs = source.attributes(3)
    video, label, caption = source.render(3, RES)
    same, same_label, same_caption = source.render_attributes(with_first_object(attrs), RES)
    assert torch.equal(video, same) and label == same_label and caption == same_caption
    for colour in COLOURS:
        for shape in SHAPES:
            changed = with_first_object(attrs, colour=colour, shape=shape)
            assert changed["objects"][0]["label"] == class_label(colour, shape)
            assert CLASS_NAMES[class_label(colour, shape)] == f"{colour} {shape}"
            assert class_attributes(class_label(colour, shape)) == (colour, shape)
            assert source.render_attributes(changed, RES)[2].startswith(f"a {colour} {shape}")
    assert attrs == source.attributes(3)  # the original is not modified
    with pytest.raises(ValueError, match="unknown class"):
        class_label("blue", "disc")


def test_unknown_attribute_is_rejected():
    with pytest.raises(ValueError, match="unknown attribute"):
        counterfactuals(SyntheticVideos(), 0, "speed", _pool, RES)


def _cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "hpdm.cli.diagnose", "labels", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"),
    )


@pytest.mark.slow
def test_cli_on_the_shipped_quickstart_model(tmp_path):
    """The shipped model takes colour and shape from its label (its samples: all colours right, ~0.9 of
    shapes at guidance 3). Run 7 reads ~0.5 for colour at sigma 4 and ~0.18 for shape at sigma 2;
    run 6, whose samples had shapes at chance, read 0.087 for shape."""
    out = _cli("--model=pretrained/quickstart", "--num_videos=8", "--sigmas=2,4", f"--output={tmp_path / 's.json'}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {(r["attribute"], r["sigma"]): r for r in json.loads((tmp_path / "s.json").read_text())}
    assert set(rows) == {(a, s) for a in ("colour", "shape") for s in (2.0, 4.0)}
    assert rows["colour", 4.0]["pairs"] == 16
    assert rows["colour", 4.0]["mean"] > 0.3
    assert rows["shape", 2.0]["mean"] > 0.12
    assert "attribute  sigma" in out.stdout


@pytest.mark.slow
def test_cli_rejects_a_model_of_other_classes(tmp_path):
    from model_utils import write_export

    write_export(tmp_path, target_res=(2, 16, 16), patch_res=(2, 8, 8), token_size=(1, 4, 4), token_dim=16,
                 latent_dim=16, num_latents=4, num_blocks=2, latent_layers_per_block=1, head_dim=8, num_classes=5)
    out = _cli(f"--model={tmp_path}")
    assert out.returncode != 0
    assert "synthetic source's 9 classes" in out.stderr
