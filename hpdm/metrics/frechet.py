"""Frechet distance between two Gaussians fitted to detector features.

This is the distance behind FVD (Unterthiner et al., 2018), the main video metric of the paper
(Sec. 5 "Evaluation", Appendix B):

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

The trace term equals the literature's ``tr(sqrtm(S_1 S_2))`` because, for positive semi-definite
matrices, ``S_1 S_2`` and ``S_1^{1/2} S_2 S_1^{1/2}`` share their eigenvalues. The symmetric form is
used here because it needs only symmetric eigen-decompositions: it stays real and accurate when the
covariances are singular (fewer videos than feature dimensions, as with FVD@512 and 400-dim I3D
features), where a general ``sqrtm`` of the non-symmetric product loses precision or goes complex.
"""

from __future__ import annotations

import numpy as np


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + matrix.T)


def _clamp_null_space(eigvals: np.ndarray) -> np.ndarray:
    """Zeroes eigenvalues at round-off level (numerical rank tolerance ``n * eps * max|lambda|``).

    A singular covariance comes out of ``eigh`` with its zero eigenvalues as +-1e-16-sized noise.
    Left in, each would add sqrt(1e-16) = 1e-8 to a trace of square roots, so a 400-dim
    covariance of 100 videos would be off by ~3e-6 instead of ~1e-14.
    """
    tolerance = eigvals.shape[0] * np.finfo(np.float64).eps * np.abs(eigvals).max(initial=0.0)
    return np.where(eigvals > tolerance, eigvals, 0.0)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix, in float64.

    Eigenvalues of a singular covariance that round-off left slightly negative or slightly
    positive are set to zero, their true value.
    """
    matrix = _symmetric(np.asarray(matrix, dtype=np.float64))
    eigvals, eigvecs = np.linalg.eigh(matrix)
    roots = np.sqrt(_clamp_null_space(eigvals))
    return _symmetric((eigvecs * roots) @ eigvecs.T)


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """``tr((S_1 S_2)^{1/2})`` for PSD ``S_1``, ``S_2`` via ``S_1^{1/2} S_2 S_1^{1/2}``."""
    root1 = sqrtm_psd(cov1)
    inner = _symmetric(root1 @ np.asarray(cov2, dtype=np.float64) @ root1)
    return float(np.sqrt(_clamp_null_space(np.linalg.eigvalsh(inner))).sum())


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, cov1) and N(mu2, cov2) (FVD when fed I3D stats).

    Everything is computed in float64. The result is clamped at zero: for identical statistics the
    exact value is zero and round-off must not turn it into a tiny negative number.
    """
    mu1 = np.asarray(mu1, dtype=np.float64).reshape(-1)
    mu2 = np.asarray(mu2, dtype=np.float64).reshape(-1)
    cov1 = np.asarray(cov1, dtype=np.float64)
    cov2 = np.asarray(cov2, dtype=np.float64)
    dim = mu1.shape[0]
    if mu2.shape != (dim,) or cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
        raise ValueError(
            f"Frechet distance needs matching statistics, got means {mu1.shape} / {mu2.shape} "
            f"and covariances {cov1.shape} / {cov2.shape}"
        )
    for name, value in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Frechet distance: {name} contains NaN or Inf")
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
    return float(max(distance, 0.0))
