"""Video Inception Score on UCF-101 (paper Sec. 5 "Evaluation", Tab. 2, Appendix B).

IS = exp(E_x KL(p(y|x) || p(y))) over C3D class probabilities of 16-frame videos, reported as the
mean and standard deviation over 10 splits. As in the StyleGAN-V / TGAN evaluation code the paper
compares with, the probabilities are shuffled with a fixed seed (42) before splitting, and split
``i`` holds rows ``[i N / s, (i + 1) N / s)``. Appendix B: IS is defined for 16 frames only.
"""

from __future__ import annotations

import numpy as np

IS_NUM_FRAMES = 16
IS_NUM_SPLITS = 10


def _entropy_terms(p: np.ndarray) -> np.ndarray:
    """``p log p`` with the convention ``0 log 0 = 0`` (a hard prediction must not give NaN)."""
    safe = np.where(p > 0, p, 1.0)
    return np.where(p > 0, p * np.log(safe), 0.0)


def inception_score(probs, num_splits: int = IS_NUM_SPLITS, seed: int | None = 42) -> tuple[float, float]:
    """Mean and std over splits of ``exp(mean_x KL(p(y|x) || p(y)))``, in float64.

    Args:
      probs: ``[N, num_classes]`` class probabilities.
      num_splits: number of disjoint splits (10 in the literature).
      seed: shuffling seed applied before splitting; ``None`` keeps the given order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [N, classes], got shape {probs.shape}")
    count = probs.shape[0]
    if num_splits < 1 or count < num_splits:
        raise ValueError(f"Inception Score with {num_splits} splits needs at least {num_splits} videos, got {count}")
    if seed is not None:
        probs = probs[np.random.RandomState(seed).permutation(count)]
    scores = []
    for index in range(num_splits):
        part = probs[index * count // num_splits : (index + 1) * count // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p || m) = sum p log p - sum p log m; m > 0 wherever p > 0.
        cross = np.where(part > 0, part * np.log(np.where(marginal > 0, marginal, 1.0)), 0.0)
        kl = (_entropy_terms(part) - cross).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
