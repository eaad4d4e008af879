"""Data: video / image / text sources -> clips -> nested patch hierarchies -> batches (paper Sec. 4.1, 5).

Entry points:
  ``build_train_loader``  the endless, exactly resumable training loader (gin-configurable).
  ``build_eval_videos``   full-resolution uint8 clips of any source, for real-video statistics.
  ``measure_throughput``  loader speed in hierarchies per second, for ``hpdm-bench``;
  ``measure_folder_throughput`` the same for the OpenCV folder path, per decoding worker.

Sources (each selected by a file in ``gin/data/``): ``SyntheticVideos`` (default, no files),
``VideoFolder``, ``UCF101``, ``TextVideoPairs``, ``ImageFolder``, ``JointImageVideo``.
"""

from hpdm.data.base import Clip, ClipSpec, SkipSample, Source
from hpdm.data.eval_videos import build_eval_videos
from hpdm.data.images import ImageFolder, JointImageVideo
from hpdm.data.loader import TrainLoader, build_train_loader
from hpdm.data.nodes import shard_indices
from hpdm.data.sources import UCF101, TextVideoPairs, VideoFolder
from hpdm.data.synthetic import CLASS_NAMES, SyntheticVideos
from hpdm.data.throughput import measure_folder_throughput, measure_throughput, write_test_videos

__all__ = [
    "CLASS_NAMES",
    "Clip",
    "ClipSpec",
    "ImageFolder",
    "JointImageVideo",
    "SkipSample",
    "Source",
    "SyntheticVideos",
    "TextVideoPairs",
    "TrainLoader",
    "UCF101",
    "VideoFolder",
    "build_eval_videos",
    "build_train_loader",
    "measure_folder_throughput",
    "measure_throughput",
    "shard_indices",
    "write_test_videos",
]
