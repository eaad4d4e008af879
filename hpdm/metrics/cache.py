"""Cache of real-data FVD statistics (paper Appendix B: real stats come from the UCF-101 train set).

Extracting I3D features of a whole dataset is the slow half of FVD and does not change between
evaluations, so the statistics are stored as ``.npz`` files (``mean``, ``cov``, ``count``) named by
a hash of everything they depend on: the data source description, the evaluation resolution, the
frame count and the detector file content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable, Sequence

from hpdm.metrics.stats import FeatureStats

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/hpdm/fvd_stats`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hpdm", "fvd_stats")


def stats_cache_key(source: str, resolution: Sequence[int], num_frames: int, detector_id: str) -> str:
    """Stable hex key of (source description, (H, W), frame count, detector fingerprint)."""
    payload = json.dumps(
        {
            "source": source,
            "resolution": [int(r) for r in resolution],
            "num_frames": int(num_frames),
            "detector": detector_id,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def cached_stats(cache_dir: str | None, key: str, compute: Callable[[], FeatureStats]) -> tuple[FeatureStats, bool]:
    """Loads the statistics stored under ``key`` or computes and stores them.

    Returns ``(stats, loaded_from_cache)``. ``cache_dir=None`` disables the cache.
    """
    if not cache_dir:
        return compute(), False
    path = os.path.join(cache_dir, f"real_stats_{key}.npz")
    if os.path.isfile(path):
        log.info("loading cached real statistics %s", path)
        return FeatureStats.load(path), True
    stats = compute()
    os.makedirs(cache_dir, exist_ok=True)
    stats.save(path)
    log.info("cached real statistics to %s", path)
    return stats, False
