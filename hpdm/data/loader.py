"""The training loader: source -> (epoch, index) -> hierarchies in parallel -> batches -> prefetch.

Built on ``torchdata.nodes`` (docs/design.md, "Data"), whose nodes come through ``hpdm.data.nodes``, the one
module that imports torchdata: ``EpochSampler -> ParallelMapper(MakeHierarchy) -> DropSkipped ->
Batcher -> collate -> Prefetcher``, wrapped in a ``Loader``. Workers are threads by default (OpenCV
and torch release the GIL) or processes; either way they receive objects already configured by gin
in the parent. Decoding never runs on the trainer's thread: the workers decode, or with no workers
the prefetch thread does (only ``num_workers=0, prefetch=0`` decodes inside ``next()``). The loader
never ends: epochs follow one another and the epoch counter lives in the state, so the trainer only
calls ``next()``.

A run resumed on another number of ranks cannot load its per-rank states (each names its rank and
world size); ``TrainLoader.continue_from`` takes all of them and continues the global sample order
where they stopped (``hpdm.data.nodes.continue_epoch``).
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Dict, Optional, Sequence, Tuple

import gin
import torch.distributed as dist

from hpdm.data.base import ClipSpec, Source
from hpdm.data.hierarchy import AsArrays, MakeHierarchy
from hpdm.data.nodes import (
    Batcher,
    DropSkipped,
    EpochSampler,
    Loader,
    Mapper,
    ParallelMapper,
    Prefetcher,
    collate,
    continue_epoch,
    shutdown_pipeline,
)
from hpdm.data.synthetic import SyntheticVideos
from hpdm.pyramid import Pyramid

_STATE_VERSION = 1
_SAMPLER_KEYS = frozenset({"epoch", "position", "length", "seed", "rank", "world_size"})
_OPEN_LOADERS: "weakref.WeakSet[TrainLoader]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Worker threads still inside a torch op when the interpreter tears down abort the process.
    for loader in list(_OPEN_LOADERS):
        loader.close()


def dist_rank_world(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    """Explicit values win; otherwise torch.distributed's when initialised; otherwise (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    return int(rank), int(world_size)


class TrainLoader:
    """An endless iterator of batches with exact resume.

    Batches are dicts (see ``hpdm.data.nodes.collate``): ``x [B, L+1, C, t, h, w]`` float32 in
    ``[-1, 1]``, ``coords [B, L+1, 6]``, ``label`` LongTensor[B] when the source has classes, ``text``
    list[str] when it has captions. ``state_dict()`` after k batches, loaded into a fresh loader built
    with the same arguments, makes it yield exactly batches k+1, k+2, ... of the uninterrupted run.

    Attributes: ``source``, ``pyramid``, ``spec``, ``batch_size``, ``num_classes``, ``class_names``,
    ``has_text``, ``rank``, ``world_size``.
    """

    def __init__(
        self,
        root,
        source: Source,
        pyramid: Pyramid,
        spec: ClipSpec,
        batch_size: int,
        rank: int,
        world_size: int,
        sampler: Optional[EpochSampler] = None,
    ):
        self._loader = Loader(root, restart_on_stop_iteration=False)
        self._it = None
        self._sampler = sampler
        self.source, self.pyramid, self.spec, self.batch_size = source, pyramid, spec, batch_size
        self.rank, self.world_size = rank, world_size
        self.num_classes = int(source.num_classes)
        self.class_names = tuple(source.class_names)
        self.has_text = bool(source.has_text)
        _OPEN_LOADERS.add(self)

    def close(self) -> None:
        """Stop the pipeline's threads and worker processes (also done at interpreter exit)."""
        if self._loader is not None:
            shutdown_pipeline(self._loader)
        self._it = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, Any]:
        if self._it is None:
            self._it = iter(self._loader)
        return next(self._it)

    def state_dict(self) -> Dict[str, Any]:
        return {"version": _STATE_VERSION, "loader": self._loader.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported data loader state version {state.get('version')!r}")
        self._loader.load_state_dict(state["loader"])
        self._it = None  # the next __next__ restarts the pipeline from the loaded state

    def continue_from(self, states: Sequence[Dict[str, Any]]) -> None:
        """Continue where the loaders of another world size stopped: ``states`` are their
        ``state_dict()``s, one per old rank in rank order. Call it instead of ``load_state_dict``,
        before the first batch. No item of the interrupted epoch is visited twice or left out (see
        ``continue_epoch`` for the epoch's last items); the skip count starts afresh."""
        if self._sampler is None:
            raise ValueError("this loader was built without its sampler: it cannot continue another world size's order")
        if self._it is not None:
            raise RuntimeError("continue_from must come before the first batch")
        samplers = [sampler_state(s) for s in states]
        self._sampler.start_at(continue_epoch(samplers, self.rank, self.world_size))


def sampler_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """The ``EpochSampler`` state inside a ``TrainLoader.state_dict()``: how far its rank got."""
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"unsupported data loader state version {state.get('version')!r}")
    found = _find_sampler_state(state["loader"])
    if found is None:
        raise ValueError("the saved data loader state holds no sampler state")
    return found


