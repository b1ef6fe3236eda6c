"""Fairness estimates: a disparity or rate with its bootstrap interval, and how the section records them.

The resampling is the one bootstrap, ``audit.bootstrap``: resamples drawn within groups (every group
keeps its size, so no group vanishes from a resample), fed to a statistic over a (B, N) matrix of
resampled row indices; the group metrics count with ``numpy.bincount`` over it
(``audit.fairness.groups``), so no ``MetricFrame`` runs inside the loop (it costs ~1.6 s per 100k
rows). Intervals are Efron's bias-corrected percentiles around the estimate
(``audit.bootstrap.percentile_interval``).

An interval of zero width (a rate of 0 out of 3 is 0 in every resample) says nothing about the
uncertainty: ``Estimate.informative`` is false for it, and findings never rest on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.bootstrap import percentile_interval
from audit.keys import metric_key
from audit.results import SectionResult


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
