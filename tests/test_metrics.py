"""Metrics of paper Sec. 5 / Appendix B: Frechet distance, streaming stats, IS, seams, clip preparation."""

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpdm import metrics
from hpdm.pyramid import tiles


def scipy_frechet(mu1, cov1, mu2, cov2):
    """Independent reference: the literature's formula with scipy's general sqrtm."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def gaussian_features(rng, n, dim, scale=1.0, shift=0.0):
    mixing = rng.normal(size=(dim, dim)) * scale
    return rng.normal(size=(n, dim)) @ mixing + shift


# --------------------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize("dim", [4, 32])
def test_frechet_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    a = gaussian_features(rng, 500, dim)
    b = gaussian_features(rng, 400, dim, scale=0.7, shift=0.3)
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    ours = metrics.frechet_distance(*stats[0], *stats[1])
    reference = scipy_frechet(*stats[0], *stats[1])
    assert ours == pytest.approx(reference, rel=1e-6)


def test_frechet_is_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    x = gaussian_features(rng, 300, 16, shift=5.0)
    mu, cov = x.mean(0), np.cov(x, rowvar=False)
    assert abs(metrics.frechet_distance(mu, cov, mu, cov)) < 1e-8 * np.trace(cov)


def test_frechet_rank_deficient_is_finite_and_exact():
    # Fewer samples than dimensions (FVD@512 with 400-dim I3D features is like this): both sets
    # live in the same 5-dim subspace of a 40-dim space, so the distance equals the one computed
    # in that subspace, where the covariances are full rank and scipy's sqrtm is reliable.
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(40, 5)))
    low_a = gaussian_features(rng, 30, 5)
    low_b = gaussian_features(rng, 25, 5, scale=1.3, shift=-0.4)
    a, b = low_a @ basis.T, low_b @ basis.T
    ours = metrics.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    reference = scipy_frechet(low_a.mean(0), np.cov(low_a, rowvar=False), low_b.mean(0), np.cov(low_b, rowvar=False))
    assert np.isfinite(ours)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_frechet_scaled_projection_has_closed_form():
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(30, 7)))
    projection = basis @ basis.T
    a_scale, b_scale = 2.0, 0.5
    mu = np.zeros(30)
    ours = metrics.frechet_distance(mu, a_scale * projection, mu, b_scale * projection)
    assert ours == pytest.approx(7 * (np.sqrt(a_scale) - np.sqrt(b_scale)) ** 2, rel=1e-9)
    assert metrics.frechet_distance(mu, projection, mu, projection) == pytest.approx(0.0, abs=1e-10)


def test_sqrtm_psd_squares_back_and_clamps():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 10))
    cov = x.T @ x  # rank 3 in 10 dims: tiny negative eigenvalues after round-off
    root = metrics.sqrtm_psd(cov)
    assert np.all(np.isfinite(root))
    np.testing.assert_allclose(root @ root, cov, atol=1e-10)


def test_frechet_rejects_mismatched_and_nan_statistics():
    with pytest.raises(ValueError, match="matching"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- streaming statistics


def test_feature_stats_streaming_matches_numpy_with_large_offset(tmp_path):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(257, 6)) * 1e-2 + 1e4  # large mean, small spread
    stats = metrics.FeatureStats()
    for chunk in np.array_split(features, [1, 10, 100, 101]):
        stats.update(torch.from_numpy(chunk) if chunk.shape[0] == 9 else chunk)  # numpy or torch
    assert stats.count == 257
    np.testing.assert_allclose(stats.mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(features, rowvar=False, bias=True), rtol=1e-8, atol=1e-12)
    path = str(tmp_path / "stats.npz")
    stats.save(path)
    loaded = metrics.FeatureStats.load(path)
    assert loaded.count == 257
    np.testing.assert_allclose(loaded.covariance(), stats.covariance())
    loaded.update(features[:5])  # loaded statistics keep streaming
    assert loaded.count == 262


def test_feature_stats_errors():
    with pytest.raises(ValueError, match="no features"):
        metrics.FeatureStats().mean
    stats = metrics.FeatureStats()
    stats.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(np.full((1, 3), np.inf))


def test_stats_cache_key_depends_on_every_part(tmp_path):
    base = metrics.stats_cache_key("folder:a", (64, 64), 16, "abc")
    assert base == metrics.stats_cache_key("folder:a", [64, 64], 16, "abc")
    assert len({base, metrics.stats_cache_key("folder:b", (64, 64), 16, "abc"),
                metrics.stats_cache_key("folder:a", (128, 128), 16, "abc"),
                metrics.stats_cache_key("folder:a", (64, 64), 64, "abc"),
                metrics.stats_cache_key("folder:a", (64, 64), 16, "abd")}) == 5
    calls = []

    def compute():
        calls.append(1)
        stats = metrics.FeatureStats()
        stats.update(np.arange(6.0).reshape(3, 2))
        return stats

    first, cached_first = metrics.cached_stats(str(tmp_path), base, compute)
    second, cached_second = metrics.cached_stats(str(tmp_path), base, compute)
    assert (cached_first, cached_second, len(calls)) == (False, True, 1)
    np.testing.assert_allclose(first.covariance(), second.covariance())


# --------------------------------------------------------------------------- Inception Score


def reference_is(probs, splits):
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1))))
    return np.mean(scores), np.std(scores)


def test_inception_score_values():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(100, 101)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, std = metrics.inception_score(probs, num_splits=10, seed=None)
    ref_mean, ref_std = reference_is(probs, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)
    shuffled = metrics.inception_score(probs, num_splits=10, seed=42)
    perm = np.random.RandomState(42).permutation(100)
    assert shuffled[0] == pytest.approx(reference_is(probs[perm], 10)[0], rel=1e-10)
    # Confident and evenly spread predictions reach the class count; identical ones give 1.
    one_hot = np.eye(20)[np.arange(200) % 20]
    assert metrics.inception_score(one_hot, num_splits=10, seed=None)[0] == pytest.approx(20.0, rel=1e-9)
    assert metrics.inception_score(np.full((50, 7), 1 / 7), num_splits=5)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 10"):
        metrics.inception_score(probs[:5], num_splits=10)


def test_c3d_output_logits_become_probabilities():
    class Logits(torch.nn.Module):
        def forward(self, x):
            return x.float().mean(dim=(2, 3, 4)) - 100.0

    probs = metrics.c3d_probabilities(Logits(), np.zeros((2, 16, 8, 8, 3), np.uint8))
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0)


# --------------------------------------------------------------------------- seam score


def test_tile_edges():
    assert metrics.tile_edges(256, 64, True) == [32, 64, 96, 128, 160, 192, 224]
    assert metrics.tile_edges(80, 32, False) == [32, 48, 64]  # last tile flush with the far edge
    assert metrics.tile_edges(64, 64, True) == []
    edges = metrics.video_tile_edges((16, 64, 64), (16, 32, 32), "fhw")
    assert edges == {"t": [], "h": [16, 32, 48], "w": [16, 32, 48]}
    assert metrics.video_tile_edges((16, 64, 64), (8, 32, 32), "hw")["t"] == [8]
    with pytest.raises(ValueError):
        metrics.video_tile_edges((16, 64, 64), (32, 32, 32), "fhw")


def stride_tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """The seam score's former tiling, by stride (kept here as the reference the sampler's must equal)."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 64), st.integers(0, 200), st.booleans())
def test_seam_grid_is_the_sampler_tiling_and_the_former_one(tile, extra, overlap):
    """The seam edges come from the sampler's ``tile_starts``; the stride tiling the seam score used
    before (stride ``max(1, int(tile * 0.5))`` with overlap, ``tile`` without) gives the same tiles."""
    length = tile + extra
    stride = max(1, int(tile * (0.5 if overlap else 1.0)))
    assert tiles.tile_starts(length, tile, overlap) == stride_tile_starts(length, tile, stride)
    expected = sorted({e for s in stride_tile_starts(length, tile, stride) for e in (s, s + tile) if 0 < e < length})
    assert metrics.tile_edges(length, tile, overlap) == expected


