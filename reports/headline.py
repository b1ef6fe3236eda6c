"""What a reviewer reads first: the verdict and the headline card. Plain data, no HTML.

The HTML report and the dashboard both call ``verdict_view`` and ``headline_view``, so the
answer to "can this model ship, and why not?" reads the same in both.

- Verdict: the run's own gate policy (``audit.decide.verdict``), evaluated again from the results and
  the run directory (so a run whose process died reads as incomplete, not as it last wrote),
  else the stored ``verdict``; a run without a policy is ``not_gated``.
- Headline: clean and balanced accuracy; worst-case robust accuracy per norm and eps with the
  run's ``robustness.reliable`` flag and its reason; the worst fairness disparity with its
  bootstrap interval (the one furthest past its tolerance, see ``worst_disparity``); the most
  faithful explanation method(s) (faithfulness rank 1); mean corrupted accuracy and the best OOD detector's
  AUROC (mean over its OOD sets); counts of findings by severity.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from audit.keys import metric_key, parse_metric_key
from audit.results import decode_number
from reports.tasks import task_cards
from reports.views import all_findings, count_findings, format_value

VERDICT_TEXT: dict[str, tuple[str, str]] = {
    "pass": ("PASS", "every check of the run's gate policy passed"),
    "fail": ("FAIL", "the run's gate policy failed"),
    "error": ("CANNOT DECIDE", "the gate policy could not be checked: a metric is missing or NaN, a section "
                               "errored, or the run did not finish"),
    "not_gated": ("NOT GATED", "the run carries no gate policy: add 'gate:' to the config or pass "
                               "`nnaudit run --policy FILE`"),
}
WORST_CASE = ("robustness", "worst_case", None, "eps=", "robust_accuracy")  # a parse_metric_key(...).matches pattern
DISPARITY_TABLE = "disparities"


# -- verdict --------------------------------------------------------------------------------


def verdict_view(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``status`` (pass, fail, error, not_gated), ``label``, ``text``, ``failing`` checks, ``checks``, ``waived``
    checks (each with its ``waiver``), ``waivers`` (each with its state), ``ungated`` (the high and critical
    findings no policy rule covers) and ``ungated_text`` ("3 high findings are not gated", "" for none).

    ``failing`` holds the checks that did not pass, each with ``name``, ``status``, ``message``,
    ``value`` and ``threshold`` (decoded numbers) and ``value_text``.
    """
    from audit.decide.verdict import VERDICT_KEY, evaluate_verdict
    from audit.errors import ConfigError

    try:
        record = evaluate_verdict(results, run_dir)
    except ConfigError as err:  # a hand-edited results file: say so instead of failing to render
        label, _ = VERDICT_TEXT["error"]
        check = _check_view({"name": "gate policy", "kind": "run", "status": "error",
                             "message": f"the policy the run carries is invalid: {err}"})
        return {"status": "error", "label": label, "text": "the run's gate policy cannot be read",
                "failing": [check], "checks": [check], "n_checks": 1, "n_passed": 0, "source": "policy",
                **_waiver_view({})}
    source = "policy"
    if record is None:
        stored = results.get(VERDICT_KEY)
        record = dict(stored) if isinstance(stored, Mapping) else None
        source = "stored"
    if record is None:
        label, text = VERDICT_TEXT["not_gated"]
        return {"status": "not_gated", "label": label, "text": text, "failing": [], "checks": [], "n_checks": 0,
                "n_passed": 0, "source": None, **_waiver_view({})}
    status = str(record.get("status", "error"))
    label, text = VERDICT_TEXT.get(status, VERDICT_TEXT["error"])
    checks = [_check_view(c) for c in record.get("checks", [])]
    failing = [c for c in checks if c["status"] in ("fail", "missing", "error")]
    return {"status": status, "label": label, "text": text, "failing": failing, "checks": checks,
            "n_checks": len(checks), "n_passed": sum(1 for c in checks if c["status"] == "pass"), "source": source,
            **_waiver_view(record)}


