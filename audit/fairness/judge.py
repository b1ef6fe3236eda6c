"""How sure a disparity finding can be: its bootstrap interval, and the rows behind each rate.

A disparity beyond its tolerance is rated

- ``high`` when its whole (informative) interval is beyond the tolerance,
- ``medium`` when only the point estimate is (or the interval has zero width),
- by the disparity over the groups with enough rows when a group at either extreme computes the
  rate from fewer than ``min_rate_count`` rows (positives for the true-positive rate, negatives
  for the false-positive rate, the group's size for the selection rate): ``high`` / ``medium`` as
  above if that one is still beyond the tolerance, else ``low``. The message names the group, the
  rate and the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.fairness.estimates import Estimate
from audit.results import Severity


@dataclass(frozen=True)
class Thin:
    """A group whose rate rests on fewer rows than the threshold."""

    group: str
    rate: str
    count: int
    basis: str  # what the count counts: "positives", "rows", ...

    def text(self) -> str:
        return f"'{self.group}' has {count_of(self.count, self.basis)} for the {words(self.rate)}"


@dataclass(frozen=True)
class Verdict:
    severity: Severity
    text: str  # why, as a clause that follows the value and the tolerance


def words(name: str) -> str:
    return name.replace("_", " ")


def count_of(count: int, basis: str) -> str:
    """'1 positive', '3 positives' (every basis is a plural noun phrase)."""
    return f"{count} {basis[:-1] if count == 1 else basis}"


def number(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.3f}"


def lowest_highest(groups: list[str], values: list[Estimate]) -> tuple[tuple[str, float], tuple[str, float]]:
    """(group, value) of the lowest and the highest defined value (("none", NaN) if none is defined)."""
    defined = [(g, e.value) for g, e in zip(groups, values, strict=True) if not math.isnan(e.value)]
    if not defined:
        return ("none", math.nan), ("none", math.nan)
    return min(defined, key=lambda t: t[1]), max(defined, key=lambda t: t[1])


def thin_extremes(groups: list[str], rates: dict[str, list[Estimate]], counts: dict[str, np.ndarray],
                  basis: dict[str, str], min_count: int) -> list[Thin]:
    """The groups at the extremes of each rate whose count for that rate is below ``min_count``."""
    out: list[Thin] = []
    for rate, values in rates.items():
        (lo, _), (hi, _) = lowest_highest(groups, values)
        for g in dict.fromkeys((lo, hi)):
            if g not in groups:
                continue
            count = int(counts[rate][groups.index(g)])
            if count < min_count:
                out.append(Thin(g, rate, count, basis[rate]))
    return out


def judge(value: Estimate, tolerance: float, *, is_ratio: bool, confidence: float, thin: list[Thin],
          supported: Estimate | None, min_count: int) -> Verdict:
    """Severity of a disparity already beyond its tolerance, and the reason in words."""
    side = "below" if is_ratio else "above"
    if not thin:
        if value.wholly_beyond(tolerance, is_ratio=is_ratio):
            return Verdict("high", f"the whole interval is {side}")
        if not value.has_interval:
            return Verdict("medium", "no interval was computed")
        if not value.informative:
            return Verdict("medium", "the interval cannot confirm it")
        return Verdict("medium", "the interval also holds values within tolerance")
    text = (f"but it rests on too few rows ({'; '.join(t.text() for t in thin)}; fewer than min_rate_count "
            f"{min_count})")
    if supported is None or math.isnan(supported.value):
        return Verdict("low", text + ", and fewer than two groups have enough rows to compute it without them")
    among = f"over the groups with enough rows it is {supported.value:.3f} ({supported.ci_text(confidence)})"
    if not supported.beyond(tolerance, is_ratio=is_ratio):
        return Verdict("low", f"{text}; {among}, within tolerance")
    severity: Severity = "high" if supported.wholly_beyond(tolerance, is_ratio=is_ratio) else "medium"
    return Verdict(severity, f"{text}; {among}, still {side} the tolerance")
