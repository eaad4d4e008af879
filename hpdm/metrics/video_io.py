"""Reading evaluation videos from folders with OpenCV (paper Sec. 5, Appendix B).

Videos are returned as uint8 ``[T, H, W, C]`` in RGB order (OpenCV decodes BGR). Appendix B
evaluates 64-frame videos on their first 16 frames, so readers take the first ``max_frames``.
Unreadable or too short files are skipped and counted, never silently: the caller logs the counts
and fails when nothing usable is left.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterator, Sequence

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".gif")


class VideoReadError(ValueError):
    """A file that OpenCV cannot decode as a video."""


def list_videos(root: str) -> list[str]:
    """Video files under ``root`` (recursively), as sorted paths relative to ``root``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video folder not found: {root!r}")
    found = []
    for directory, _, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def class_of(relative_path: str) -> str | None:
    """The class of a video in a ``<root>/<class>/<video>`` layout (UCF-101's), else ``None``."""
    parts = relative_path.replace(os.sep, "/").split("/")
    return parts[0] if len(parts) > 1 else None


def read_video(path: str, max_frames: int | None = None) -> np.ndarray:
    """Decodes the first ``max_frames`` frames (all when ``None``) as uint8 RGB ``[T, H, W, 3]``."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise VideoReadError(f"OpenCV cannot open video {path!r}")
        frames = []
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            else:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise VideoReadError(f"no decodable frames in {path!r}")
    return np.stack(frames)


def resize_video(video: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Resizes every frame of ``[T, H, W, C]`` to ``(H, W)``; area filter when shrinking."""
    height, width = int(size_hw[0]), int(size_hw[1])
    if video.shape[1:3] == (height, width):
        return video
    shrinking = height * width < video.shape[1] * video.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in video])


@dataclasses.dataclass
class SkipCounts:
    """Files left out of an evaluation, by reason."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, path)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason} (e.g. {self.examples[reason]!r})" for reason, n in sorted(self.counts.items()))


def iterate_folder(
    root: str,
    min_frames: int,
    max_frames: int | None,
    skips: SkipCounts,
    limit: int | None = None,
) -> Iterator[tuple[np.ndarray, str | None]]:
    """Yields ``(video [T, H, W, 3] uint8, class name or None)`` for usable videos under ``root``.

    Videos with fewer than ``min_frames`` frames or that cannot be decoded are recorded in
    ``skips``; at most ``limit`` videos are yielded.
    """
    yielded = 0
    for relative in list_videos(root):
        if limit is not None and yielded >= limit:
            return
        path = os.path.join(root, relative)
        try:
            video = read_video(path, max_frames)
        except VideoReadError:
            skips.add("unreadable", path)
            continue
        if video.shape[0] < min_frames:
            skips.add(f"shorter than {min_frames} frames", path)
            continue
        yielded += 1
        yield video, class_of(relative)
