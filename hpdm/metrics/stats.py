"""Streaming float64 mean and covariance of detector features (FVD statistics, paper Sec. 5).

Batches are merged with the pairwise update of Chan et al. (1979): each batch's centred moments
are combined with the running ones, so no raw sum of outer products is kept. That avoids the
cancellation of ``E[xx^T] - mu mu^T`` when feature means are large relative to their spread.

The covariance divides by the number of items (``ddof=0``), as the StyleGAN-V FVD code does whose
numbers the paper compares against (Appendix B).
"""

from __future__ import annotations

import os

import numpy as np


class FeatureStats:
    """Running count, mean and centred second moment of ``[N, D]`` feature batches."""

    def __init__(self, dim: int | None = None):
        self.count = 0
        self.dim = dim
        self._mean = None if dim is None else np.zeros(dim, dtype=np.float64)
        self._m2 = None if dim is None else np.zeros((dim, dim), dtype=np.float64)

    def update(self, features) -> None:
        """Adds a batch of features ``[N, D]`` (numpy or torch, any float dtype)."""
        if hasattr(features, "detach"):
            features = features.detach().to("cpu").double().numpy()
        batch = np.asarray(features, dtype=np.float64)
        if batch.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {batch.shape}")
        if not np.all(np.isfinite(batch)):
            raise ValueError("detector returned NaN or Inf features")
        if self.dim is None:
            self.dim = batch.shape[1]
            self._mean = np.zeros(self.dim, dtype=np.float64)
            self._m2 = np.zeros((self.dim, self.dim), dtype=np.float64)
        if batch.shape[1] != self.dim:
            raise ValueError(f"feature dimension changed from {self.dim} to {batch.shape[1]}")
        n_b = batch.shape[0]
        if n_b == 0:
            return
        mean_b = batch.mean(axis=0)
        centred = batch - mean_b
        m2_b = centred.T @ centred
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        self._require_items()
        return self._mean.copy()

    def covariance(self, ddof: int = 0) -> np.ndarray:
        self._require_items()
        if self.count - ddof <= 0:
            raise ValueError(f"covariance with ddof={ddof} needs more than {ddof} items")
        return 0.5 * (self._m2 + self._m2.T) / (self.count - ddof)

    def _require_items(self) -> None:
        if self.count == 0:
            raise ValueError("no features were accumulated (no usable videos?)")

    def save(self, path: str) -> None:
        """Writes ``mean``, ``cov`` and ``count`` to a ``.npz`` file atomically."""
        tmp = f"{path}.tmp.{os.getpid()}.npz"
        np.savez(tmp, mean=self.mean, cov=self.covariance(), count=np.int64(self.count))
        os.replace(tmp, path)

    @classmethod
    def from_moments(cls, mean: np.ndarray, cov: np.ndarray, count: int) -> "FeatureStats":
        """Rebuilds running statistics from a saved (mean, ddof=0 covariance, count) triple."""
        mean = np.asarray(mean, dtype=np.float64)
        stats = cls(mean.shape[0])
        stats.count = int(count)
        stats._mean = mean.copy()
        stats._m2 = np.asarray(cov, dtype=np.float64) * stats.count
        return stats

    @classmethod
    def load(cls, path: str) -> "FeatureStats":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_moments(data["mean"], data["cov"], int(data["count"]))
