"""Clip geometry on decoded frames: temporal window, aspect-preserving resize, crop, [-1, 1] floats.

Random choices come from the per-sample generator, always drawn in the same order (start, then
crop row, then crop column), so a sample is reproducible from ``(seed, epoch, index)``.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
import torch

from hpdm.data.seeding import randint


def choose_start(num_frames: int, span: int, random: bool, gen: torch.Generator) -> int:
    """First frame of a ``span``-frame window inside ``num_frames`` frames (random or 0)."""
    if span > num_frames:
        raise ValueError(f"a {span}-frame window does not fit in {num_frames} frames")
    return randint(gen, num_frames - span + 1) if random else 0


def resize_crop(frames: np.ndarray, size: Tuple[int, int], random: bool, gen: torch.Generator) -> np.ndarray:
    """``[T, h, w, C]`` uint8 -> ``[T, H, W, C]``: scale so the frame covers ``size``, then crop.

    The scale keeps the aspect ratio (no stretching); area interpolation when shrinking (no
    aliasing), bilinear when enlarging. The crop is random or centred.
    """
    out_h, out_w = size
    _, h, w, _ = frames.shape
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])
    top = randint(gen, new_h - out_h + 1) if random else (new_h - out_h) // 2
    left = randint(gen, new_w - out_w + 1) if random else (new_w - out_w) // 2
    return np.ascontiguousarray(frames[:, top : top + out_h, left : left + out_w])


def to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, C]`` -> float32 ``[C, T, H, W]`` in ``[-1, 1]`` (DESIGN.md video layout)."""
    # numpy, not torch: single-threaded, so data workers never contend with the trainer's
    # intra-op thread pool (small torch ops under contention ran ~50x slower here).
    video = np.ascontiguousarray(frames.transpose(3, 0, 1, 2), dtype=np.float32)
    video *= np.float32(1.0 / 127.5)
    video -= np.float32(1.0)
    return torch.from_numpy(video)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float ``[C, T, H, W]`` in ``[-1, 1]`` -> uint8 ``[T, H, W, C]`` (rounded)."""
    return ((video.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()
