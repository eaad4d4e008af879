"""The built-in synthetic videos (hpdm/data/synthetic.py)."""

from __future__ import annotations


import torch
import torch.nn.functional as F

from hpdm.data import CLASS_NAMES, SyntheticVideos
from hpdm.data.synthetic import COLOURS, SHAPES


def test_deterministic_from_seed_and_index():
    a, b = SyntheticVideos(seed=1), SyntheticVideos(seed=1)
    va, la, ca = a.render(5, (8, 32, 32))
    vb, lb, cb = b.render(5, (8, 32, 32))
    assert torch.equal(va, vb) and la == lb and ca == cb
    assert not torch.equal(va, a.render(6, (8, 32, 32))[0])
    assert not torch.equal(va, SyntheticVideos(seed=2).render(5, (8, 32, 32))[0])


def test_range_motion_and_any_resolution():
    source = SyntheticVideos()
    for res in [(16, 64, 64), (4, 16, 16), (7, 24, 40), (1, 33, 17)]:
        video, label, caption = source.render(3, res)
        assert video.shape == (3, *res) and video.dtype == torch.float32
        assert video.min() >= -1 and video.max() <= 1
    video, _, _ = source.render(3, (16, 64, 64))
    assert (video[:, 0] - video[:, -1]).abs().mean() > 0.01  # the object moves
    # Same content at another resolution: the 2x area-downsample is close to the half-res render.
    half, _, _ = source.render(3, (16, 32, 32))
    pooled = F.avg_pool3d(video.unsqueeze(0), (1, 2, 2)).squeeze(0)
    assert (pooled - half).abs().mean() < 0.03


def test_labels_and_captions_match_attributes():
    source = SyntheticVideos()
    assert source.num_classes == len(CLASS_NAMES) == 9 and source.class_names == CLASS_NAMES
    labels = set()
    for index in range(200):
        attrs = source.attributes(index)
        video, label, caption = source.render(index, (2, 16, 16))
        obj = attrs["objects"][0]
        assert CLASS_NAMES[label] == f"{obj['colour']} {obj['shape']}"
        assert caption.startswith(f"a {obj['colour']} {obj['shape']} moving ")
        assert caption.endswith(f"on a {attrs['background']} background")
        labels.add(label)
    assert labels == set(range(9))


def test_the_shape_has_its_colour_in_place():
    # At mid-clip the trajectory centre holds the object's colour (stripes modulate it by <= 25%).
    source = SyntheticVideos(texture=0.0)
    for index in range(20):
        video, label, _ = source.render(index, (1, 64, 64))
        colour = torch.tensor(COLOURS[CLASS_NAMES[label].split()[0]]) * 2 - 1
        obj = source.attributes(index)["objects"][0]
        assert obj["shape"] in SHAPES
        # The most colour-like pixel is within a shape radius of perfect.
        distance = (video[:, 0] - colour.view(3, 1, 1)).abs().sum(0)
        assert distance.min() < 1e-4


def test_difficulty_knobs():
    video, _, caption = SyntheticVideos(num_objects=3).render(0, (4, 32, 32))
    assert caption.count(" moving ") == 3
    plain, _, _ = SyntheticVideos(texture=0.0).render(0, (4, 64, 64))
    striped, _, _ = SyntheticVideos(texture=0.5).render(0, (4, 64, 64))
    assert not torch.equal(plain, striped)
