"""Saving sampled videos: ``save_video`` (``hpdm.save_video``) and ``hpdm-sample``'s four files per video.

The encoders live in ``hpdm.video.files`` (OpenCV only: ``.mp4`` with ``mp4v``, animated ``.gif``,
a ``.png`` frame grid, the exact ``.npy`` array, the one to use for metrics).
"""

from __future__ import annotations

import os

from hpdm.video.files import OUTPUT_KINDS, check_frames, write_video

# What hpdm-sample writes next to its videos: how they were sampled (hpdm-eval records it).
SAMPLING_RECORD = "sampling.json"

__all__ = ["OUTPUT_KINDS", "SAMPLING_RECORD", "save_video", "write_video_files"]


def write_video_files(video, output_dir: str, name: str, fps: float = 8.0, kinds=OUTPUT_KINDS) -> dict:
    """Write one ``uint8 [T, H, W, C]`` video as ``name.{mp4,gif,png,npy}``; returns ``{kind: path}``."""
    frames = check_frames(video)
    unknown = [kind for kind in kinds if kind not in OUTPUT_KINDS]
    if unknown:
        raise ValueError(f"unknown output kind {unknown[0]!r}; choose from {OUTPUT_KINDS}")
    os.makedirs(output_dir, exist_ok=True)
    return {kind: write_video(frames, os.path.join(output_dir, f"{name}.{kind}"), fps) for kind in kinds}


def save_video(video, path: str, fps: float = 8.0) -> str:
    """Write one ``uint8 [T, H, W, C]`` video (a tensor or array) to ``path``; returns ``path``.

    The extension picks the format: ``.mp4``, ``.gif`` (loops forever), ``.png`` (all frames in
    one grid image) or ``.npy`` (the exact array, the one to use for metrics). Missing parent
    directories are created.
    """
    path = os.fspath(path)
    kind = os.path.splitext(path)[1].lower().lstrip(".")
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"save_video writes {', '.join('.' + k for k in OUTPUT_KINDS)}; cannot tell a format from {path!r}")
    if getattr(video, "ndim", None) == 5:
        raise ValueError(f"save_video writes one video [T, H, W, C], got a batch {tuple(video.shape)}: index it, e.g. videos[0]")
    frames = check_frames(video)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_video(frames, path, fps)
