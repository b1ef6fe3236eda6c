"""The statistics of a comparison: a paired bootstrap of a mean difference and Holm's adjustment.

- ``paired_bootstrap`` resamples the samples (``resamples`` times, seeded) and gives a percentile
  interval of the mean paired difference and a two-sided p-value from the centred bootstrap
  distribution (Hall & Wilson 1991: how often the resampled difference strays from the observed one by
  at least the observed one's distance from 0).
- ``holm`` adjusts the p-values of all the tested metrics together, so the chance of calling any
  change significant when nothing changed stays at ``alpha`` for the whole comparison.
- ``hypothesis_key``: metrics whose paired differences are equal up to sign (accuracy and error rate)
  are one hypothesis, tested and counted once.

Pure numpy; never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 5000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # mean paired difference (candidate - base) over the paired samples
    ci_low: float
    ci_high: float
    p_value: float  # two-sided


def paired_bootstrap(base: np.ndarray, candidate: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> BootstrapResult:
    """Paired bootstrap of the mean difference ``candidate - base`` over samples (rows paired by position).

    Resamples the n samples with replacement ``resamples`` times. When the differences take few distinct
    values (0/1 outcomes give -1, 0, 1) the counts of each value in a resample are drawn at once from
    their multinomial distribution, which is the same distribution as resampling the rows one by one.
    Interval: percentile. p-value: how often the resampled mean strays from the observed one by at
    least the observed one's distance from 0 (plus one, over resamples plus one), doubled sides included.
    """
    base = np.asarray(base, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if base.shape != candidate.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError(f"need two equal-length, non-empty 1-d arrays, got {base.shape} and {candidate.shape}")
    diff = candidate - base
    n = len(diff)
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(diff, return_counts=True)
    if len(values) <= 64:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ values / n
    else:
        chunk = max(1, 4_000_000 // n)
        parts = []
        for start in range(0, resamples, chunk):
            rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
            parts.append(diff[rows].mean(axis=1))
        means = np.concatenate(parts)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # rounding of a mean of n values of size <= max|diff|: a few ulps of that scale
    tol = 8 * np.finfo(np.float64).eps * max(1.0, float(np.abs(values).max()))
    extreme = int((np.abs(means - observed) >= abs(observed) - tol).sum())
    p_value = 1.0 if abs(observed) <= tol else min(1.0, (extreme + 1) / (resamples + 1))
    return BootstrapResult(observed, float(low), float(high), p_value)


def hypothesis_key(base: np.ndarray, candidate: np.ndarray) -> bytes:
    """The paired differences up to sign, as bytes: equal keys are the same test."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    nonzero = np.flatnonzero(diff)
    if len(nonzero) and diff[nonzero[0]] < 0:
        diff = -diff
    return (diff + 0.0).tobytes()  # + 0.0 turns -0.0 into 0.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error rate, valid under any dependence between the tests)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