def _find_sampler_state(node: Any) -> Optional[Dict[str, Any]]:
    if not isinstance(node, dict):
        return None
    if _SAMPLER_KEYS <= node.keys():
        return node
    # A snapshot taken some items back is replayed on load; its sampler position would be behind.
    if node.get("steps_since_snapshot", 0):
        raise ValueError("the saved data loader state is a snapshot from earlier items: its position is not exact")
    for value in node.values():
        found = _find_sampler_state(value)
        if found is not None:
            return found
    return None


@gin.configurable
def build_train_loader(
    batch_size: int = gin.REQUIRED,
    target_res: Sequence[int] = gin.REQUIRED,
    patch_res: Sequence[int] = gin.REQUIRED,
    source: Optional[Source] = None,
    seed: int = 0,
    num_workers: int = 0,
    worker_method: str = "thread",
    prefetch: int = 2,
    frame_stride: int = 1,
    fps: Optional[float] = None,
    random_offset: bool = True,
    random_crop: bool = True,
    shuffle: bool = True,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> TrainLoader:
    """The training loader of nested patch hierarchies (paper Sec. 4.1; one patch per level).

    Args:
      batch_size: hierarchies per batch (per rank).
      target_res: full-resolution clip ``(T, H, W)``; ``T`` frames are read per clip.
      patch_res: patch size ``(t, h, w)``; with ``target_res`` it fixes the pyramid.
      source: a data source (``hpdm.data.base.Source``); default ``SyntheticVideos()``.
      seed: sampling seed: epoch permutations and per-sample draws derive from (seed, epoch, index).
      num_workers: parallel decoding workers (0: decode in the prefetch thread, or in the caller's
        thread when ``prefetch`` is 0 too).
      worker_method: "thread" or "process".
      prefetch: batches prepared ahead (0 disables the prefetch thread).
      frame_stride, fps, random_offset, random_crop: clip cutting, see ``ClipSpec``.
      shuffle: permute the indices each epoch.
      rank, world_size: this process's shard; default from torch.distributed when initialised.
    """
    if worker_method not in ("thread", "process"):
        raise ValueError(f"worker_method must be 'thread' or 'process', got {worker_method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = SyntheticVideos() if source is None else source
    pyramid = Pyramid(target_res, patch_res)
    spec = ClipSpec(pyramid.target_res, frame_stride, fps, random_offset, random_crop)
    rank, world_size = dist_rank_world(rank, world_size)
    source.prepare(spec)

    sampler = node = EpochSampler(len(source), seed, rank, world_size, shuffle)
    make = MakeHierarchy(source, pyramid, spec, seed)
    if num_workers > 0:
        if worker_method == "process":
            make = AsArrays(make)
        node = ParallelMapper(node, make, num_workers=num_workers, method=worker_method, in_order=True)
    else:
        node = Mapper(node, make)
    node = DropSkipped(node, getattr(source, "root", type(source).__name__))
    node = Mapper(Batcher(node, batch_size, drop_last=True), collate)
    if prefetch > 0:
        node = Prefetcher(node, prefetch_factor=prefetch)
    return TrainLoader(node, source, pyramid, spec, batch_size, rank, world_size, sampler)
