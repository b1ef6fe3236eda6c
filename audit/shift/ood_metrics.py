"""OOD detection metrics on outlier scores (numpy only; higher score = more out-of-distribution).

Conventions (Hendrycks & Gimpel 2017; Liang et al. 2018), for in-distribution scores ``s_in`` and OOD scores
``s_out``:

- AUROC: the probability that an OOD input scores above an in-distribution one (ties count half). The same
  whichever class is called positive.
- AUPR-in: average precision with in-distribution as the positive class, ranked by ``-score``.
- AUPR-out: average precision with OOD as the positive class, ranked by ``score``.
- FPR at 95% TPR: in-distribution is positive; at the highest threshold that accepts at least 95% of the
  in-distribution inputs, the share of OOD inputs accepted as well. Read off the full ROC curve (every
  distinct threshold, as scikit-learn's ``roc_curve(..., drop_intermediate=False)``).

Average precision is scikit-learn's: sum over distinct thresholds of (R_n - R_{n-1}) P_n, no interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TPR_LEVEL = 0.95


@dataclass(frozen=True)
class DetectionMetrics:
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float

    def as_dict(self) -> dict[str, float]:
        return {"auroc": self.auroc, "aupr_in": self.aupr_in, "aupr_out": self.aupr_out,
                "fpr_at_95_tpr": self.fpr_at_95_tpr}


def _curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, from the highest score down, and the
    thresholds: the positive class is predicted for scores >= threshold."""
    scores = np.concatenate([positive, negative]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last index of each tie group
    tps = np.cumsum(labels)[last]
    fps = (last + 1) - tps
    return tps, fps, scores[last]


def _check(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s_in, s_out = np.asarray(s_in, np.float64).ravel(), np.asarray(s_out, np.float64).ravel()
    if not len(s_in) or not len(s_out):
        raise ValueError("OOD metrics need at least one in-distribution and one OOD score")
    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise ValueError("OOD scores must be finite")
    return s_in, s_out


def auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    s_in, s_out = _check(s_in, s_out)
    tps, fps, _ = _curve(s_out, s_in)
    tpr = np.r_[0.0, tps / len(s_out)]
    fpr = np.r_[0.0, fps / len(s_in)]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """scikit-learn's average precision, the positive class ranked by descending score."""
    tps, fps, _ = _curve(positive, negative)
    precision = tps / (tps + fps)
    recall = tps / len(positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_points(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) with in-distribution positive (score ``-s``), from (0, 0) to (1, 1)."""
    s_in, s_out = _check(s_in, s_out)
    tps, fps, _ = _curve(-s_in, -s_out)
    return np.r_[0.0, fps / len(s_out)], np.r_[0.0, tps / len(s_in)]


def fpr_at_tpr(s_in: np.ndarray, s_out: np.ndarray, level: float = TPR_LEVEL) -> float:
    fpr, tpr = roc_points(s_in, s_out)
    return float(fpr[np.searchsorted(tpr, level, side="left")])


def detection_metrics(s_in: np.ndarray, s_out: np.ndarray) -> DetectionMetrics:
    s_in, s_out = _check(s_in, s_out)
    return DetectionMetrics(auroc=auroc(s_in, s_out), aupr_in=average_precision(-s_in, -s_out),
                            aupr_out=average_precision(s_out, s_in), fpr_at_95_tpr=fpr_at_tpr(s_in, s_out))


def confident_share(confidence_in: np.ndarray, confidence_out: np.ndarray) -> float:
    """The share of OOD inputs the model classifies with a confidence (max softmax) above the in-distribution
    median: how often an OOD input looks like a typical in-distribution one to the model."""
    return float(np.mean(np.asarray(confidence_out) > np.median(np.asarray(confidence_in))))


def thin_curve(x: np.ndarray, y: np.ndarray, points: int = 200) -> tuple[list[float], list[float]]:
    """At most ``points`` points of a curve for a figure (the first and last kept)."""
    if len(x) <= points:
        return [float(v) for v in x], [float(v) for v in y]
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
    return [float(v) for v in x[keep]], [float(v) for v in y[keep]]


def histogram(s_in: np.ndarray, s_out: np.ndarray, bins: int = 30) -> dict[str, list[float]]:
    """Shared bin edges over both score sets (1st..99th percentile, so one extreme score does not squash the
    rest; scores outside fall in the end bins) and each set's density."""
    both = np.concatenate([s_in, s_out]).astype(np.float64)
    low, high = np.percentile(both, [1, 99])
    if not high > low:
        low, high = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(low, high, bins + 1)

    def density(values: np.ndarray) -> list[float]:
        counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
        return [float(c) / (len(values) * (edges[1] - edges[0])) for c in counts]

    return {"edges": [float(e) for e in edges], "in": density(s_in), "out": density(s_out)}
