"""What the dashboard opens with: the verdict and the headline numbers of a run (plain data, no streamlit).

The verdict comes from the run's own gate policy where the run carries one (``manifest.policy``,
or a ``gate:`` block in its config); otherwise the run is "not gated" and the verdict says so,
next to the run status and the sections that failed or never ran.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.errors import NNAuditError
from audit.results import all_metrics, run_state
from reports.views import all_findings, count_findings, format_value

_WORST_CASE = re.compile(r"^robustness\.worst_case\.(?P<norm>[^.]+)\.eps=(?P<eps>.+)\.robust_accuracy$")
_DISPARITY = re.compile(r"^fairness\.(?P<attr>.+)\.(?P<kind>demographic_parity_difference|equalized_odds_difference)$")
_RANK = re.compile(r"^explanations\.(?P<method>[^.]+)\.faithfulness_rank$")


def _policy_data(results: Mapping[str, Any]) -> Any:
    manifest = results.get("manifest", {})
    if manifest.get("policy"):
        return manifest["policy"]
    return (manifest.get("config") or {}).get("gate")


def verdict(results: Mapping[str, Any], run: str | Path | None = None) -> dict[str, Any]:
    """``{"verdict": "pass"|"fail"|"error"|"not gated", "failing": [...], "status", "failed_sections", ...}``."""
    state = run_state(dict(results), run)
    sections = results.get("sections", {})
    failed = [name for name, s in sections.items() if s.get("status") == "error"]
    out: dict[str, Any] = {"status": state.status, "status_reason": state.reason, "failed_sections": failed,
                           "never_ran": list(state.never_ran), "failing": [], "policy_error": None}
    data = _policy_data(results)
    if not data:
        out["verdict"] = "not gated"
        return out
    from audit.gate import evaluate_policy, parse_policy

    try:
        report = evaluate_policy(results, parse_policy(data), run_dir=run)
    except NNAuditError as err:
        out.update(verdict="error", policy_error=str(err))
        return out
    out["verdict"] = {0: "pass", 1: "fail"}.get(report.exit_code, "error")
    out["failing"] = [{"check": o.name, "status": o.status, "value": format_value(o.value), "message": o.message}
                      for o in report.outcomes if o.failed]
    return out


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a reviewer looks at first; a value absent from the run is None."""
    metrics = all_metrics(dict(results))
    robust = []
    for name, value in metrics.items():
        match = _WORST_CASE.match(name)
        if match:
            robust.append({"norm": match["norm"], "eps": match["eps"], "value": value})
    robust.sort(key=lambda r: (str(r["norm"]), _eps_order(str(r["eps"]))))
    disparity: dict[str, Any] | None = None
    worst = -math.inf
    for name, value in metrics.items():
        match = _DISPARITY.match(name)
        if match and value is not None and value > worst:
            worst = value
            disparity = {"attribute": match["attr"], "metric": match["kind"], "value": value,
                         "ci_low": metrics.get(name + ".ci_low"), "ci_high": metrics.get(name + ".ci_high")}
    faithful = sorted((value, match["method"]) for name, value in metrics.items()
                      if (match := _RANK.match(name)) and value is not None)
    return {
        "accuracy": metrics.get("performance.accuracy"),
        "balanced_accuracy": metrics.get("imbalance.balanced_accuracy"),
        "robust": robust,
        "reliable": metrics.get("robustness.reliable"),
        "disparity": disparity,
        "most_faithful": faithful[0][1] if faithful else None,
        "findings": count_findings(all_findings(results)),
    }


def _eps_order(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf
