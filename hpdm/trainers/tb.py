"""TensorBoard logging: scalars, the operative config as text, and videos as animated GIFs.

``SummaryWriter.add_video`` silently logs nothing without moviepy (and breaks on moviepy 2), so
videos are encoded here as animated GIF with OpenCV (``cv2.imencodeanimation``, OpenCV >= 4.12) and
written as ordinary image summaries: TensorBoard's image dashboard plays GIFs.
"""

from __future__ import annotations

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter


def encode_gif(video: np.ndarray, fps: float = 8.0) -> bytes:
    """uint8 ``[T, H, W, C]`` RGB (C = 1 or 3) -> animated GIF bytes via OpenCV."""
    import cv2

    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"encode_gif expects uint8 [T, H, W, 1|3], got {video.dtype} {video.shape}")
    if not hasattr(cv2, "imencodeanimation"):
        raise RuntimeError("GIF summaries need OpenCV >= 4.12 (cv2.imencodeanimation)")
    anim = cv2.Animation()
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    # OpenCV images are BGR.
    anim.frames = [np.ascontiguousarray(f[..., ::-1]) for f in video]
    anim.durations = [max(1, int(round(1000.0 / fps)))] * len(video)
    anim.loop_count = 0
    ok, buf = cv2.imencodeanimation(".gif", anim)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the GIF")
    return bytes(np.asarray(buf).tobytes())


def gif_summary(tag: str, video: np.ndarray, fps: float = 8.0) -> Summary:
    t, h, w, c = np.asarray(video).shape
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=encode_gif(video, fps))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class TBLogger:
    """Thin wrapper over ``SummaryWriter`` writing into ``workdir`` (rank 0 only)."""

    def __init__(self, logdir: str):
        self.writer = SummaryWriter(log_dir=logdir)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.writer.add_scalar(tag, float(value), global_step=step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        # Markdown code block keeps gin's indentation readable in TensorBoard's text dashboard.
        self.writer.add_text(tag, "    " + text.replace("\n", "\n    "), global_step=step)

    def videos(self, tag: str, videos: np.ndarray, step: int, fps: float = 8.0) -> None:
        """uint8 ``[N, T, H, W, C]`` -> one GIF image summary per video (``tag/i``)."""
        writer = self.writer._get_file_writer()  # the public API only writes PNG-encoded tensors
        for i, video in enumerate(np.asarray(videos)):
            writer.add_summary(gif_summary(f"{tag}/{i}", video, fps), global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