def smooth_videos(rng, n, shape=(16, 64, 64)):
    """Sums of random low-frequency sinusoids: no structure at any particular pixel."""
    t, h, w = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    videos = np.zeros((n, *shape, 3))
    for i in range(n):
        for _ in range(6):
            freq = rng.uniform(0.02, 0.12, size=3)
            phase = rng.uniform(0, 2 * np.pi, size=3)
            wave = np.sin(freq[0] * t + phase[0]) * np.sin(freq[1] * h + phase[1]) * np.sin(freq[2] * w + phase[2])
            videos[i] += 20 * wave[..., None]
    return np.clip(videos + 128, 0, 255).astype(np.uint8)


def test_seam_score_is_one_on_smooth_videos():
    ramp = np.broadcast_to(np.arange(64, dtype=np.float64)[None, None, :, None], (8, 64, 64, 3)) * 2
    edges = metrics.video_tile_edges((8, 64, 64), (4, 16, 16), "fhw")
    scores = metrics.seam_score(ramp, edges)
    assert scores["w"] == pytest.approx(1.0)
    assert scores["t"] == 1.0 and scores["h"] == 1.0  # constant along t and h: 0/0 reads "no seam"

    videos = smooth_videos(np.random.default_rng(6), 6)
    edges = metrics.video_tile_edges((16, 64, 64), (8, 16, 16), "fhw")
    scores = metrics.seam_score(videos, edges)
    assert set(scores) == {"t", "h", "w"}
    for axis, value in scores.items():
        assert 0.85 < value < 1.15, (axis, value)


