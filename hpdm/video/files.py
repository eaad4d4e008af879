"""Video and image files through OpenCV: which files count, reading frames, writing videos.

Frames are uint8 ``[T, H, W, C]`` RGB everywhere in hpdm; OpenCV decodes and encodes BGR, so every
reader and writer here converts. A file that cannot be read raises ``UnreadableMedia``, whose
message says what went wrong (not which file: callers name the file in their skip reports).

Reading a clip (``read_frames``) decodes only the frames it needs: the capture seeks to the first
frame, the seek is checked (containers without exact frame seeking are read forward from the start
instead, so a clip is always the frames a sequential decode gives), and frames between the ones a
stride keeps are grabbed, never converted or copied.

Writing (``write_video``) picks the format from the file's extension: ``.mp4`` (``mp4v``), ``.gif``
(OpenCV's own animated-GIF encoder, ``cv2.imencodeanimation``, OpenCV 4.12 and later), ``.png``
(all frames in one grid image) or ``.npy`` (the exact array, the one to use for metrics).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch

# Every container OpenCV's FFmpeg backend opens (each written and read back by tests/test_video.py
# where OpenCV can encode it). The order is a reading preference, for folders that hold one video
# in several containers: the GIF is last, its 256-colour palette moves colours the most.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# What ``write_video`` writes, by file extension.
OUTPUT_KINDS = ("mp4", "gif", "png", "npy")


class UnreadableMedia(ValueError):
    """A file OpenCV cannot open or decode (or an array file that holds no video)."""


@dataclass(frozen=True)
class MediaInfo:
    """What an index records about one file: frame count, frame rate, frame size."""

    frames: int
    fps: float
    height: int
    width: int


# ------------------------------------------------------------------ reading


def _open(path: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise UnreadableMedia("OpenCV cannot open it")
    return capture


def _rgb(frame: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """A decoded BGR (or greyscale) frame as RGB, written into ``out`` when given."""
    code = cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(frame, code) if out is None else cv2.cvtColor(frame, code, dst=out)


def probe_video(path: str) -> MediaInfo:
    """Header facts of a video, after checking that its first frame decodes."""
    capture = _open(path)
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, frame = capture.read()
        if not ok or frame is None:
            raise UnreadableMedia("no decodable frame")
        if frames <= 0:
            # Some containers carry no frame count; count by decoding once (an index caches it).
            frames = 1
            while capture.grab():
                frames += 1
        return MediaInfo(frames=frames, fps=fps, height=int(frame.shape[0]), width=int(frame.shape[1]))
    finally:
        capture.release()


def probe_image(path: str) -> MediaInfo:
    """Cheap check (file signature only, no decode): full decode of millions of images is too slow."""
    if not cv2.haveImageReader(path):
        raise UnreadableMedia("not an image OpenCV can read")
    return MediaInfo(frames=1, fps=0.0, height=0, width=0)


def _seek(capture: cv2.VideoCapture, start: int) -> bool:
    """Put ``capture`` on frame ``start``; False when the container did not land exactly there."""
    if start == 0:
        return True
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    return round(capture.get(cv2.CAP_PROP_POS_FRAMES)) == start


def _open_at(path: str, start: int) -> cv2.VideoCapture:
    """A capture whose next frame is frame ``start`` of a sequential decode."""
    capture = _open(path)
    if _seek(capture, start):
        return capture
    # A missed seek may leave the decoder anywhere: start again and walk forward (grab: no copy).
    capture.release()
    capture = _open(path)
    for done in range(start):
        if not capture.grab():
            capture.release()
            raise UnreadableMedia(f"video ended after {done} frames, before the clip's first frame {start}")
    return capture


def read_frames(path: str, start: int, count: int, stride: int = 1) -> np.ndarray:
    """Frames ``start, start + stride, ...`` (``count`` of them) as uint8 ``[count, h, w, 3]`` RGB.

    Identical to taking those frames from a decode of the whole video, but only frames from the
    seek point on are decoded, and only the kept ones are converted.
    """
    if count < 1 or stride < 1 or start < 0:
        raise ValueError(f"read_frames needs start >= 0, count >= 1, stride >= 1; got {start}, {count}, {stride}")
    capture = _open_at(path, start)
    try:
        out: Optional[np.ndarray] = None
        for i in range(count):
            ok, frame = capture.read()
            if not ok or frame is None:
                raise UnreadableMedia(f"decoded {i} of {count} frames from frame {start} (stride {stride})")
            if out is None:
                out = np.empty((count, frame.shape[0], frame.shape[1], 3), np.uint8)
            elif frame.shape[:2] != out.shape[1:3]:
                raise UnreadableMedia(f"frame {start + i * stride} is {frame.shape[:2]}, the clip's first {out.shape[1:3]}")
            _rgb(frame, out[i])
            for _ in range(stride - 1 if i + 1 < count else 0):
                if not capture.grab():
                    raise UnreadableMedia(f"video ended after {i + 1} of {count} frames")
        return out
    finally:
        capture.release()


def read_video(path: str, max_frames: Optional[int] = None) -> np.ndarray:
    """The first ``max_frames`` frames (all when None) as uint8 ``[T, h, w, 3]`` RGB.

    A video that ends early gives the frames it has; one with no decodable frame is unreadable.
    """
    capture = _open(path)
    try:
        frames = []
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            frames.append(_rgb(frame))
    finally:
        capture.release()
    if not frames:
        raise UnreadableMedia("no decodable frame")
    return np.stack(frames)


def read_array_video(path: str, max_frames: Optional[int] = None) -> np.ndarray:
    """The first ``max_frames`` frames of a ``.npy`` video: uint8 ``[T, H, W, C]``, C in (1, 3) -> RGB.

    ``hpdm-sample`` saves the exact array it generated; memory-mapped, so a long video costs only
    the frames taken.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UnreadableMedia(f"cannot load it as a numpy array: {err}") from err
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3) or array.shape[0] == 0:
        raise UnreadableMedia(f"it holds {array.dtype} {array.shape}; a video array is uint8 [T, H, W, C] with C in (1, 3)")
    frames = np.array(array[:max_frames])
    # Greyscale like OpenCV's GRAY2RGB: consumers take three channels.
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def read_image(path: str) -> np.ndarray:
    """uint8 ``[h, w, 3]`` RGB (greyscale and alpha images are converted)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableMedia("OpenCV cannot decode it")
    return _rgb(image)


# ------------------------------------------------------------------ writing


def check_frames(video) -> np.ndarray:
    """A video (tensor or array) as a contiguous uint8 ``[T, H, W, C]`` array, C in (1, 3)."""
    frames = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected a uint8 video [T, H, W, C] with C in (1, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def _bgr(frame: np.ndarray) -> np.ndarray:
    return frame if frame.shape[-1] == 1 else np.ascontiguousarray(frame[..., ::-1])


def frame_grid(frames: np.ndarray, columns: Optional[int] = None) -> np.ndarray:
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
    """uint8 ``[T, H, W, C]`` -> an ``mp4v`` MP4 at ``path``."""
    frames = check_frames(frames)
    _, h, w, c = frames.shape
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h), isColor=c == 3)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4v writer for {path}")
    try:
        for frame in frames:
            writer.write(_bgr(frame))
    finally:
        writer.release()


def encode_gif(video, fps: float = 8.0) -> bytes:
    """uint8 ``[T, H, W, C]`` RGB (C = 1 or 3) -> animated GIF bytes that loop forever.

    Also what a TensorBoard image summary shows (its image dashboard plays GIFs).
    """
    frames = check_frames(video)
    if not hasattr(cv2, "imencodeanimation"):
        raise RuntimeError("GIF encoding needs OpenCV >= 4.12 (cv2.imencodeanimation)")
    anim = cv2.Animation()
    # Greyscale is repeated to three channels; a grey frame reads the same in BGR.
    anim.frames = [_bgr(f) if f.shape[-1] == 3 else np.repeat(f, 3, axis=-1) for f in frames]
    anim.durations = [max(1, int(round(1000.0 / fps)))] * len(frames)
    anim.loop_count = 0
    ok, buf = cv2.imencodeanimation(".gif", anim)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the GIF")
    return np.asarray(buf).tobytes()


def write_video(video, path: str, fps: float = 8.0) -> str:
    """Write one uint8 ``[T, H, W, C]`` video (tensor or array) to ``path``, in the format its
    extension names (``OUTPUT_KINDS``); returns ``path``. The parent directory must exist."""
    kind = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"write_video writes {', '.join('.' + k for k in OUTPUT_KINDS)}; cannot tell a format from {path!r}")
    frames = check_frames(video)
    if kind == "mp4":
        write_mp4(frames, path, fps)
    elif kind == "gif":
        with open(path, "wb") as f:
            f.write(encode_gif(frames, fps))
    elif kind == "png":
        if not cv2.imwrite(path, _bgr(frame_grid(frames))):
            raise RuntimeError(f"OpenCV failed to write {path}")
    else:
        np.save(path, frames)
    return path
