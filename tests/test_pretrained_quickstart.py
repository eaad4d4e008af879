"""The shipped quickstart checkpoint: it loads, and cached sampling equals uncached with fewer blocks."""

import os

import torch

from hpdm.core import load_pretrained
from hpdm.samplers import LevelSchedule, sample_videos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "quickstart")


def test_trained_quickstart_cached_equals_uncached():
    model = load_pretrained(PRETRAINED)
    schedule = LevelSchedule(num_steps=[4, 2, 2])
    counts, videos = {}, {}
    for cached in (True, False):
        model.level_block_evaluations = 0
        videos[cached] = sample_videos(model, 2, seed=5, labels=[0, 4], overlap="hw", cached=cached, level_schedule=schedule)
        counts[cached] = model.level_block_evaluations
    assert torch.equal(videos[True], videos[False])
    assert counts[True] < counts[False], counts
    assert videos[True].shape == (2, 16, 64, 64, 3)
