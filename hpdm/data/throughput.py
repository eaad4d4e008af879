"""Loader throughput in patch hierarchies per second, for ``hpdm-bench``.

Compare it with the trainer's consumption rate (hierarchies per optimisation step x steps/s): a
loader slower than the trainer starves it. ``measure_folder_throughput`` times the file-backed
path (OpenCV decode, resize and crop, hierarchy) on videos it writes, per decoding worker, so the
workers a GPU needs are the trainer's rate over the per-worker rate.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import cv2
import numpy as np

# Container of each codec ``write_test_videos`` writes: UCF-101's Xvid is MPEG-4 part 2 like mp4v;
# MJPG has only intra frames.
TEST_VIDEO_CODECS = {"mp4v": ".mp4", "MJPG": ".avi"}


def measure_throughput(
    loader: Union[Iterator[Dict[str, Any]], Callable[[], Iterator[Dict[str, Any]]], None] = None,
    num_batches: int = 20,
    warmup_batches: int = 2,
    **build_kwargs: Any,
) -> Dict[str, float]:
    """Time ``num_batches`` batches from a loader and return rates.

    Args:
      loader: a loader (anything ``next()`` gives batch dicts with ``x [B, L+1, ...]``), or a
        zero-argument factory returning one, or None to call
        ``hpdm.data.build_train_loader(**build_kwargs)`` (gin bindings apply to the other arguments).
      num_batches: batches timed after the warm-up.
      warmup_batches: batches drawn first and not timed (worker start-up, first decode, caches).
      **build_kwargs: arguments for ``build_train_loader`` when ``loader`` is None.

    Returns:
      ``{"hierarchies_per_s", "batches_per_s", "seconds", "num_batches", "batch_size",
      "startup_s"}``; ``startup_s`` covers building the loader (when built here) and the warm-up.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    start = time.perf_counter()
    owned = loader is None or not hasattr(loader, "__next__")
    if loader is None:
        from hpdm.data.loader import build_train_loader

        loader = build_train_loader(**build_kwargs)
    elif owned:
        loader = loader()
    try:
        return _time(loader, num_batches, warmup_batches, start)
    finally:
        if owned and hasattr(loader, "close"):
            loader.close()  # stop the workers of a loader built here


def _time(loader, num_batches: int, warmup_batches: int, start: float) -> Dict[str, float]:
    for _ in range(warmup_batches):
        next(loader)
    startup = time.perf_counter() - start
    count = 0
    batch_size: Optional[int] = None
    t0 = time.perf_counter()
    for _ in range(num_batches):
        batch = next(loader)
        batch_size = int(batch["x"].shape[0])
        count += batch_size
    seconds = time.perf_counter() - t0
    return {
        "hierarchies_per_s": count / seconds,
        "batches_per_s": num_batches / seconds,
        "seconds": seconds,
        "num_batches": float(num_batches),
        "batch_size": float(batch_size or 0),
        "startup_s": startup,
    }


def write_test_videos(
    root: str, count: int = 16, frames: int = 128, height: int = 256, width: int = 256, codec: str = "mp4v"
) -> list:
    """Write ``count`` videos of ``frames`` frames (``height x width``, 25 fps) into ``root/videos``.

    Textured noise drifting sideways over a moving gradient: every frame differs, so an
    inter-frame codec cannot skip any, and ``seed = video index`` makes them reproducible.
    Returns the paths written.
    """
    if codec not in TEST_VIDEO_CODECS:
        raise ValueError(f"codec must be one of {sorted(TEST_VIDEO_CODECS)}, got {codec!r}")
    folder = os.path.join(root, "videos")
    os.makedirs(folder, exist_ok=True)
    ys, xs = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"video_{i:04d}{TEST_VIDEO_CODECS[codec]}")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), 25.0, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV could not open a {codec} writer for {path}")
        noise = np.random.default_rng(i).integers(0, 128, (height, width, 3), dtype=np.uint8)
        try:
            for t in range(frames):
                gradient = ((xs + ys + 3 * t) % 256 // 2).astype(np.uint8)[..., None]
                writer.write(np.roll(noise, 2 * t, axis=1) + gradient)
        finally:
            writer.release()
        paths.append(path)
    return paths


def measure_folder_throughput(
    target_res: Sequence[int],
    patch_res: Sequence[int],
    num_workers: int = 1,
    batch_size: int = 4,
    num_batches: int = 10,
    warmup_batches: int = 2,
    root: Optional[str] = None,
    videos: int = 16,
    frames: Optional[int] = None,
    frame_size: Optional[Sequence[int]] = None,
    codec: str = "mp4v",
    worker_method: str = "thread",
) -> Dict[str, Any]:
    """Hierarchies/s of the ``VideoFolder`` training loader, in all and per decoding worker.

    Args:
      target_res, patch_res: the preset's clip and patch size ``(T, H, W)``.
      num_workers: decoding workers (>= 1; the per-worker rate divides by it).
      batch_size, num_batches, warmup_batches: as in ``measure_throughput``.
      root: a folder of videos to read; None writes ``videos`` test videos (``write_test_videos``)
        into a temporary directory, removed afterwards.
      frames: frames per written video (default ``2 T``, so random clip starts vary).
      frame_size: ``(H, W)`` of the written videos (default the target's).
      codec: "mp4v" or "MJPG", for written videos.
      worker_method: "thread" or "process".

    Returns:
      ``measure_throughput``'s dict plus ``num_workers``, ``hierarchies_per_s_per_worker`` and
      ``videos`` (what was read: a description of the written videos, or the given root).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 to measure a rate per worker, got {num_workers}")
    from hpdm.data.sources import VideoFolder

    t, h, w = (int(v) for v in target_res)
    with tempfile.TemporaryDirectory(prefix="hpdm_loader_") as tmp:
        if root is None:
            size = (h, w) if frame_size is None else tuple(int(v) for v in frame_size)
            length = 2 * t if frames is None else int(frames)
            write_test_videos(tmp, videos, length, size[0], size[1], codec)
            folder, described = os.path.join(tmp, "videos"), f"{videos} x {length} frames {size[0]}x{size[1]} {codec}"
        else:
            folder, described = root, root
        source = VideoFolder(folder, cache_dir=os.path.join(tmp, "index"))
        result: Dict[str, Any] = dict(
            measure_throughput(
                num_batches=num_batches,
                warmup_batches=warmup_batches,
                source=source,
                batch_size=batch_size,
                target_res=(t, h, w),
                patch_res=tuple(patch_res),
                num_workers=num_workers,
                worker_method=worker_method,
            )
        )
    result["num_workers"] = num_workers
    result["hierarchies_per_s_per_worker"] = result["hierarchies_per_s"] / num_workers
    result["videos"] = described
    return result
