"""Loader throughput in patch hierarchies per second, for ``hpdm-bench``.

Compare it with the trainer's consumption rate (hierarchies per optimisation step x steps/s): a
loader slower than the trainer starves it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, Optional, Union


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
