"""Folders of evaluation videos, read one video per sample (paper Sec. 5, Appendix B).

Videos are uint8 ``[T, H, W, C]`` RGB, read by ``hpdm.video.files``. Appendix B evaluates 64-frame
videos on their first 16 frames, so readers take the first ``max_frames``. Unreadable or too short
files are skipped and counted in a ``SkipReport``, never silently: the caller logs the report and
fails when nothing usable is left.

A folder is read as *samples*: files that differ only in their extension are one video.
``hpdm-sample`` writes every video four times (``video_0007.{mp4,gif,png,npy}``); counting the
``.mp4`` and the ``.gif`` separately would double N and mix in two lossy copies. A sample is read
from its ``.npy`` (the exact uint8 array) when there is one, else from the first of its containers
that decodes; the ``.png`` frame grid is not a video. In a folder of distinct videos each file is a sample.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterator

import numpy as np

from hpdm.video.files import VIDEO_EXTENSIONS, UnreadableMedia, read_array_video, read_video
from hpdm.video.skips import SkipReport

# The exact array hpdm-sample saves beside its containers: read first, it is what was generated.
ARRAY_EXTENSION = ".npy"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One video of a folder: ``name`` is its path relative to the root without extension, ``files``
    its files relative to the root, in reading preference (``.npy`` first, then containers in
    ``VIDEO_EXTENSIONS`` order, the GIF last)."""

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


def read_sample(root: str, sample: Sample, max_frames: int | None = None) -> tuple[np.ndarray, str]:
    """Reads one sample from its first usable file; returns ``(video, path read)``.

    A file that fails is logged and the next one tried, so a damaged ``.npy`` never silently
    drops a sample, and never silently replaces the lossless array with a lossy copy either.
    ``UnreadableMedia`` naming every file when none can be read.
    """
    errors = []
    for relative in sample.files:
        path = os.path.join(root, relative)
        reader = read_array_video if relative.lower().endswith(ARRAY_EXTENSION) else read_video
        try:
            video = reader(path, max_frames)
        except UnreadableMedia as err:
            errors.append(f"{path}: {err}")
            continue
        if errors:
            log.warning("read %s after: %s", path, "; ".join(errors))
        return video, path
    raise UnreadableMedia("; ".join(errors))


def iterate_folder(
    root: str,
    min_frames: int,
    max_frames: int | None,
    skips: SkipReport,
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
        except UnreadableMedia as err:
            skips.add(os.path.join(root, sample.files[0]), "unreadable", str(err))
            continue
        if video.shape[0] < min_frames:
            skips.add(path, f"shorter than {min_frames} frames")
            continue
        yielded += 1
        yield video, class_of(sample.name)
