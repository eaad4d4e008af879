"""Reading evaluation videos from folders with OpenCV (paper Sec. 5, Appendix B).

Videos are returned as uint8 ``[T, H, W, C]`` in RGB order (OpenCV decodes BGR). Appendix B
evaluates 64-frame videos on their first 16 frames, so readers take the first ``max_frames``.
Unreadable or too short files are skipped and counted, never silently: the caller logs the counts
and fails when nothing usable is left.

A folder is read as *samples*: files that differ only in their extension are one video.
``hpdm-sample`` writes every video four times (``video_0007.{mp4,gif,png,npy}``); counting the
``.mp4`` and the ``.gif`` separately would double N and mix in two lossy copies. A sample is read
from its ``.npy`` (the exact uint8 array) when there is one, else from the first of its containers
that decodes; the ``.png`` frame grid is not a video. Folders of distinct videos read as before.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterator, Sequence

import cv2
import numpy as np

# In reading preference within a sample: the GIF is last, its 256-colour palette moves colours
# (and so I3D features) more than the other codecs do.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".gif")
ARRAY_EXTENSION = ".npy"

log = logging.getLogger(__name__)


class VideoReadError(ValueError):
    """A file that cannot be read as a video (OpenCV cannot decode it, or not a video array)."""


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


@dataclasses.dataclass(frozen=True)
class Sample:
    """One video of a folder: ``name`` is its path relative to the root without extension, ``files``
    its files relative to the root, in reading preference (``.npy`` first, then containers)."""

    name: str
    files: tuple[str, ...]


def _preference(relative: str) -> tuple[int, str]:
    extension = os.path.splitext(relative)[1].lower()
    return (0 if extension == ARRAY_EXTENSION else 1 + VIDEO_EXTENSIONS.index(extension)), relative


def list_samples(root: str) -> list[Sample]:
    """The videos under ``root`` (recursively), one per file name without extension.

    Sorted by their first file's path, so a folder of distinct videos keeps the order (and an
    ``N``-video limit the selection) that listing its files gave.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video folder not found: {root!r}")
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for directory, _, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith(VIDEO_EXTENSIONS + (ARRAY_EXTENSION,)):
                relative = os.path.relpath(os.path.join(directory, name), root)
                groups[os.path.splitext(relative)[0]].append(relative)
    samples = [Sample(name, tuple(sorted(files, key=_preference))) for name, files in groups.items()]
    return sorted(samples, key=lambda sample: min(sample.files))


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


def read_array_video(path: str, max_frames: int | None = None) -> np.ndarray:
    """The first ``max_frames`` frames of a ``.npy`` video: uint8 ``[T, H, W, C]``, C in (1, 3) -> RGB.

    ``hpdm-sample`` saves the exact array it generated; memory-mapped, so a long video costs only
    the frames taken.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise VideoReadError(f"cannot load {path!r} as a numpy array: {err}") from err
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3) or array.shape[0] == 0:
        raise VideoReadError(
            f"{path!r} holds {array.dtype} {array.shape}; a video array is uint8 [T, H, W, C] with C in (1, 3)"
        )
    frames = np.array(array[:max_frames])
    # Greyscale like OpenCV's GRAY2RGB: the detectors take three channels.
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def read_sample(root: str, sample: Sample, max_frames: int | None = None) -> tuple[np.ndarray, str]:
    """Reads one sample from its first usable file; returns ``(video, path read)``.

    A file that fails is logged and the next one tried, so a damaged ``.npy`` never silently
    drops a sample, and never silently replaces the lossless array with a lossy copy either.
    """
    errors = []
    for relative in sample.files:
        path = os.path.join(root, relative)
        reader = read_array_video if relative.lower().endswith(ARRAY_EXTENSION) else read_video
        try:
            video = reader(path, max_frames)
        except VideoReadError as err:
            errors.append(str(err))
            continue
        if errors:
            log.warning("read %s after: %s", path, "; ".join(errors))
        return video, path
    raise VideoReadError("; ".join(errors))


def resize_video(video: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Resizes every frame of ``[T, H, W, C]`` to ``(H, W)``; area filter when shrinking.

    Stretches when the aspect ratios differ: evaluation prepares clips with ``pipeline.prepare_clip``.
    """
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
    """Yields ``(video [T, H, W, 3] uint8, class name or None)`` for usable samples under ``root``.

    One video per sample (see ``list_samples``). Samples with fewer than ``min_frames`` frames or
    that cannot be read are recorded in ``skips``; at most ``limit`` videos are yielded.
    """
    yielded = 0
    for sample in list_samples(root):
        if limit is not None and yielded >= limit:
            return
        try:
            video, path = read_sample(root, sample, max_frames)
        except VideoReadError:
            skips.add("unreadable", os.path.join(root, sample.files[0]))
            continue
        if video.shape[0] < min_frames:
            skips.add(f"shorter than {min_frames} frames", path)
            continue
        yielded += 1
        yield video, class_of(sample.name)
