"""Rankings with intervals: bootstrap over the explained samples, paired across methods.

Every method was evaluated on the same samples, so one set of resampled sample indices serves all of
them: each method's mean gets a percentile interval, and so does every difference between two methods
(the paired difference, whose interval is much narrower than the two separate intervals suggest). The
resamples and percentile intervals are the one bootstrap's (``audit.bootstrap``). A
method's rank is 1 + the number of methods significantly better than it (the interval of the
difference excludes 0): methods whose differences span 0 share a rank and are reported as tied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from audit.bootstrap import percentile_interval
from audit.bootstrap import resampled_means as bootstrap_means
from explain.seeds import sample_seed


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    @property
    def spans_zero(self) -> bool:
        return not (self.low > 0 or self.high < 0)


@dataclass
class Ranking:
    """Means, intervals and ranks of one per-sample score (e.g. deletion AUC) across methods."""

    estimates: dict[str, Estimate]
    differences: dict[tuple[str, str], Estimate]  # (a, b): mean of a - b over samples
    ranks: dict[str, int]
    order: list[str]  # best first
    lower_is_better: bool

    def tied_with(self, method: str) -> list[str]:
        """The methods whose difference with ``method`` is not significant."""
        return [other for other in self.order if other != method and self.difference(method, other).spans_zero]

    def difference(self, a: str, b: str) -> Estimate:
        if (a, b) in self.differences:
            return self.differences[(a, b)]
        flipped = self.differences[(b, a)]
        return Estimate(-flipped.mean, -flipped.high, -flipped.low)

    def better(self, a: str, b: str) -> bool:
        """``a`` is significantly better than ``b``."""
        diff = self.difference(a, b)
        return diff.high < 0 if self.lower_is_better else diff.low > 0


def resampled_means(values: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """Means of each row of ``values`` (methods, samples) over ``n_resamples`` bootstrap resamples of the
    samples, shared by all rows (paired); NaN entries are left out of a mean. Shape (methods, resamples).
    The resampling is ``audit.bootstrap``'s, seeded from the run seed's ``bootstrap`` stream."""
    return bootstrap_means(values, n_resamples=n_resamples, seed=sample_seed(seed, "bootstrap", 0))


def _interval(mean: float, resampled: np.ndarray, confidence: float) -> Estimate:
    if not np.isfinite(mean):
        return Estimate(mean, float("nan"), float("nan"))
    interval = percentile_interval(resampled, confidence)
    return Estimate(mean, interval.low, interval.high)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def intervals(scores: dict[str, np.ndarray], *, n_resamples: int, seed: int,
              confidence: float = 0.95) -> dict[str, Estimate]:
    """Mean and bootstrap percentile interval of each method's per-sample scores."""
    names = list(scores)
    if not names:
        return {}
    matrix = np.stack([np.asarray(scores[m], np.float64) for m in names])
    resampled = resampled_means(matrix, n_resamples=n_resamples, seed=seed)
    return {m: _interval(_mean(matrix[i]), resampled[i], confidence) for i, m in enumerate(names)}


def rank(scores: dict[str, np.ndarray], *, lower_is_better: bool, n_resamples: int, seed: int,
         confidence: float = 0.95) -> Ranking:
    """Rank methods by their mean per-sample score, with paired bootstrap intervals for every difference."""
    names = list(scores)
    matrix = np.stack([np.asarray(scores[m], np.float64) for m in names])
    pairs = list(itertools.combinations(range(len(names)), 2))
    diffs = np.stack([matrix[i] - matrix[j] for i, j in pairs]) if pairs else np.zeros((0, matrix.shape[1]))
    resampled = resampled_means(np.concatenate([matrix, diffs]), n_resamples=n_resamples, seed=seed)
    estimates = {m: _interval(_mean(matrix[i]), resampled[i], confidence) for i, m in enumerate(names)}
    differences = {(names[i], names[j]): _interval(_mean(diffs[k]), resampled[len(names) + k], confidence)
                   for k, (i, j) in enumerate(pairs)}
    sign = 1.0 if lower_is_better else -1.0
    order = sorted(names, key=lambda m: (not np.isfinite(estimates[m].mean), sign * estimates[m].mean))
    ranking = Ranking(estimates, differences, {}, order, lower_is_better)
    ranking.ranks = {m: 1 + sum(ranking.better(other, m) for other in names if other != m) for m in names}
    return ranking
