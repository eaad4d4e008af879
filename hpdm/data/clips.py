"""Clip geometry on a video's frames: which temporal window a clip takes.

Random choices come from the per-sample generator, always drawn in the same order (start, then
crop row, then crop column: ``hpdm.video.frames.resize_crop`` draws the crop), so a sample is
reproducible from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import torch

from hpdm.data.seeding import randint


def choose_start(num_frames: int, span: int, random: bool, gen: torch.Generator) -> int:
    """First frame of a ``span``-frame window inside ``num_frames`` frames (random or 0)."""
    if span > num_frames:
        raise ValueError(f"a {span}-frame window does not fit in {num_frames} frames")
    return randint(gen, num_frames - span + 1) if random else 0
