"""Images for joint image/video training (paper Sec. 5.2): an image becomes a still video.

Following the paper (after SnapVideo), an image is repeated along time into a ``T``-frame clip.
``JointImageVideo`` mixes such stills into a video source at a configurable ratio.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import gin
import torch

from hpdm.data.base import Clip, ClipSpec, SkipSample, Source
from hpdm.data.indexed import IndexedSource, Item, class_folders, folder_items
from hpdm.video.files import IMAGE_EXTENSIONS, UnreadableMedia, probe_image, read_image
from hpdm.video.frames import resize_crop, to_float
from hpdm.video.skips import SkipReport


@gin.configurable
class ImageFolder(IndexedSource):
    """Images under ``root``, optionally one subfolder per class, optionally with a captions file.

    Class folders work as in ``VideoFolder``. Only the file signature is checked when indexing;
    an image that fails to decode later is skipped and counted by the loader.
    """

    what = "images"
    extensions = IMAGE_EXTENSIONS

    def __init__(
        self,
        root: str = gin.REQUIRED,
        captions: Optional[str] = None,
        use_class_folders: bool = True,
        cache_dir: Optional[str] = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        super().__init__(root, cache_dir)
        self.extensions = tuple(extensions)
        self.captions_file = captions
        self.class_names = tuple(class_folders(self.root)) if use_class_folders else ()
        self.num_classes = len(self.class_names)
        self.has_text = captions is not None

    @staticmethod
    def probe(path: str):
        return probe_image(path)

    def usable(self, entry: dict, spec: ClipSpec) -> Optional[str]:
        return None  # a still has every frame it is asked for

    def candidates(self, report: SkipReport) -> List[Item]:
        return folder_items(self.root, self.extensions, self.class_names, self.captions_file, report)

    def load(self, index: int, spec: ClipSpec, generator: torch.Generator) -> Clip:
        item = self.items[index]
        try:
            image = read_image(os.path.join(self.root, item.path))
        except UnreadableMedia as e:
            raise SkipSample(self.describe(index), str(e)) from None
        frame = resize_crop(image[None], spec.target_res[1:], spec.random_crop, generator)
        video = to_float(frame).expand(-1, spec.target_res[0], -1, -1).contiguous()
        return Clip(video=video, label=item.label, text=self.pick_caption(item, generator))



@gin.configurable
class JointImageVideo:
    """Videos mixed with still images (paper Sec. 5.2, joint image/video training).

    ``image_ratio`` is the expected fraction of stills per batch. One epoch holds every video once
    plus ``round(N_videos * r / (1 - r))`` stills (cycling through the images); the loader's
    per-epoch shuffle spreads them over the batches. Labels are kept when both sources have the
    same classes, captions when both have captions; any other mix is an error (a batch must not
    have labels or captions for only some samples).
    """

    def __init__(self, videos: Source = gin.REQUIRED, images: Source = gin.REQUIRED, image_ratio: float = 0.1):
        if not 0.0 <= image_ratio < 1.0:
            raise ValueError(f"image_ratio must be in [0, 1), got {image_ratio}")
        if tuple(videos.class_names) != tuple(images.class_names):
            raise ValueError(
                f"videos have {videos.num_classes} classes and images {images.num_classes} "
                "(or different class names); joint training needs the same classes or none"
            )
        if videos.has_text != images.has_text:
            raise ValueError("captions on only one of videos/images; give both a captions file or neither")
        self.videos, self.images, self.image_ratio = videos, images, float(image_ratio)
        self.class_names = tuple(videos.class_names)
        self.num_classes = len(self.class_names)
        self.has_text = videos.has_text
        self._num_stills = 0

    def prepare(self, spec: ClipSpec) -> None:
        self.videos.prepare(spec)
        self.images.prepare(spec)
        r = self.image_ratio
        self._num_stills = round(len(self.videos) * r / (1.0 - r))

    def __len__(self) -> int:
        return len(self.videos) + self._num_stills

    def _route(self, index: int):
        n = len(self.videos)
        return (self.videos, index) if index < n else (self.images, (index - n) % len(self.images))

    def describe(self, index: int) -> str:
        source, i = self._route(index)
        return source.describe(i)

    def load(self, index: int, spec: ClipSpec, generator: torch.Generator) -> Clip:
        source, i = self._route(index)
        return source.load(i, spec, generator)
