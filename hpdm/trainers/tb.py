"""TensorBoard logging: scalars, the run's gin config as text, and videos as animated GIFs.

``SummaryWriter.add_video`` silently logs nothing without moviepy (and breaks on moviepy 2), so
videos are encoded as animated GIF with OpenCV (``hpdm.video.files.encode_gif``, OpenCV >= 4.12)
and written as ordinary image summaries: TensorBoard's image dashboard plays GIFs.
"""

from __future__ import annotations

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from hpdm.video.files import encode_gif


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
