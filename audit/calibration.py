"""Calibration metrics shared by the sections (numpy only): top-label expected calibration error with its
reliability rows, and the multi-class Brier score.

The ``imbalance`` section reports them on the clean data; the ``ood`` section on clean and corrupted data,
before and after temperature scaling. One implementation, so the two agree.
"""

from __future__ import annotations

import numpy as np


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, list[list[float]]]:
    """Top-label ECE with ``n_bins`` equal-width confidence bins: sum over bins of (bin size / N) * |accuracy -
    mean confidence|. Returns (ece, rows of [bin_low, bin_high, count, mean_confidence, accuracy]); bin i holds
    confidences in (edges[i], edges[i+1]], confidence 0 goes to bin 0."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    ece = float(np.abs(acc_sum - conf_sum).sum() / len(y))
    rows = []
    for i in range(n_bins):
        n = counts[i]
        rows.append([float(edges[i]), float(edges[i + 1]), int(n),
                     float(conf_sum[i] / n) if n else float("nan"), float(acc_sum[i] / n) if n else float("nan")])
    return ece, rows


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: the mean over samples of sum_k (p_k - [y = k])^2 (0 best, 2 worst)."""
    onehot = np.zeros_like(proba, dtype=np.float64)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((proba.astype(np.float64) - onehot) ** 2, axis=1)))
