"""Writing sampled videos: ``.mp4``, animated ``.gif``, PNG frame grid and lossless ``.npy``.

Everything goes through OpenCV (``opencv-python-headless``): ``cv2.VideoWriter`` with the ``mp4v``
codec for a playable MP4, OpenCV's own animated-GIF encoder (``cv2.imencodeanimation``, OpenCV 4.12
and later, so no imageio/moviepy dependency), ``cv2.imwrite`` for the grid. ``save_video`` (``hpdm.save_video``) writes one
video in the format its file extension names. The ``.npy`` is the exact ``uint8``
``T x H x W x C`` array, the one to use for metrics. OpenCV wants BGR; videos here are RGB.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

# What hpdm-sample writes next to its videos: how they were sampled (hpdm-eval records it).
SAMPLING_RECORD = "sampling.json"

OUTPUT_KINDS = ("mp4", "gif", "png", "npy")


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("writing videos needs opencv-python-headless (pip install opencv-python-headless)") from err
    return cv2


def _as_frames(video) -> np.ndarray:
    frames = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected a uint8 video [T, H, W, C] with C in (1, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def _bgr(frame: np.ndarray) -> np.ndarray:
    return frame if frame.shape[-1] == 1 else np.ascontiguousarray(frame[..., ::-1])


def frame_grid(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """``[T, H, W, C]`` -> one ``[rows * H, columns * W, C]`` image (row-major, black padding)."""
    t, h, w, c = frames.shape
    columns = columns or min(t, max(1, math.ceil(math.sqrt(t))))
    rows = math.ceil(t / columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = frame
    return grid


def write_mp4(frames: np.ndarray, path: str, fps: float = 8.0) -> None:
    cv2 = _cv2()
    t, h, w, c = frames.shape
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h), isColor=c == 3)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4v writer for {path}")
    try:
        for frame in frames:
            writer.write(_bgr(frame))
    finally:
        writer.release()


def encode_gif(frames: np.ndarray, fps: float = 8.0) -> bytes:
    """Animated GIF bytes (loops forever); also what a TensorBoard image summary can show."""
    cv2 = _cv2()
    anim = cv2.Animation()
    anim.frames = [_bgr(f) if f.shape[-1] == 3 else np.repeat(f, 3, axis=-1) for f in frames]
    anim.durations = [max(1, int(round(1000.0 / fps)))] * len(frames)
    anim.loop_count = 0
    ok, buf = cv2.imencodeanimation(".gif", anim)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the GIF")
    return buf.tobytes()


def _write(kind: str, frames: np.ndarray, path: str, fps: float) -> None:
    """Write ``frames`` (checked ``uint8 [T, H, W, C]``) to ``path`` as ``kind`` (one of ``OUTPUT_KINDS``)."""
    if kind == "mp4":
        write_mp4(frames, path, fps)
    elif kind == "gif":
        with open(path, "wb") as f:
            f.write(encode_gif(frames, fps))
    elif kind == "png":
        if not _cv2().imwrite(path, _bgr(frame_grid(frames))):
            raise RuntimeError(f"OpenCV failed to write {path}")
    elif kind == "npy":
        np.save(path, frames)
    else:
        raise ValueError(f"unknown output kind {kind!r}; choose from {OUTPUT_KINDS}")


def write_video_files(video, output_dir: str, name: str, fps: float = 8.0, kinds=OUTPUT_KINDS) -> dict:
    """Write one ``uint8 [T, H, W, C]`` video as ``name.{mp4,gif,png,npy}``; returns ``{kind: path}``."""
    _cv2()  # fail before anything is written when OpenCV is missing
    frames = _as_frames(video)
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for kind in kinds:
        path = os.path.join(output_dir, f"{name}.{kind}")
        _write(kind, frames, path, fps)
        paths[kind] = path
    return paths


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
    frames = _as_frames(video)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(kind, frames, path, fps)
    return path
