"""Frame arrays <-> model tensors, and the aspect-preserving resize + crop every clip goes through.

Layouts (docs/design.md, "Video layout"): decoded frames are uint8 ``[T, H, W, C]`` RGB (channels last, as
OpenCV and the video files have them); the model's videos are float ``[C, T, H, W]`` in ``[-1, 1]``,
or ``[B, C, T, H, W]`` for a batch. ``to_float`` and ``to_uint8`` convert between the two.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np
import torch


def to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, C]`` -> float32 ``[C, T, H, W]`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    # numpy, not torch: single-threaded, so data workers never contend with the trainer's
    # intra-op thread pool (small torch ops under contention run many times slower).
    video = np.ascontiguousarray(frames.transpose(3, 0, 1, 2), dtype=np.float32)
    video *= np.float32(1.0 / 127.5)
    video -= np.float32(1.0)
    return torch.from_numpy(video)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Float video(s) in ``[-1, 1]`` -> uint8 on the CPU with channels last (clamped, rounded).

    One video ``[C, T, H, W]`` gives ``[T, H, W, C]``; a batch ``[B, C, T, H, W]`` gives
    ``[B, T, H, W, C]``. The arithmetic is done in float32 whatever the input dtype, so a bf16 or
    fp16 video quantises like its float32 copy.
    """
    if video.dim() not in (4, 5):
        raise ValueError(
            f"to_uint8 takes a video [C, T, H, W] or a batch [B, C, T, H, W], got shape {tuple(video.shape)}"
        )
    quantised = ((video.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return quantised.movedim(-4, -1).contiguous().cpu()


def _draw(gen: torch.Generator, high: int) -> int:
    # The same single draw as hpdm.data.seeding.randint, so a sample's crop is what it always was.
    return int(torch.randint(0, high, (1,), generator=gen))


def resize_crop(
    frames: np.ndarray, size: Tuple[int, int], random: bool, gen: Optional[torch.Generator]
) -> np.ndarray:
    """``[T, h, w, C]`` uint8 -> ``[T, H, W, C]``: scale so the frame covers ``size``, then crop.

    The scale keeps the aspect ratio (no stretching); area interpolation when shrinking (no
    aliasing), bilinear when enlarging. The crop is random (row first, then column, drawn from
    ``gen``) or centred (``gen`` unused, may be None).
    """
    out_h, out_w = size
    _, h, w, _ = frames.shape
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])
    top = _draw(gen, new_h - out_h + 1) if random else (new_h - out_h) // 2
    left = _draw(gen, new_w - out_w + 1) if random else (new_w - out_w) // 2
    return np.ascontiguousarray(frames[:, top : top + out_h, left : left + out_w])
