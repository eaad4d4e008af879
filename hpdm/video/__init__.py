"""Frames and video files: the lowest layer under data, metrics, samplers and trainers.

``hpdm.video.frames``  uint8 frames <-> model tensors (``to_float``, ``to_uint8``), ``resize_crop``.
``hpdm.video.files``   which files are videos and images, reading them (a clip decodes only the
                       frames it needs), writing ``.mp4`` / ``.gif`` / ``.png`` / ``.npy``.
``hpdm.video.skips``   ``SkipReport``, the one counter of files left out, by reason.

Imports nothing from hpdm but ``hpdm.progress`` (docs/design.md, "Layering").
"""

from hpdm.video.files import (
    IMAGE_EXTENSIONS,
    OUTPUT_KINDS,
    VIDEO_EXTENSIONS,
    MediaInfo,
    UnreadableMedia,
    encode_gif,
    probe_image,
    probe_video,
    read_array_video,
    read_frames,
    read_image,
    read_video,
    write_video,
)
from hpdm.video.frames import resize_crop, to_float, to_uint8
from hpdm.video.skips import SkipReport

__all__ = [
    "IMAGE_EXTENSIONS",
    "MediaInfo",
    "OUTPUT_KINDS",
    "SkipReport",
    "UnreadableMedia",
    "VIDEO_EXTENSIONS",
    "encode_gif",
    "probe_image",
    "probe_video",
    "read_array_video",
    "read_frames",
    "read_image",
    "read_video",
    "resize_crop",
    "to_float",
    "to_uint8",
    "write_video",
]
