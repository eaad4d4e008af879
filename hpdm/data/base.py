"""What every data source provides, and the clip request the loader makes of it.

A source is a plain, picklable object (gin builds it in the parent process; workers receive it
already configured). The loader calls ``prepare(spec)`` once, then ``load(index, spec, generator)``
for each sample; ``load`` takes every random decision from ``generator`` so a sample depends only on
``(seed, epoch, index)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch

Res = Tuple[int, int, int]


@dataclass(frozen=True)
class ClipSpec:
    """How to cut a clip (paper Sec. 5: clips of ``T`` frames at the target resolution).

    Attributes:
      target_res: ``(T, H, W)`` of the full-resolution clip.
      frame_stride: take every ``frame_stride``-th frame (ignored when ``fps`` is set).
      fps: if set, the stride per video is ``round(video_fps / fps)`` (at least 1), so clips of
        videos recorded at different rates cover the same duration.
      random_offset: random temporal start (else the first frame).
      random_crop: random spatial crop after the aspect-preserving resize (else centre crop).
    """

    target_res: Res
    frame_stride: int = 1
    fps: Optional[float] = None
    random_offset: bool = True
    random_crop: bool = True

    def __post_init__(self):
        res = tuple(int(v) for v in self.target_res)
        if len(res) != 3 or min(res) <= 0:
            raise ValueError(f"target_res must be three positive integers (T, H, W), got {self.target_res}")
        object.__setattr__(self, "target_res", res)
        if int(self.frame_stride) < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def stride_for(self, video_fps: float) -> int:
        """Frame stride for a video recorded at ``video_fps`` (unknown rates fall back to ``frame_stride``)."""
        if self.fps is None or not video_fps or video_fps <= 0:
            return int(self.frame_stride)
        return max(1, int(round(video_fps / self.fps)))

    def span(self, video_fps: float) -> int:
        """Number of source frames one clip covers, first to last inclusive."""
        return (self.target_res[0] - 1) * self.stride_for(video_fps) + 1


@dataclass
class Clip:
    """One decoded clip: ``video`` is float32 ``[C, T, H, W]`` in ``[-1, 1]`` (docs/design.md, "Video layout")."""

    video: torch.Tensor
    label: Optional[int] = None
    text: Optional[str] = None


class SkipSample(Exception):
    """A sample that cannot be produced (corrupt or short file found only at decode time)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@runtime_checkable
class Source(Protocol):
    """The interface the loader relies on (see module docstring)."""

    num_classes: int
    class_names: Sequence[str]
    has_text: bool

    def prepare(self, spec: ClipSpec) -> None: ...

    def __len__(self) -> int: ...

    def load(self, index: int, spec: ClipSpec, generator: torch.Generator) -> Clip: ...
