"""The one bootstrap: seeded resamples of the rows, vectorized, and percentile intervals from them.

Every interval nnaudit reports comes from here; the callers keep only what their numbers mean:

- ``stratified_resamples`` / ``bootstrap``: resamples drawn within groups (every group keeps its
  size, so none vanishes from a resample), fed in chunks to a statistic over a (B, N) index matrix;
  the fairness section's group rates and disparities (``audit.fairness.estimates``).
- ``resampled_means``: means of several per-sample scores over one shared set of resamples (paired:
  a difference of two methods is resampled with the same rows as each method); NaN entries are left
  out of a mean. The explanation rankings (``explain.ranking``).
- ``paired_bootstrap``: the mean paired difference of two runs' per-sample outcomes, its percentile
  interval and two-sided p-value (Hall & Wilson 1991). The comparison (``audit.decide.compare``).
- ``percentile_interval``: plain percentiles, or Efron's bias-corrected (BC) percentiles around a
  point estimate.

At most ``CHUNK_CELLS`` resampled indices are held in memory at once. Pure numpy (scipy for the
normal quantiles of the BC interval); never imports torch, so decisions may use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

CHUNK_CELLS = 4_000_000  # resampled cells held in memory at once (resamples x rows [x scores])
DEFAULT_RESAMPLES = 5000
DEFAULT_CONFIDENCE = 0.95

Statistic = Callable[[np.ndarray | None], dict[str, np.ndarray]]
Progress = Callable[[Iterable[np.ndarray], int], Iterable[np.ndarray]]  # (chunks, number of chunks)


# -- resampling -------------------------------------------------------------------------------------


def chunk_size(n_rows: int, cells: int = CHUNK_CELLS) -> int:
    """Resamples per chunk so that a chunk holds at most ``cells`` indices (at least one resample)."""
    return max(1, cells // max(n_rows, 1))


def n_chunks(n_rows: int, n_resamples: int) -> int:
    return -(-n_resamples // chunk_size(n_rows))


def stratified_resamples(codes: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (B, N) row indices; each row of a chunk is one bootstrap resample drawn within
    groups (every group keeps its size)."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot_group = codes[order]
    slot_start, slot_size = starts[slot_group], sizes[slot_group]
    rng = np.random.default_rng(seed)
    chunk = chunk_size(n)
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        offsets = np.floor(rng.random((b, n)) * slot_size).astype(np.int64)
        yield order[slot_start + np.minimum(offsets, slot_size - 1)]
        done += b


def bootstrap(codes: np.ndarray, n_resamples: int, seed: int, statistic: Statistic, *,
              progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run ``statistic(index (B, N)) -> {name: (B, ...)}`` over stratified resamples; concatenate.
    ``progress(chunks, total)`` wraps the chunk iterator (``ctx.progress``)."""
    chunks: Iterable[np.ndarray] = stratified_resamples(codes, n_resamples, seed)
    if progress is not None:
        chunks = progress(chunks, n_chunks(len(codes), n_resamples))
    parts: dict[str, list[np.ndarray]] = {}
    for index in chunks:
        for name, values in statistic(index).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(pieces, axis=0) for name, pieces in parts.items()}


def resampled_means(values: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """Means of each row of ``values`` (scores, samples) over ``n_resamples`` bootstrap resamples of the
    samples, shared by all rows (paired); NaN entries are left out of a mean. Shape (scores, resamples)."""
    rows, n = values.shape
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    rng = np.random.default_rng(seed)
    out = np.empty((rows, n_resamples))
    per_chunk = chunk_size(rows * n)
    done = 0
    while done < n_resamples:
        b = min(per_chunk, n_resamples - done)
        index = rng.integers(0, n, size=(b, n))
        sums = filled[:, index].sum(axis=2)
        counts = finite[:, index].sum(axis=2)
        out[:, done : done + b] = np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)
        done += b
    return out


# -- intervals --------------------------------------------------------------------------------------


@dataclass
class Interval:
    low: float
    high: float
    defined_fraction: float  # share of resamples where the statistic was defined


def percentile_interval(samples: np.ndarray, confidence: float, point: float | None = None) -> Interval:
    """Bootstrap interval from resampled statistics; NaN/inf resamples are left out.

    With ``point`` (the estimate on the original rows): the bias-corrected percentile interval
    (Efron's BC). Disparities are max - min (or min / max) over groups, which resampling inflates:
    plain percentiles would sit above the estimate. BC shifts the quantiles by how far the
    estimate sits from the middle of the resampled values (ties count half). Without ``point``:
    plain percentiles."""
    from scipy.special import ndtr, ndtri

    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(math.nan, math.nan, 0.0)
    alpha = (1.0 - confidence) / 2.0
    quantiles = np.array([alpha, 1.0 - alpha])
    if point is not None and math.isfinite(point):
        n = finite.size
        below = (np.count_nonzero(finite < point) + 0.5 * np.count_nonzero(finite == point)) / n
        z0 = float(ndtri(min(max(below, 0.5 / n), 1.0 - 0.5 / n)))
        z = float(ndtri(1.0 - alpha))
        quantiles = ndtr(np.array([2.0 * z0 - z, 2.0 * z0 + z]))
    low, high = np.quantile(finite, quantiles)
    return Interval(float(low), float(high), float(finite.size / samples.size))


# -- paired difference of two runs ------------------------------------------------------------------


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
        chunk = chunk_size(n)
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