def _waiver_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The waived checks, the waivers with their states and the ungated findings of a verdict record (records
    written before waivers have none)."""
    from audit.decide.waive import ungated_text

    waived = [{**_check_view(c), "waiver": dict(c.get("waiver") or {})} for c in record.get("checks", [])
              if c.get("status") == "waived"]
    return {"waived": waived, "n_waived": len(waived), "waivers": [dict(w) for w in record.get("waivers", [])],
            "ungated": [dict(f) for f in record.get("ungated", [])],
            "ungated_text": ungated_text(record.get("ungated_findings") or {})}


def _check_view(check: Mapping[str, Any]) -> dict[str, Any]:
    value, threshold = decode_number(check.get("value")), decode_number(check.get("threshold"))
    return {"name": str(check.get("name", "")), "kind": check.get("kind"), "status": check.get("status"),
            "message": str(check.get("message", "")), "metric": check.get("metric"), "op": check.get("op"),
            "value": value, "threshold": threshold, "value_text": None if value is None else format_value(value),
            "threshold_text": None if threshold is None else format_value(threshold)}


# -- headline -------------------------------------------------------------------------------


def _metrics(results: Mapping[str, Any], section: str) -> dict[str, Any]:
    data = results.get("sections", {}).get(section, {})
    metrics: dict[str, Any] = data.get("metrics", {}) if data.get("status", "ok") == "ok" else {}
    return metrics


def _number(metrics: Mapping[str, Any], name: str) -> float | None:
    return decode_number(metrics.get(name)) if name in metrics else None


def _card(label: str, value: float | None, *, detail: str | None = None, metric: str | None = None,
          tone: str = "plain") -> dict[str, Any]:
    return {"label": label, "value": value, "text": format_value(value), "detail": detail, "metric": metric,
            "tone": tone}


def robustness_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Worst-case robust accuracy per norm and eps, in recorded order; ``bound`` is "upper bound" when the model had
    no gradients (``robustness.black_box_only``)."""
    metrics = _metrics(results, "robustness")
    # a model without gradients: the worst case comes from black-box attacks only, an upper bound
    bound = "upper bound" if (_number(metrics, "robustness.black_box_only") or 0) >= 0.5 else None
    rows = []
    for name, raw in metrics.items():
        match = parse_metric_key(name).matches(*WORST_CASE)
        if match is None:
            continue
        value = decode_number(raw)
        rows.append({"norm": match["2"], "eps": match["eps"], "value": value, "text": format_value(value),
                     "metric": name, "bound": bound})
    text_key = "robustness.worst_case.text.robust_accuracy"  # text attacks (attacks/text/run.py): no eps
    if text_key in metrics:
        params = results.get("sections", {}).get("robustness", {}).get("params", {}).get("text", {})
        fraction = params.get("max_words_fraction") if isinstance(params, Mapping) else None
        value = decode_number(metrics[text_key])
        budget = f"≤ {fraction:.0%} of words" if isinstance(fraction, (int, float)) else ""
        rows.append({"norm": "text attacks", "eps": budget, "value": value, "text": format_value(value),
                     "metric": text_key, "bound": None})
    return rows


