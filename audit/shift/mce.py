"""Corruption errors against a baseline run (Hendrycks & Dietterich 2019), and reading that baseline. Numpy only.

With E(c, s) = 1 - accuracy under corruption c at severity s and E_clean = 1 - clean accuracy:

- CE(c) = sum_s E(c, s) / sum_s E_base(c, s): the model's errors relative to the baseline's (AlexNet in the paper);
- relative CE(c) = sum_s (E(c, s) - E_clean) / sum_s (E_base(c, s) - E_base_clean): the drop from clean, relative;
- mCE and relative mCE: their means over the ImageNet-C corruptions evaluated (the four held-out extras are
  reported but not averaged, as in the paper; tabular shifts all count).

A ratio whose denominator is 0 (a baseline with no error, or no drop) is undefined: NaN, and the section says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import ConfigError, ResultsError
from audit.keys import metric_key
from audit.results import load_results

PLUGIN = "corruptions"
# parameters that change what a severity means: a baseline must have used the same
DEFINITION_PARAMS = ("pixel_scale", "tabular")

Accuracies = Mapping[str, Mapping[int, float]]  # corruption -> severity -> accuracy


@dataclass
class Baseline:
    path: str
    section: str
    accuracy: dict[str, dict[int, float]]
    clean_accuracy: float
    n_samples: int | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Errors:
    ce: dict[str, float]
    relative_ce: dict[str, float]
    mce: float
    relative_mce: float
    averaged: list[str]  # the corruptions in the means


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def corruption_errors(accuracy: Accuracies, clean: float, baseline: Baseline, averaged: list[str]) -> Errors:
    ce: dict[str, float] = {}
    rel: dict[str, float] = {}
    for name, by_severity in accuracy.items():
        base = baseline.accuracy[name]
        errors = [1 - by_severity[s] for s in sorted(by_severity)]
        base_errors = [1 - base[s] for s in sorted(by_severity)]
        ce[name] = _ratio(sum(errors), sum(base_errors))
        rel[name] = _ratio(sum(e - (1 - clean) for e in errors),
                           sum(e - (1 - baseline.clean_accuracy) for e in base_errors))
    return Errors(ce=ce, relative_ce=rel, mce=_mean([ce[n] for n in averaged]),
                  relative_mce=_mean([rel[n] for n in averaged]), averaged=list(averaged))


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.nan


def load_baseline(path: str, *, key: str, section: str | None, data_sha256: str, accuracy: Accuracies,
                  params: Mapping[str, Any]) -> Baseline:
    """The baseline run's accuracies for every corruption and severity in ``accuracy`` (the names this run
    evaluates). ConfigError naming ``key`` when the run cannot serve: missing, another data set, another
    corruption or severity, other definitions (pixel_scale, tabular levels)."""
    try:
        data = load_results(Path(path).expanduser())
    except ResultsError as err:
        raise ConfigError(key, f"cannot read the baseline run: {err}") from err
    name = _baseline_section(data, section, key)
    found = data["sections"][name]
    if found.get("status") not in ("ok", None):
        raise ConfigError(key, f"the baseline run's section '{name}' did not finish ({found.get('status')}); "
                               "name a run whose corruptions section ran")
    sha = data.get("manifest", {}).get("data", {}).get("sha256")
    if sha is not None and sha != data_sha256:
        raise ConfigError(key, f"the baseline run audited other data (sha256 {sha[:12]}..., this run {data_sha256[:12]}"
                               "...): corruption errors compare models on the same images; rerun the baseline on "
                               "this data")
    theirs = found.get("params", {})
    for param in DEFINITION_PARAMS:
        if param in params and param in theirs and theirs[param] != params[param]:
            raise ConfigError(key, f"the baseline run used {param} = {theirs[param]!r}, this run {params[param]!r}: "
                                   "the severities would mean different corruptions; use the same setting")
    metrics = found.get("metrics", {})
    out: dict[str, dict[int, float]] = {}
    missing: list[str] = []
    for corruption, severities in accuracy.items():
        out[corruption] = {}
        for s in severities:
            value = metrics.get(metric_key(name, corruption, ("severity", s), "accuracy"))
            if not isinstance(value, (int, float)):
                missing.append(f"{corruption} severity {s}")
            else:
                out[corruption][s] = float(value)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConfigError(key, f"the baseline run did not evaluate {shown}: it used other corruptions or "
                               "severities; rerun it with this run's corruptions and severities")
    clean = metrics.get(f"{name}.clean_accuracy")
    if not isinstance(clean, (int, float)):
        raise ConfigError(key, f"the baseline run's section '{name}' has no clean_accuracy")
    n = metrics.get(f"{name}.n_samples")
    return Baseline(path=str(path), section=name, accuracy=out, clean_accuracy=float(clean),
                    n_samples=int(n) if isinstance(n, (int, float)) else None)


def _baseline_section(data: dict[str, Any], section: str | None, key: str) -> str:
    sections: dict[str, Any] = data.get("sections", {})
    if section is not None:
        if section not in sections:
            raise ConfigError(key, f"the baseline run has no section '{section}' (it has: {', '.join(sections)})")
        return section
    ours = [n for n, s in sections.items() if s.get("plugin") == PLUGIN]
    if not ours:
        raise ConfigError(key, "the baseline run has no corruptions section; run the corruptions section on the "
                               "baseline model first")
    if len(ours) > 1:
        raise ConfigError(key, f"the baseline run has several corruptions sections ({', '.join(ours)}); name one "
                               "with baseline_section")
    return ours[0]
