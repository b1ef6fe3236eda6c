"""Fairness of a regression model: is the error the same for every group?

Per grouping: fairlearn's ``MetricFrame`` with MAE and RMSE per group (once, outside any loop: the reported
values), the worst group's error, and the gaps between groups as a difference (worst - best) and a ratio (best /
worst, 1 when equal, as fairlearn's ratios), with bootstrap intervals from the one bootstrap (``audit.bootstrap``:
resamples within groups; per-group sums of absolute and squared errors counted with numpy over the resampled
index matrix). A ratio below ``error_ratio_min`` is a finding, judged as the classification disparities are
(``audit.fairness.judge``: by its interval, and by the rows of the groups at the extremes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.bootstrap import bootstrap
from audit.fairness.estimates import Estimate, error_bars, estimates, record_estimate
from audit.fairness.groups import GroupSet
from audit.fairness.judge import Thin, judge, lowest_highest, number
from audit.keys import metric_key
from audit.results import SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.params import FairnessParams

ERRORS = ("mae", "rmse")
NAMES = {"mae": "MAE", "rmse": "RMSE"}


def record_regression_fairness(result: SectionResult, ctx: AuditContext, group_sets: list[GroupSet], *,
                               params: FairnessParams, section: str) -> None:
    """Every grouping's error per group, disparities, intervals, findings; one disparities table."""
    rows: list[list[Any]] = []
    for gs in ctx.progress(group_sets, desc="fairness: group errors", total=len(group_sets)):
        rows += record_group_errors(result, ctx, gs, params=params, section=section)
    result.table("disparities", "Error disparities between groups (worst - best and best / worst over groups)",
                 ["grouping", "metric", "value", "ci_low", "ci_high", "enough_rows", "tolerance", "flagged"], rows,
                 description=f"{params.confidence:.0%} bootstrap intervals from {params.n_resamples} resamples drawn "
                             f"within groups; enough_rows: the ratio over the groups with at least "
                             f"{params.min_rate_count} rows")
    result.table("setup", "What the fairness metrics refer to", ["setting", "value"],
                 [["task", "regression: the error of the predicted value per group (MAE, RMSE)"],
                  ["error_ratio_min", f"{params.error_ratio_min:g} (best group's error / worst group's)"],
                  ["min_rate_count", str(params.min_rate_count)],
                  ["bootstrap", f"{params.n_resamples} resamples within groups, {params.confidence:.0%} "
                                "bias-corrected percentile intervals" if params.n_resamples else "off"]])
    result.notes.append("regression: fairness is the error per group (MAE, RMSE); selection rates and equalized "
                        "odds need classes and are not computed")


def group_error_statistic(codes: np.ndarray, abs_err: np.ndarray, n_groups: int, supported: np.ndarray,
                          ) -> Any:
    """The statistic the bootstrap resamples: per-group MAE and RMSE, their disparities, and the ratios over the
    groups in ``supported`` (enough rows)."""
    sq_err = abs_err ** 2

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        idx = np.arange(len(codes))[None, :] if index is None else index
        c, a, s = codes[idx], abs_err[idx], sq_err[idx]
        counts = np.stack([(c == g).sum(axis=1) for g in range(n_groups)], axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = np.stack([np.where(c == g, a, 0.0).sum(axis=1) for g in range(n_groups)], axis=1) / counts
            rmse = np.sqrt(np.stack([np.where(c == g, s, 0.0).sum(axis=1) for g in range(n_groups)], axis=1)
                           / counts)
        out: dict[str, np.ndarray] = {}
        for name, per in (("mae", mae), ("rmse", rmse)):
            out.update(_disparities(name, per))
            out.update({f"supported.{k}": v for k, v in _disparities(name, per[:, supported]).items()})
            out[f"group.{name}"] = per
        return {k: (v[0] if index is None else v) for k, v in out.items()}

    return statistic


def _disparities(name: str, per: np.ndarray) -> dict[str, np.ndarray]:
    if per.shape[1] < 2:
        nan = np.full(per.shape[0], np.nan)
        return {f"{name}_difference": nan, f"{name}_ratio": nan, f"worst_group_{name}": nan}
    worst, best = np.nanmax(per, axis=1), np.nanmin(per, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(worst > 0, best / worst, 1.0)
    return {f"{name}_difference": worst - best, f"{name}_ratio": ratio, f"worst_group_{name}": worst}


def record_group_errors(result: SectionResult, ctx: AuditContext, gs: GroupSet, *, params: FairnessParams,
                        section: str) -> list[list[Any]]:
    y, pred = ctx.data.y, ctx.clean_values()
    frame = error_frame(y, pred, gs.columns)
    supported = gs.counts >= params.min_rate_count
    statistic = group_error_statistic(gs.codes, np.abs(pred - y), len(gs.groups), supported)
    point = statistic(None)
    for m in ERRORS:  # reported per-group values: fairlearn's (the vectorized ones equal them)
        point[f"group.{m}"] = np.array([float(frame.by_group.loc[key, m]) for key in gs.frame_index])
    samples = None
    if params.n_resamples:
        desc = f"fairness: bootstrap by {gs.label} ({params.n_resamples} resamples)"
        samples = bootstrap(gs.codes, params.n_resamples, gs.seed, statistic,
                            progress=lambda chunks, total: ctx.progress(chunks, desc=desc, total=total))
    est = estimates(point, samples, params.confidence)
    for m in ERRORS:
        result.metric(metric_key("overall", m), float(frame.overall[m]))
    _record_groups(result, gs, est, frame, params)
    rows: list[list[Any]] = []
    for m in ERRORS:
        for kind in ("worst_group", "difference", "ratio"):
            name = f"worst_group_{m}" if kind == "worst_group" else f"{m}_{kind}"
            e = est[name][0]
            record_estimate(result, metric_key(gs.key, name), e, with_interval=bool(params.n_resamples))
            enough = est[f"supported.{name}"][0].value if kind == "ratio" else None
            tol = params.error_ratio_min if kind == "ratio" else None
            flagged = tol is not None and e.beyond(tol, is_ratio=True)
            if kind == "ratio":
                result.metric(metric_key(gs.key, name, "enough_rows"), enough)
            rows.append([gs.label, name, e.value, e.low, e.high, enough, tol, flagged])
            if flagged and tol is not None:
                _finding(result, gs, m, est, tol, params, section)
    return rows


def error_frame(y: np.ndarray, pred: np.ndarray, columns: dict[str, np.ndarray]) -> Any:
    """fairlearn MetricFrame of count, MAE, RMSE, mean target and mean prediction per group."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    def mean_target(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(y_true))

    def mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(y_pred))

    sensitive = pd.DataFrame({name: np.asarray(v).astype(str) for name, v in columns.items()})
    return MetricFrame(metrics={"count": count, "mae": mean_absolute_error, "rmse": root_mean_squared_error,
                                "mean_target": mean_target, "mean_prediction": mean_prediction},
                       y_true=y, y_pred=pred, sensitive_features=sensitive)


def _record_groups(result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]], frame: Any,
                   params: FairnessParams) -> None:
    rows = []
    for j, (g, key) in enumerate(zip(gs.groups, gs.group_keys, strict=True)):
        index = gs.frame_index[j]
        row: list[Any] = [g, key, int(gs.counts[j]), bool(gs.counts[j] < params.min_rate_count)]
        for m in ERRORS:
            e = est[f"group.{m}"][j]
            row += [e.value, e.low, e.high]
            result.metric(metric_key(gs.key, ("group", key), m), e.value)
        row += [float(frame.by_group.loc[index, "mean_target"]), float(frame.by_group.loc[index, "mean_prediction"])]
        rows.append(row)
    result.table(f"groups_{gs.key}", f"Errors by {gs.label}",
                 ["group", "key", "count", "too_few_rows", *[f"{m}{s}" for m in ERRORS for s in ("", "_ci_low",
                                                                                                "_ci_high")],
                  "mean_target", "mean_prediction"], rows,
                 description="key: the group's name in metric names (group=<key>); too_few_rows: fewer than "
                             "min_rate_count rows")
    series = [{"label": NAMES[m], "x": gs.groups, "y": [e.value for e in est[f"group.{m}"]],
               **error_bars(est[f"group.{m}"])} for m in ERRORS]
    result.figure({"name": f"groups_{gs.key}", "title": f"Errors by {gs.label} ({params.confidence:.0%} bootstrap "
                   "intervals)", "kind": "bar", "xlabel": gs.label, "ylabel": "error (target units)",
                   "series": series})


def _finding(result: SectionResult, gs: GroupSet, m: str, est: dict[str, list[Estimate]], tol: float,
             params: FairnessParams, section: str) -> None:
    name = f"{m}_ratio"
    values = est[f"group.{m}"]
    (lo_g, lo_v), (hi_g, hi_v) = lowest_highest(gs.groups, values)
    thin = [Thin(g, m, int(gs.counts[gs.groups.index(g)]), "rows") for g in dict.fromkeys((lo_g, hi_g))
            if g in gs.groups and gs.counts[gs.groups.index(g)] < params.min_rate_count]
    e = est[name][0]
    verdict = judge(e, tol, is_ratio=True, confidence=params.confidence, thin=thin,
                    supported=est[f"supported.{name}"][0], min_count=params.min_rate_count)
    result.finding(verdict.severity, f"{gs.label}: {NAMES[m]} ratio {e.value:.3f} ({e.ci_text(params.confidence)}) "
                   f"is below the tolerance ({tol:g}); {verdict.text}; {NAMES[m]} '{lo_g}' {number(lo_v)} vs "
                   f"'{hi_g}' {number(hi_v)} (worst - best {est[f'{m}_difference'][0].value:.4g} in target units)",
                   code=f"fairness.{name}", metric=metric_key(section, gs.key, name), value=e.value)
