"""The per-sample map: ``(epoch, index)`` -> clip -> nested patch hierarchy (paper Sec. 4.1).

This is the function the parallel workers run. It holds only plain objects (source, pyramid,
clip spec, seed), already configured in the parent, so it pickles into worker processes without
gin. All randomness comes from one generator seeded by ``(seed, epoch, index)``: first the
source's draws (temporal offset, crop, caption), then the nested patch offsets.
"""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Union

import torch

from hpdm.data.base import ClipSpec, SkipSample, Source
from hpdm.data.seeding import generator
from hpdm.pyramid import Pyramid, extract_hierarchy, sample_nested_offsets


@dataclass(frozen=True)
class Skipped:
    """Marker a worker returns instead of a sample; the loader drops, counts and reports it."""

    path: str
    reason: str


# With OpenMP the intra-op thread count is per calling thread, so a data thread can go
# single-threaded without touching the trainer's. Small ops (pooling a 16x64x64 clip) then run
# ~20x faster than when data threads and the trainer fight over the same cores.
_PER_THREAD_POOL = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _single_threaded_here() -> None:
    in_worker_process = multiprocessing.parent_process() is not None
    in_side_thread = threading.current_thread() is not threading.main_thread()
    if (in_worker_process or (in_side_thread and _PER_THREAD_POOL)) and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class MakeHierarchy:
    """Callable ``(epoch, index) -> {"x": [L+1, C, t, h, w], "coords": [L+1, 6], "label", "text"}``."""

    def __init__(self, source: Source, pyramid: Pyramid, spec: ClipSpec, seed: int):
        self.source, self.pyramid, self.spec, self.seed = source, pyramid, spec, int(seed)

    def __call__(self, item: Tuple[int, int]) -> Union[Dict[str, Any], Skipped]:
        _single_threaded_here()
        epoch, index = item
        gen = generator(self.seed, epoch, index)
        try:
            clip = self.source.load(index, self.spec, gen)
        except SkipSample as e:
            return Skipped(e.path, e.reason)
        x, coords = extract_hierarchy(clip.video, self.pyramid, sample_nested_offsets(self.pyramid, gen))
        return {"x": x, "coords": coords, "label": clip.label, "text": clip.text, "index": index}


class AsArrays:
    """Wraps a map function for worker processes: tensors travel back as numpy arrays.

    Tensors cross process boundaries as shared-memory file descriptors that die with the worker;
    a sample still queued when the pipeline shuts down then fails to unpickle. Arrays are
    pickled by value (patches are small), and ``collate`` turns them back into tensors.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        out = self.fn(item)
        if isinstance(out, dict):
            out = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in out.items()}
        return out