def test_seam_score_detects_pasted_grid_and_blocky_tiles():
    videos = smooth_videos(np.random.default_rng(7), 4).astype(np.float64)
    edges = metrics.video_tile_edges((16, 64, 64), (8, 16, 16), "fhw")
    grid = videos.copy()
    grid[:, :, edges["h"], :, :] += 40
    grid[:, :, :, edges["w"], :] += 40
    scores = metrics.seam_score(np.clip(grid, 0, 255).astype(np.uint8), edges)
    assert scores["h"] > 2.0 and scores["w"] > 2.0
    assert 0.85 < scores["t"] < 1.15  # nothing pasted along time

    # Independent per-tile offsets (non-overlapping tiles): a jump exactly at each edge.
    blocky = videos.copy()
    rng = np.random.default_rng(8)
    for start in range(0, 64, 16):
        blocky[:, :, start : start + 16] += rng.uniform(-15, 15)
    no_overlap = metrics.video_tile_edges((16, 64, 64), (16, 16, 16), "")
    scores = metrics.seam_score(blocky, no_overlap)
    assert scores["h"] > 2.0 and 0.85 < scores["w"] < 1.15 and "t" not in scores


def test_seam_accumulator_streams_like_one_batch():
    videos = smooth_videos(np.random.default_rng(9), 4)
    edges = metrics.video_tile_edges((16, 64, 64), (8, 16, 16), "fhw")
    accumulator = metrics.SeamAccumulator()
    for video in videos:
        accumulator.update(video, edges)
    assert accumulator.scores() == pytest.approx(metrics.seam_score(videos, edges))
    with pytest.raises(ValueError, match="edge positions"):
        metrics.seam_score(videos, {"w": [0]})


# --------------------------------------------------------------------------- detectors


def test_missing_detector_names_file_and_origin(tmp_path):
    missing = str(tmp_path / "nowhere" / "i3d_torchscript.pt")
    with pytest.raises(metrics.DetectorNotFoundError) as info:
        metrics.load_detector(missing, metrics.I3D)
    message = str(info.value)
    assert "i3d_torchscript.pt" in message and "FVD" in message and "StyleGAN-V" in message
    assert missing in message
    with pytest.raises(metrics.DetectorNotFoundError, match="c3d_ucf101.pt.*Inception Score"):
        metrics.load_detector("", metrics.C3D)
    bogus = tmp_path / "c3d_ucf101.pt"
    bogus.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="TorchScript"):
        metrics.load_detector(str(bogus), metrics.C3D)


# --------------------------------------------------------------------------- preparation, progress


def test_prepare_clip_centre_crops_like_training_clips():
    video = np.zeros((6, 20, 40, 3), np.uint8)
    video[:, :, 10:30] = 200  # the middle half of every frame
    clip = metrics.prepare_clip(video, 4, (10, 10))
    assert clip.shape == (4, 10, 10, 3) and clip.dtype == np.uint8
    assert (clip == 200).all()  # the crop keeps the middle: nothing of the dark sides is squeezed in


def test_progress_log_rate_and_eta():
    now = [100.0]
    progress = metrics.ProgressLog("fake: features of", 1000, clock=lambda: now[0])
    progress.start()
    now[0] += 20.0
    assert progress.line(100) == "fake: features of 100/1000 videos | 5 videos/s | ETA 0:03:00"
    assert metrics.ProgressLog("x", None).line(3) == "x 3/? videos"
    assert metrics.format_duration(3725.0) == "1:02:05" and metrics.format_duration(float("inf")) == "?"


def test_verify_sha256_refuses_another_file(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    path.write_bytes(b"pretend weights")
    digest = metrics.file_fingerprint(str(path))
    assert metrics.verify_sha256(str(path), None, metrics.I3D) == digest
    assert metrics.verify_sha256(str(path), f" {digest.upper()} ", metrics.I3D) == digest
    with pytest.raises(metrics.DetectorMismatchError, match=f"SHA-256 {digest}.*refusing.*trust"):
        metrics.verify_sha256(str(path), "ab" * 32, metrics.I3D)
