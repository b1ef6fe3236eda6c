"""Seeded, stratified bootstrap intervals, vectorized over resamples.

A statistic takes a (B, N) matrix of resampled row indices and returns (B, ...) arrays; the
group metrics count with ``numpy.bincount`` over it (``audit.fairness.groups``), so no
``MetricFrame`` runs inside the loop (it costs ~1.6 s per 100k rows). Resamples are drawn within
groups: every group keeps its size, so no group vanishes from a resample.

An interval of zero width (a rate of 0 out of 3 is 0 in every resample) says nothing about the
uncertainty: ``Estimate.informative`` is false for it, and findings never rest on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from audit.keys import metric_key
from audit.results import SectionResult

CHUNK_CELLS = 4_000_000  # resampled indices held in memory at once (B_chunk * N)

Statistic = Callable[[np.ndarray | None], dict[str, np.ndarray]]
Progress = Callable[[Iterable[np.ndarray], int], Iterable[np.ndarray]]  # (chunks, number of chunks)


def chunk_size(n_rows: int) -> int:
    return max(1, CHUNK_CELLS // max(n_rows, 1))


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


@dataclass
class Interval:
    low: float
    high: float
    defined_fraction: float  # share of resamples where the statistic was defined


def percentile_interval(samples: np.ndarray, confidence: float, point: float | None = None) -> Interval:
    """Bootstrap interval from resampled statistics.

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


@dataclass
class Estimate:
    """A point estimate with its bootstrap interval (NaN where undefined or not computed)."""

    value: float
    low: float = math.nan
    high: float = math.nan
    defined_fraction: float = 1.0  # share of resamples where the statistic was defined

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def informative(self) -> bool:
        """An interval that can carry a conclusion: computed, and of non-zero width."""
        return self.has_interval and self.high > self.low

    def beyond(self, tolerance: float, *, is_ratio: bool) -> bool:
        """The point estimate is beyond the tolerance (below it for a ratio, above for a difference)."""
        if math.isnan(self.value):
            return False
        return self.value < tolerance if is_ratio else self.value > tolerance

    def wholly_beyond(self, tolerance: float, *, is_ratio: bool) -> bool:
        """The whole interval is beyond the tolerance; never for an interval that is not informative."""
        if not self.informative:
            return False
        return self.high < tolerance if is_ratio else self.low > tolerance

    def ci_text(self, confidence: float) -> str:
        if not self.has_interval:
            return "no interval"
        if not self.informative:
            return (f"{confidence:.0%} CI of zero width at {self.low:.3f}: the resamples do not vary, "
                    "so it is not informative")
        text = f"{confidence:.0%} CI {self.low:.3f} to {self.high:.3f}"
        if self.defined_fraction < 1.0:
            text += f", defined in {self.defined_fraction:.0%} of the resamples"
        return text


def estimates(point: dict[str, np.ndarray], samples: dict[str, np.ndarray] | None,
              confidence: float) -> dict[str, list[Estimate]]:
    """Point arrays (G,) or scalars plus their bootstrap samples (B, ...) -> Estimates per entry."""
    out: dict[str, list[Estimate]] = {}
    for name, values in point.items():
        flat = np.atleast_1d(values).astype(np.float64)
        rows = []
        for j, v in enumerate(flat):
            if samples is None or name not in samples or math.isnan(v):
                rows.append(Estimate(float(v)))
                continue
            interval = percentile_interval(samples[name].reshape(len(samples[name]), -1)[:, j], confidence, v)
            rows.append(Estimate(float(v), interval.low, interval.high, interval.defined_fraction))
        out[name] = rows
    return out


def record_estimate(result: SectionResult, name: str, e: Estimate, *, with_interval: bool) -> None:
    """An estimate as metrics: ``name`` and, with an interval, ``name.ci_low`` / ``name.ci_high``."""
    result.metric(name, e.value)
    if with_interval:
        result.metric(metric_key(name, "ci_low"), e.low)
        result.metric(metric_key(name, "ci_high"), e.high)


def error_bars(values: list[Estimate]) -> dict[str, list[float | None]]:
    """Figure error-bar lengths below and above each value (None where either end is undefined)."""
    def length(a: float, b: float) -> float | None:
        return None if math.isnan(a) or math.isnan(b) else max(0.0, a - b)

    return {"yerr_low": [length(e.value, e.low) for e in values],
            "yerr_high": [length(e.high, e.value) for e in values]}
