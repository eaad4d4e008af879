"""Evaluation metrics of the paper (Sec. 5 "Evaluation", Appendix B): videos in, numbers out.

FVD / FVD@N with the literature's TorchScript I3D, the UCF-101 video Inception Score with the
TorchScript C3D, and a seam score for tiled inference (Sec. 4.4). ``protocols`` names the paper's
and the literature's ways of computing them. Everything here takes arrays or tensors: reading
folders and datasets, and sampling a trained model, is ``hpdm.evaluation``'s part.
"""

from hpdm.metrics.cache import cached_stats, default_cache_dir, stats_cache_key
from hpdm.metrics.detectors import (
    C3D,
    I3D,
    DetectorInfo,
    DetectorMismatchError,
    DetectorNotFoundError,
    c3d_probabilities,
    check_detector_file,
    file_fingerprint,
    i3d_features,
    load_detector,
    verify_sha256,
)
from hpdm.metrics.frechet import frechet_distance, sqrtm_psd, trace_sqrt_product
from hpdm.metrics.inception_score import IS_NUM_FRAMES, IS_NUM_SPLITS, inception_score
from hpdm.metrics.pipeline import PREPARATION, ExtractionResult, FeatureExtractor, prepare_clip
from hpdm.metrics.progress import ProgressLog, format_duration
from hpdm.metrics.protocols import PROTOCOLS, Protocol, apply_overrides, get_protocol
from hpdm.metrics.seams import SeamAccumulator, seam_score, tile_edges, video_tile_edges
from hpdm.metrics.stats import FeatureStats

__all__ = [
    "C3D", "I3D", "IS_NUM_FRAMES", "IS_NUM_SPLITS", "PREPARATION", "PROTOCOLS", "DetectorInfo",
    "DetectorMismatchError", "DetectorNotFoundError", "ExtractionResult", "FeatureExtractor",
    "FeatureStats", "ProgressLog", "Protocol", "SeamAccumulator", "apply_overrides",
    "c3d_probabilities", "cached_stats", "check_detector_file", "default_cache_dir",
    "file_fingerprint", "format_duration", "frechet_distance", "get_protocol", "i3d_features",
    "inception_score", "load_detector", "prepare_clip", "seam_score", "sqrtm_psd",
    "stats_cache_key", "tile_edges", "trace_sqrt_product", "verify_sha256", "video_tile_edges",
]
