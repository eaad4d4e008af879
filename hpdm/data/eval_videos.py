"""Real clips for evaluation statistics (FVD reference set): full-resolution uint8 ``[T, H, W, C]``."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import gin
import numpy as np
import torch

from hpdm.data.base import ClipSpec, SkipSample, Source
from hpdm.data.loader import dist_rank_world
from hpdm.data.nodes import shard_indices
from hpdm.data.seeding import generator
from hpdm.data.synthetic import SyntheticVideos
from hpdm.video.frames import to_uint8
from hpdm.video.skips import SkipReport


@gin.configurable
def build_eval_videos(
    target_res: Sequence[int] = gin.REQUIRED,
    source: Optional[Source] = None,
    num_videos: Optional[int] = None,
    seed: int = 0,
    frame_stride: int = 1,
    fps: Optional[float] = None,
    random_offset: bool = True,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> Iterator[torch.Tensor]:
    """Yield up to ``num_videos`` clips as uint8 RGB ``[T, H, W, C]`` at ``target_res`` (centre crop).

    Videos are visited in a ``seed``-fixed random order (so the first ``n`` are a uniform sample),
    each with a random temporal offset from ``(seed, index)``; the same arguments always give the
    same clips. With several ranks each yields a disjoint share of the ``num_videos``. Files that
    fail to decode are skipped and reported at the end. Default source: ``SyntheticVideos()``.
    """
    source = SyntheticVideos() if source is None else source
    spec = ClipSpec(tuple(target_res), frame_stride, fps, random_offset, random_crop=False)
    rank, world_size = dist_rank_world(rank, world_size)
    source.prepare(spec)
    total = len(source) if num_videos is None else min(int(num_videos), len(source))
    return _iterate(source, spec, seed, total, rank, world_size)


def _iterate(source, spec, seed, total, rank, world_size) -> Iterator[torch.Tensor]:
    report = SkipReport("videos", getattr(source, "root", type(source).__name__))
    share = len(range(rank, total, world_size))
    produced = 0
    # Ranks walk disjoint strides of one fixed order; a skipped file is replaced by the rank's next.
    for index in shard_indices(len(source), seed, 0, rank, world_size).tolist():
        if produced >= share:
            break
        try:
            clip = source.load(index, spec, generator(seed, 0, index))
        except SkipSample as e:
            report.add(e.path, "unreadable", e.reason)
            continue
        produced += 1
        yield to_uint8(clip.video)
    report.log()


def first_frame_clips(
    target_res: Sequence[int],
    source: Optional[Source] = None,
    num_videos: Optional[int] = None,
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Real clips as the FVD protocol takes them (paper Appendix B): ``build_eval_videos`` with the
    first ``T`` frames at the native frame rate, centre crop, one process.

    Every clip-cutting argument is passed, so bindings a training config may hold for
    ``build_eval_videos`` (a frame stride, a target rate, random offsets) never change the real
    statistics. ``source=None`` takes the gin-bound source.
    """
    # An explicit source=None would override gin's binding of build_eval_videos.source.
    given = {} if source is None else {"source": source}
    return build_eval_videos(
        target_res=target_res,
        num_videos=num_videos,
        seed=seed,
        frame_stride=1,
        fps=None,
        random_offset=False,
        rank=0,
        world_size=1,
        **given,
    )


def class_counts(source: Source) -> Optional[np.ndarray]:
    """Videos per class label of a file-backed source's listing (for UCF-101 its split lists), or None.

    The listing, not the probed files: drawing sampler labels "with the split's class frequencies"
    needs no decoding of the videos. Unlabelled or non-file sources give None.
    """
    if not getattr(source, "num_classes", 0) or not hasattr(source, "candidates"):
        return None
    labels = [item.label for item in source.candidates(SkipReport("videos", getattr(source, "root", "")))]
    if not labels or any(label is None for label in labels):
        return None
    return np.bincount(np.asarray(labels), minlength=int(source.num_classes)).astype(np.float64)
