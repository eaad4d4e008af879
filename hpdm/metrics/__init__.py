"""Evaluation metrics of the paper (Sec. 5 "Evaluation", Appendix B).

FVD / FVD@N with the literature's TorchScript I3D, the UCF-101 video Inception Score with the
TorchScript C3D, and a seam score for tiled inference (Sec. 4.4). The ``hpdm-eval`` binary
(``hpdm.trainers.evaluate``) wires them to folders of videos or a trained workdir.
"""

from hpdm.metrics.cache import cached_stats, default_cache_dir, stats_cache_key
from hpdm.metrics.detectors import (
    C3D,
    I3D,
    DetectorInfo,
    DetectorNotFoundError,
    c3d_probabilities,
    check_detector_file,
    file_fingerprint,
    i3d_features,
    load_detector,
)
from hpdm.metrics.frechet import frechet_distance, sqrtm_psd, trace_sqrt_product
from hpdm.metrics.inception_score import IS_NUM_FRAMES, IS_NUM_SPLITS, inception_score
from hpdm.metrics.pipeline import ExtractionResult, FeatureExtractor
from hpdm.metrics.seams import (
    SeamAccumulator,
    overlap_stride,
    seam_score,
    tile_edges,
    tile_starts,
    video_tile_edges,
)
from hpdm.metrics.stats import FeatureStats
from hpdm.metrics.video_io import (
    SkipCounts,
    VideoReadError,
    iterate_folder,
    list_videos,
    read_video,
    resize_video,
)

__all__ = [
    "C3D", "I3D", "IS_NUM_FRAMES", "IS_NUM_SPLITS", "DetectorInfo", "DetectorNotFoundError",
    "ExtractionResult", "FeatureExtractor", "FeatureStats", "SeamAccumulator", "SkipCounts",
    "VideoReadError", "c3d_probabilities", "cached_stats", "check_detector_file",
    "default_cache_dir", "file_fingerprint", "frechet_distance", "i3d_features",
    "inception_score", "iterate_folder", "list_videos", "load_detector", "overlap_stride",
    "read_video", "resize_video", "seam_score", "sqrtm_psd", "stats_cache_key",
    "tile_edges", "tile_starts", "trace_sqrt_product", "video_tile_edges",
]
