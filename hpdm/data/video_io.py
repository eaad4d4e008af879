"""OpenCV decoding of videos and images (RGB uint8 out; OpenCV itself works in BGR)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadableMedia(Exception):
    """A file OpenCV cannot open or decode."""


@dataclass(frozen=True)
class MediaInfo:
    """What the index records about one file: frame count, frame rate, frame size."""

    frames: int
    fps: float
    height: int
    width: int


def probe_video(path: str) -> MediaInfo:
    """Header facts of a video, after checking that its first frame decodes."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise UnreadableMedia("OpenCV cannot open it")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise UnreadableMedia("no decodable frame")
        if frames <= 0:
            # Some containers carry no frame count; count by decoding once (cached by the index).
            frames = 1
            while cap.grab():
                frames += 1
        return MediaInfo(frames=frames, fps=fps, height=int(frame.shape[0]), width=int(frame.shape[1]))
    finally:
        cap.release()


def probe_image(path: str) -> MediaInfo:
    """Cheap check (file signature only, no decode): full decode of millions of images is too slow."""
    if not cv2.haveImageReader(path):
        raise UnreadableMedia("not an image OpenCV can read")
    return MediaInfo(frames=1, fps=0.0, height=0, width=0)


def read_frames(path: str, start: int, count: int, stride: int) -> np.ndarray:
    """Frames ``start, start + stride, ...`` (``count`` of them) as uint8 ``[count, h, w, 3]`` RGB."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise UnreadableMedia("OpenCV cannot open it")
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok or frame is None:
                raise UnreadableMedia(f"decoded {len(frames)} of {count} frames from frame {start} (stride {stride})")
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            for _ in range(stride - 1 if len(frames) < count else 0):
                if not cap.grab():
                    raise UnreadableMedia(f"video ended after {len(frames)} of {count} frames")
        return np.stack(frames)
    finally:
        cap.release()


def read_image(path: str) -> np.ndarray:
    """uint8 ``[h, w, 3]`` RGB (greyscale and alpha images are converted)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableMedia("OpenCV cannot decode it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