def reliability(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """``robustness.reliable`` (1/0) with the reason its finding gives; None when not recorded."""
    section = results.get("sections", {}).get("robustness", {})
    metrics = _metrics(results, "robustness")
    if "robustness.reliable" not in metrics:
        return None
    value = decode_number(metrics["robustness.reliable"])
    reason = next((str(f.get("message", "")) for f in section.get("findings", [])
                   if f.get("code") == "robustness.reliable" or f.get("metric") == "robustness.reliable"), None)
    reliable = value is not None and value >= 0.5
    return {"reliable": reliable, "text": "reliable" if reliable else "NOT reliable", "reason": reason}


def _disparity_score(metric: str, value: float, tolerance: float) -> float:
    """How far past its tolerance a disparity is: 1 at the tolerance, above 1 beyond it."""
    if metric.endswith("_ratio"):
        return (1.0 - value) / max(1.0 - tolerance, 1e-12)
    return value / max(tolerance, 1e-12)


def worst_disparity(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fairness disparity furthest past its tolerance, from the fairness section's ``disparities`` table.

    Rows the section flagged come first; then the largest score (difference / tolerance, or
    (1 - ratio) / (1 - tolerance) for ratios), computed on the value over the groups with enough
    rows when the table has it. Without any tolerance, the largest difference. None when the
    run has no fairness disparities.
    """
    section = results.get("sections", {}).get("fairness", {})
    if section.get("status", "ok") != "ok":
        return None
    table = next((t for t in section.get("tables", []) if t.get("name") == DISPARITY_TABLE), None)
    if table is None:
        return None
    columns = list(table.get("columns", []))
    needed = ("grouping", "metric", "value")
    if any(c not in columns for c in needed):
        return None
    index = {name: columns.index(name) for name in columns}
    best: tuple[tuple[bool, bool, float], dict[str, Any]] | None = None
    for row in table.get("rows", []):
        cell = {name: (row[i] if i < len(row) else None) for name, i in index.items()}
        value = _as_float(cell.get("value"))
        if value is None:
            continue
        judged = _as_float(cell.get("enough_rows"))
        judged = value if judged is None else judged
        tolerance = _as_float(cell.get("tolerance"))
        metric = str(cell["metric"])
        if tolerance is not None:
            score = _disparity_score(metric, judged, tolerance)
        elif metric.endswith("_difference"):
            score = judged  # ranked below every row that has a tolerance (the key's second element)
        else:
            continue
        key = (bool(cell.get("flagged")), tolerance is not None, score)
        if best is None or key > best[0]:
            low, high = _as_float(cell.get("ci_low")), _as_float(cell.get("ci_high"))
            best = (key, {"grouping": str(cell["grouping"]), "metric": metric,
                          "label": metric.replace("_", " "), "value": value, "text": format_value(value),
                          "ci_low": low, "ci_high": high,
                          "interval_text": None if low is None or high is None else
                          f"[{format_value(low)}, {format_value(high)}]",
                          "tolerance": tolerance, "flagged": bool(cell.get("flagged"))})
    return None if best is None else best[1]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if math.isnan(float(value)) else float(value)
    try:
        return decode_number(value)
    except Exception:  # a text cell
        return None


def most_faithful(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The explanation method(s) ranked first by faithfulness (ties share rank 1), with their deletion AUC."""
    metrics = _metrics(results, "explanations")
    ranked = []
    for name, raw in metrics.items():
        key = parse_metric_key(name)
        if key.section != "explanations" or key.name != "faithfulness_rank" or not key.path:
            continue
        rank = decode_number(raw)
        if rank is not None:
            ranked.append((rank, ".".join(key.path)))
    if not ranked:
        return None
    top = min(rank for rank, _ in ranked)
    methods = [method for rank, method in ranked if rank == top]
    auc = _number(metrics, metric_key("explanations", methods[0], "deletion_auc"))
    return {"methods": methods, "text": ", ".join(methods), "tied": len(methods) > 1,
            "deletion_auc": auc, "deletion_auc_text": None if auc is None else format_value(auc)}


def shift_cards(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean corrupted accuracy (corruptions section) and the best OOD detector's AUROC, mean over the OOD sets
    (ood section), when those sections ran."""
    cards = []
    corrupted = _number(_metrics(results, "corruptions"), "corruptions.mean_accuracy")
    if corrupted is not None:
        cards.append(_card("Mean corrupted accuracy", corrupted, metric="corruptions.mean_accuracy"))
    best: tuple[float, str] | None = None
    for name, raw in _metrics(results, "ood").items():
        parts = name.split(".")  # ood.<detector>.auroc: a detector's mean over the OOD sets
        value = decode_number(raw) if len(parts) == 3 and parts[2] == "auroc" else None
        if value is not None and (best is None or value > best[0]):
            best = (value, parts[1])
    if best is not None:
        cards.append(_card(f"Best OOD detector AUROC ({best[1]})", best[0], metric=f"ood.{best[1]}.auroc"))
    return cards


def headline_view(results: Mapping[str, Any]) -> dict[str, Any]:
    """The headline card's values; each entry is None when the run did not compute it."""
    performance, imbalance = _metrics(results, "performance"), _metrics(results, "imbalance")
    accuracy = _number(performance, "performance.accuracy")
    balanced = _number(imbalance, "imbalance.balanced_accuracy")
    cards = task_cards(results)  # regression, multi-label: their own cards (reports.tasks)
    if cards is None:
        cards = []
        if accuracy is not None or "performance" in results.get("sections", {}):
            cards.append(_card("Clean accuracy", accuracy, metric="performance.accuracy"))
        if balanced is not None or "imbalance" in results.get("sections", {}):
            cards.append(_card("Balanced accuracy", balanced, metric="imbalance.balanced_accuracy"))
    cards += shift_cards(results)
    findings = all_findings(results)
    return {
        "cards": cards,
        "robustness": robustness_rows(results),
        "reliability": reliability(results),
        "disparity": worst_disparity(results),
        "faithful": most_faithful(results),
        "finding_counts": count_findings(findings),
    }
