"""Streaming feature extraction for FVD / IS / seam score (paper Sec. 5 "Evaluation", App. B).

Videos arrive one at a time as uint8 ``[T, H, W, C]`` at their native resolution. Each is

1. scored for seams at its native resolution (tile edges only exist there),
2. cut to its first ``num_frames`` frames (Appendix B: 16-frame metrics of 64-frame videos) and
   resized to the common evaluation resolution,
3. batched through the I3D detector (FVD statistics) and, on the first 16 frames, the C3D
   detector (IS probabilities).

Nothing but the running statistics is kept, so FVD on 10k videos needs no video memory.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from hpdm.metrics import detectors
from hpdm.metrics.inception_score import IS_NUM_FRAMES
from hpdm.metrics.seams import SeamAccumulator
from hpdm.metrics.stats import FeatureStats
from hpdm.metrics.video_io import resize_video

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExtractionResult:
    stats: FeatureStats
    probs: np.ndarray | None
    seams: dict[str, float]
    resolution: tuple[int, int]


class FeatureExtractor:
    """Accumulates detector statistics over a stream of videos.

    Args:
      i3d: the FVD detector (``detectors.i3d_features`` calling convention).
      num_frames: frames per video fed to I3D (the first ones).
      resolution: evaluation ``(H, W)``; ``None`` takes the first video's.
      batch_size: videos per detector call.
      device: where the detectors run.
      c3d: optional IS detector; it sees the first 16 frames.
      seam_edges: optional ``f(native (T, H, W)) -> {"t": [...], "h": [...], "w": [...]}``.
      name: label of the progress lines.
      total: expected number of videos, for the progress lines.
    """

    def __init__(
        self,
        i3d,
        num_frames: int,
        resolution: Sequence[int] | None,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        c3d=None,
        seam_edges: Callable[[tuple[int, int, int]], Mapping[str, Sequence[int]]] | None = None,
        name: str = "videos",
        total: int | None = None,
        log_every: int = 1,
    ):
        if c3d is not None and num_frames < IS_NUM_FRAMES:
            raise ValueError(f"the Inception Score needs {IS_NUM_FRAMES} frames, num_frames is {num_frames}")
        self.i3d, self.c3d = i3d, c3d
        self.num_frames = int(num_frames)
        self.resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
        self.batch_size = int(batch_size)
        self.device = device
        self.seam_edges = seam_edges
        self.name, self.total, self.log_every = name, total, max(1, log_every)
        self.stats = FeatureStats()
        self.seams = SeamAccumulator()
        self._probs: list[torch.Tensor] = []
        self._pending: list[np.ndarray] = []
        self._batches = 0

    def add(self, video) -> None:
        """Adds one uint8 video ``[T, H, W, C]`` (numpy or torch)."""
        video = np.asarray(video.cpu() if torch.is_tensor(video) else video)
        if video.dtype != np.uint8 or video.ndim != 4:
            raise ValueError(f"{self.name}: expected a uint8 video [T, H, W, C], got {video.dtype} {video.shape}")
        if video.shape[0] < self.num_frames:
            raise ValueError(f"{self.name}: video has {video.shape[0]} frames, {self.num_frames} are evaluated")
        if self.seam_edges is not None:
            self.seams.update(video, self.seam_edges(tuple(video.shape[:3])))
        if self.resolution is None:
            self.resolution = (int(video.shape[1]), int(video.shape[2]))
        self._pending.append(resize_video(video[: self.num_frames], self.resolution))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = np.stack(self._pending)
        self._pending = []
        self.stats.update(detectors.i3d_features(self.i3d, batch, self.device))
        if self.c3d is not None:
            self._probs.append(detectors.c3d_probabilities(self.c3d, batch[:, :IS_NUM_FRAMES], self.device))
        self._batches += 1
        if self._batches % self.log_every == 0:
            total = "?" if self.total is None else self.total
            log.info("%s: features of %d/%s videos", self.name, self.stats.count, total)

    def finish(self) -> ExtractionResult:
        self._flush()
        if self.stats.count == 0:
            raise ValueError(f"{self.name}: no usable videos to evaluate")
        probs = torch.cat(self._probs).numpy() if self._probs else None
        return ExtractionResult(self.stats, probs, self.seams.scores(), self.resolution)
