"""The shipped quickstart checkpoint: it loads, and cached sampling equals uncached with fewer blocks."""

import os

import torch

from hpdm.core import load_pretrained
from hpdm.samplers import SamplingSteps, sample_videos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "quickstart")


def test_trained_quickstart_cached_equals_uncached():
    model = load_pretrained(PRETRAINED)
    schedule = SamplingSteps(num_steps=[4, 2, 2])
    counts, videos = {}, {}
    for cached in (True, False):
        model.level_block_evaluations = 0
        videos[cached] = sample_videos(model, 2, seed=5, labels=[0, 4], overlap="hw", cached=cached, level_schedule=schedule)
        counts[cached] = model.level_block_evaluations
    assert torch.equal(videos[True], videos[False])
    assert counts[True] < counts[False], counts
    assert videos[True].shape == (2, 16, 64, 64, 3)


def test_fusers_of_blocks_that_fuse_nothing_are_dropped_with_a_note(caplog):
    """The shipped checkpoint predates building fusers only where a block fuses a level: it holds a
    fuser for block 0, which runs level 0 alone. Loading drops it, says so, and the forward pass is
    the one the full state dict gives (that fuser never took part in it)."""
    import logging

    from safetensors.torch import load_file

    state = load_file(os.path.join(PRETRAINED, "model.safetensors"))
    stale = sorted(k for k in state if k.startswith("fusers.0."))
    assert stale, "the shipped checkpoint no longer holds block 0's fuser: this test has nothing to check"
    # absl's logger: flag parsing elsewhere in the session sets its own level (WARNING by default).
    with caplog.at_level(logging.INFO, logger="absl"):
        model = load_pretrained(PRETRAINED)
    assert "dropped 4 tensors of the context fusers of blocks [0]" in caplog.text
    assert "0" not in model.fusers and set(model.fusers) == {"1", "2", "3"}
    assert set(model.state_dict()) == set(state) - set(stale)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, state[name]), name
