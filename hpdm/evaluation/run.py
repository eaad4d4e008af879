"""One evaluation: FVD, FVD@N, Inception Score and seam score of fakes against reals (paper Sec. 5, App. B).

``evaluate`` streams the fake videos through the detectors (seam score at their native size,
then prepared like training clips), the real ones after them (their statistics cached: they do
not change between evaluations), and returns the numbers with a ``"protocol"`` record of how they
were measured: detector hashes, frames, resolution, real and fake sources, sampler, guidance, seed
and the hpdm version.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

import hpdm
from hpdm import metrics
from hpdm.evaluation.fakes import FakeVideos, FolderFakes, SampledFakes
from hpdm.evaluation.reals import RealVideos
from hpdm.evaluation.settings import EvaluationSettings, SettingsError, resolve_settings

log = logging.getLogger(__name__)


def seam_edges_fn(patch_res: Sequence[int] | None, overlap: str):
    """``f(native (T, H, W)) -> tile edges`` of the sampler's last-level tiling, or None without
    ``patch_res`` (no seam score); edges are computed once per video size."""
    if patch_res is None:
        return None
    cache = {}

    def edges(shape_thw):
        if shape_thw not in cache:
            cache[shape_thw] = metrics.video_tile_edges(shape_thw, patch_res, overlap)
        return cache[shape_thw]

    return edges


def open_detector(path: str, sha256: str | None, info: metrics.DetectorInfo, device):
    """``(TorchScript module, SHA-256)``; a pinned hash is checked before the file is loaded."""
    resolved = metrics.check_detector_file(path, info)
    digest = metrics.verify_sha256(resolved, sha256, info)
    return metrics.load_detector(resolved, info, device), digest


def real_statistics(
    i3d, i3d_sha: str, reals: RealVideos, settings: EvaluationSettings, resolution, device, *,
    batch_size: int, cache_dir: str | None,
):
    """``(FeatureStats, from cache)`` of the real clips, prepared at the fakes' evaluation size;
    ``cache_dir`` None computes them without a cache."""

    def compute():
        extractor = metrics.FeatureExtractor(
            i3d, settings.num_frames, resolution, batch_size, device, name="real", total=reals.total
        )
        for video in reals.videos(settings.num_frames, resolution):
            extractor.add(video)
        reals.skips.log()
        return extractor.finish().stats

    source = reals.cache_id(settings.num_frames, resolution)
    key = metrics.stats_cache_key(source, resolution, settings.num_frames, i3d_sha)
    return metrics.cached_stats(cache_dir, key, compute)


def protocol_record(
    settings: EvaluationSettings, i3d_sha: str, c3d_sha: str | None, is_splits: int, resolution,
    reals: RealVideos, fakes: FakeVideos,
) -> dict:
    """How the numbers were measured: every result records its protocol."""
    protocol = settings.protocol
    return {
        "name": None if protocol is None else protocol.name,
        "summary": None if protocol is None else protocol.summary,
        "overrides": settings.overrides,
        "detector_sha256": i3d_sha,
        "c3d_sha256": c3d_sha,
        "is_splits": is_splits if c3d_sha else None,
        "num_frames": settings.num_frames,
        "resolution": [int(v) for v in resolution],
        "preparation": metrics.PREPARATION,
        "real_source": reals.record(),
        "fake_source": fakes.record,
        "sampler": fakes.sampler,
        "guidance_scale": fakes.guidance_scale,
        "seed": fakes.seed,
        "hpdm_version": hpdm.__version__,
    }


def evaluate(
    *,
    detector: str,
    real: RealVideos,
    fake: FolderFakes | SampledFakes,
    settings: EvaluationSettings | None = None,
    detector_sha256: str | None = None,
    c3d_detector: str | None = None,
    c3d_detector_sha256: str | None = None,
    is_splits: int = metrics.IS_NUM_SPLITS,
    batch_size: int = 16,
    patch_res: Sequence[int] | None = None,
    stats_cache_dir: str | None = None,
    cache_real_stats: bool = True,
    device: str | torch.device | None = None,
) -> dict:
    """FVD (and IS, seam scores) of ``fake`` against ``real``; returns the result dictionary.

    Args:
      detector: path of the I3D TorchScript file ``i3d_torchscript.pt`` (FVD). TorchScript runs
        code: pass only a file from a source you trust, and pin it with ``detector_sha256``.
      real: the real videos (``open_reals``).
      fake: ``FolderFakes(path)`` or ``SampledFakes(workdir, ...)``.
      settings: what is measured (``resolve_settings``); default: ``resolve_settings()``.
      detector_sha256 / c3d_detector_sha256: refuse a detector file with another SHA-256.
      c3d_detector: path of ``c3d_ucf101.pt``; given, the Inception Score is computed.
      is_splits: Inception Score splits.
      batch_size: videos per detector call.
      patch_res: last-level tile ``(T, H, W)`` of the seam score; sampled fakes default to the
        model's, a folder has no seam score without it.
      stats_cache_dir / cache_real_stats: where real statistics are cached (default
        ``hpdm.metrics.default_cache_dir()``), and whether they are.
      device: detector and sampler device; default cuda when available, else cpu.

    The keys are ``"fvd"``, ``"num_fake"``, ``"num_real"``, ``"num_frames"``, ``"resolution"``,
    ``"real_stats_cached"``, ``"skipped_fake"``, ``"skipped_real"``, ``"is"`` and ``"is_std"``
    with a C3D detector, ``"seam_t"``, ``"seam_h"``, ``"seam_w"`` with a tile grid, and ``"protocol"``.
    """
    settings = resolve_settings() if settings is None else settings
    if settings.num_frames < 1:
        raise SettingsError("num_frames must be positive")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    i3d, i3d_sha = open_detector(detector, detector_sha256, metrics.I3D, device)
    c3d, c3d_sha = None, None
    if c3d_detector:
        c3d, c3d_sha = open_detector(c3d_detector, c3d_detector_sha256, metrics.C3D, device)
    fakes = fake.open(settings, real, device, patch_res)

    extractor = metrics.FeatureExtractor(
        i3d, settings.num_frames, settings.resolution, batch_size, device, c3d=c3d,
        seam_edges=seam_edges_fn(fakes.patch_res, settings.overlap), name="fake", total=fakes.total,
    )
    for video in fakes.videos:
        extractor.add(video)
    fake_features = extractor.finish()
    fakes.skips.log()
    if settings.num_fake and fake_features.stats.count < settings.num_fake:
        raise ValueError(f"asked for {settings.num_fake} fake videos, only {fake_features.stats.count} are usable")

    cache_dir = (stats_cache_dir or metrics.default_cache_dir()) if cache_real_stats else None
    real_stats, from_cache = real_statistics(
        i3d, i3d_sha, real, settings, fake_features.resolution, device, batch_size=batch_size, cache_dir=cache_dir
    )
    fake_stats = fake_features.stats
    result = {
        "fvd": metrics.frechet_distance(
            fake_stats.mean, fake_stats.covariance(), real_stats.mean, real_stats.covariance()
        ),
        "num_fake": fake_stats.count,
        "num_real": real_stats.count,
        "num_frames": settings.num_frames,
        "resolution": list(fake_features.resolution),
        "real_stats_cached": from_cache,
        "skipped_fake": fakes.skips.count,
        "skipped_real": real.skips.count,
    }
    if fake_features.probs is not None:
        result["is"], result["is_std"] = metrics.inception_score(fake_features.probs, is_splits)
    for axis, score in fake_features.seams.items():
        result[f"seam_{axis}"] = score
    result["protocol"] = protocol_record(
        settings, i3d_sha, c3d_sha, is_splits, fake_features.resolution, real, fakes
    )
    return result
