"""Fairness of a multi-label model: are its labels as right for every group?

Per grouping: fairlearn's ``MetricFrame`` with subset accuracy (exact match) and Hamming loss per group (once,
outside any loop: the reported values), the worst group of each, the gaps as a difference (max - min) and a ratio
(min / max), with bootstrap intervals from the one bootstrap (``audit.bootstrap``; both metrics are means over
samples, counted with numpy over the resampled index matrix). A subset-accuracy difference above
``accuracy_difference_max`` is a finding, judged as the classification disparities are (``audit.fairness.judge``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.bootstrap import Statistic, bootstrap
from audit.fairness.estimates import Estimate, error_bars, estimates, record_estimate
from audit.fairness.groups import GroupSet
from audit.fairness.judge import Thin, judge, lowest_highest, number
from audit.keys import metric_key
from audit.results import SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.params import FairnessParams

HIGHER_IS_BETTER = {"subset_accuracy": True, "hamming_loss": False}


def record_multilabel_fairness(result: SectionResult, ctx: AuditContext, group_sets: list[GroupSet], *,
                               params: FairnessParams, section: str) -> None:
    y, pred = ctx.data.y, ctx.clean_label_predictions()
    per_sample = {"subset_accuracy": (pred == y).all(axis=1).astype(np.float64),
                  "hamming_loss": (pred != y).mean(axis=1)}
    rows: list[list[Any]] = []
    for gs in ctx.progress(group_sets, desc="fairness: group metrics", total=len(group_sets)):
        rows += _grouping(result, gs, y, pred, per_sample, params, section)
    result.table("disparities", "Disparities between groups (max - min and min / max over groups)",
                 ["grouping", "metric", "value", "ci_low", "ci_high", "enough_rows", "tolerance", "flagged"], rows,
                 description=f"{params.confidence:.0%} bootstrap intervals from {params.n_resamples} resamples drawn "
                             "within groups")
    result.notes.append("multi-label: fairness is subset accuracy (exact match) and Hamming loss per group; "
                        "selection rates and equalized odds per label are not computed yet")


def group_mean_statistic(codes: np.ndarray, values: dict[str, np.ndarray], n_groups: int) -> Statistic:
    """Per-group means of per-sample values, their difference (max - min), ratio (min / max) and worst group."""

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        idx = np.arange(len(codes))[None, :] if index is None else index
        c = codes[idx]
        masks = [c == g for g in range(n_groups)]
        counts = np.stack([m.sum(axis=1) for m in masks], axis=1).astype(np.float64)
        out: dict[str, np.ndarray] = {}
        for name, v in values.items():
            vi = v[idx]
            per = np.stack([np.where(m, vi, 0.0).sum(axis=1) for m in masks], axis=1) / counts
            high, low = per.max(axis=1), per.min(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{name}_ratio"] = np.where(high > 0, low / high, 1.0)
            out[f"{name}_difference"] = high - low
            out[f"worst_group_{name}"] = low if HIGHER_IS_BETTER[name] else high
            out[f"group.{name}"] = per
        return {k: (v[0] if index is None else v) for k, v in out.items()}

    return statistic


def _grouping(result: SectionResult, gs: GroupSet, y: np.ndarray, pred: np.ndarray,
              per_sample: dict[str, np.ndarray], params: FairnessParams, section: str) -> list[list[Any]]:
    import pandas as pd
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score, hamming_loss

    sensitive = pd.DataFrame({name: np.asarray(v).astype(str) for name, v in gs.columns.items()})
    frame = MetricFrame(metrics={"subset_accuracy": accuracy_score, "hamming_loss": hamming_loss}, y_true=y,
                        y_pred=pred, sensitive_features=sensitive)
    statistic = group_mean_statistic(gs.codes, per_sample, len(gs.groups))
    point = statistic(None)
    for m in per_sample:  # the reported per-group values: fairlearn's
        point[f"group.{m}"] = np.array([float(frame.by_group.loc[key, m]) for key in gs.frame_index])
    samples = None
    if params.n_resamples:
        samples = bootstrap(gs.codes, params.n_resamples, gs.seed, statistic)
    est = estimates(point, samples, params.confidence)
    group_rows = []
    for j, (g, key) in enumerate(zip(gs.groups, gs.group_keys, strict=True)):
        row: list[Any] = [g, key, int(gs.counts[j])]
        for m in per_sample:
            e = est[f"group.{m}"][j]
            row += [e.value, e.low, e.high]
            result.metric(metric_key(gs.key, ("group", key), m), e.value)
        group_rows.append(row)
    result.table(f"groups_{gs.key}", f"Group metrics by {gs.label}",
                 ["group", "key", "count", *[f"{m}{s}" for m in per_sample for s in ("", "_ci_low", "_ci_high")]],
                 group_rows)
    result.figure({"name": f"groups_{gs.key}", "title": f"Group metrics by {gs.label} ({params.confidence:.0%} "
                   "bootstrap intervals)", "kind": "bar", "xlabel": gs.label, "ylabel": "rate", "ylim": [0.0, 1.0],
                   "series": [{"label": m.replace("_", " "), "x": gs.groups, "y": [e.value for e in est[f"group.{m}"]],
                               **error_bars(est[f"group.{m}"])} for m in per_sample]})
    rows: list[list[Any]] = []
    for m in per_sample:
        result.metric(metric_key("overall", m), float(frame.overall[m]))
        for name in (f"worst_group_{m}", f"{m}_difference", f"{m}_ratio"):
            e = est[name][0]
            record_estimate(result, metric_key(gs.key, name), e, with_interval=bool(params.n_resamples))
            tol = params.accuracy_difference_max if name == "subset_accuracy_difference" else None
            flagged = tol is not None and e.beyond(tol, is_ratio=False)
            rows.append([gs.label, name, e.value, e.low, e.high, None, tol, flagged])
            if flagged and tol is not None:
                _finding(result, gs, est, e, tol, params, section)
    return rows


def _finding(result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]], e: Estimate, tol: float,
             params: FairnessParams, section: str) -> None:
    values = est["group.subset_accuracy"]
    (lo_g, lo_v), (hi_g, hi_v) = lowest_highest(gs.groups, values)
    thin = [Thin(g, "subset_accuracy", int(gs.counts[gs.groups.index(g)]), "rows") for g in dict.fromkeys((lo_g, hi_g))
            if g in gs.groups and gs.counts[gs.groups.index(g)] < params.min_rate_count]
    verdict = judge(e, tol, is_ratio=False, confidence=params.confidence, thin=thin, supported=None,
                    min_count=params.min_rate_count)
    result.finding(verdict.severity, f"{gs.label}: subset accuracy difference {e.value:.3f} "
                   f"({e.ci_text(params.confidence)}) is above the tolerance ({tol:g}); {verdict.text}; subset "
                   f"accuracy '{lo_g}' {number(lo_v)} vs '{hi_g}' {number(hi_v)}",
                   code="fairness.subset_accuracy_difference",
                   metric=metric_key(section, gs.key, "subset_accuracy_difference"), value=e.value)
