"""Streaming feature extraction for FVD / IS / seam score (paper Sec. 5 "Evaluation", App. B).

Videos arrive one at a time as uint8 ``[T, H, W, C]`` at their native resolution. Each is

1. scored for seams at its native resolution (tile edges only exist there),
2. prepared like a training clip (``prepare_clip``): its first ``num_frames`` frames at the native
   frame rate (Appendix B: 16-frame metrics of 64-frame videos), the short side resized to the
   evaluation size and centre-cropped, still uint8,
3. batched through the I3D detector (FVD statistics) and, on the first 16 frames, the C3D
   detector (IS probabilities).

Reals and fakes go through the same preparation, so a 240x320 UCF-101 video is compared with a
256x256 sample after the crop the model was trained on, never stretched. Nothing but the running
statistics is kept, so FVD on 10k videos needs no video memory.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from hpdm.metrics import detectors
from hpdm.metrics.inception_score import IS_NUM_FRAMES
from hpdm.metrics.progress import ProgressLog
from hpdm.metrics.seams import SeamAccumulator
from hpdm.metrics.stats import FeatureStats
from hpdm.video.frames import resize_crop

# Recorded with every result and part of the real-statistics cache key: statistics of clips
# prepared another way (earlier versions stretched reals to the evaluation size) never mix.
PREPARATION = "first frames at the native rate; short side resized, centre crop; uint8"


def prepare_clip(video: np.ndarray, num_frames: int, size_hw: Sequence[int]) -> np.ndarray:
    """uint8 ``[T, H, W, C]`` -> its first ``num_frames`` frames at ``size_hw``, as training clips are cut.

    ``hpdm.video.frames.resize_crop`` is the training loader's own function (centre crop, as the
    data's ``random_crop=False``): scale so the frame covers ``size_hw`` keeping the aspect ratio,
    area filter when shrinking, then crop the middle.
    """
    return resize_crop(video[:num_frames], (int(size_hw[0]), int(size_hw[1])), random=False, gen=None)


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
        self.progress = ProgressLog(f"{name}: features of", total)
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
        self.progress.start()
        if self.seam_edges is not None:
            self.seams.update(video, self.seam_edges(tuple(video.shape[:3])))
        if self.resolution is None:
            self.resolution = (int(video.shape[1]), int(video.shape[2]))
        self._pending.append(prepare_clip(video, self.num_frames, self.resolution))
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
            self.progress.update(self.stats.count)

    def finish(self) -> ExtractionResult:
        self._flush()
        if self.stats.count == 0:
            raise ValueError(f"{self.name}: no usable videos to evaluate")
        probs = torch.cat(self._probs).numpy() if self._probs else None
        return ExtractionResult(self.stats, probs, self.seams.scores(), self.resolution)
