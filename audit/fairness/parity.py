"""Group metrics and disparities for one grouping, as the section records them.

fairlearn's ``MetricFrame`` gives the reported per-group values (once, outside any loop); the
vectorized counts of ``audit.fairness.groups`` give the same values inside the bootstrap. Every
rate refers to the favourable label. Findings for demographic parity, equalized odds and the
accuracy gap are judged by ``audit.fairness.judge``: by their interval, and by the rows each
rate at the extremes is computed from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.bootstrap import Statistic, bootstrap
from audit.fairness.estimates import Estimate, error_bars, estimates, record_estimate
from audit.fairness.groups import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    OVR_METRICS,
    RATE_BASIS,
    GroupSet,
    confusion_counts,
    disparities,
    mask_thin,
    metric_frame,
    metrics_from_counts,
    one_vs_rest,
    rate_counts,
)
from audit.fairness.judge import Thin, count_of, judge, lowest_highest, number, thin_extremes, words
from audit.keys import metric_key
from audit.results import SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.params import FairnessParams

# the disparities findings are raised for, and the rates each compares between groups
HEADLINE: dict[str, tuple[str, ...]] = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equalized_odds_difference": ("true_positive_rate", "false_positive_rate"),
    "equalized_odds_ratio": ("true_positive_rate", "false_positive_rate"),
    "accuracy_difference": ("accuracy",),
}
PLOTTED = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
UNDEFINED_WHY = {
    "true_positive_rate": "has no rows of the favourable label",
    "false_positive_rate": "has no rows of the other label(s)",
    "precision": "has no rows predicted favourable",
}
COUNT_COLUMNS = {"positives": "true_positive_rate", "negatives": "false_positive_rate",
                 "predicted_positives": "precision"}


@dataclass
class Headline:
    """One headline disparity with what judging it needs."""

    value: Estimate
    supported: Estimate  # over the groups with enough rows for each rate
    rates: dict[str, list[Estimate]]  # per-group values of the rates it compares
    components: dict[str, Estimate]  # each rate's own disparity of the same kind
    counts: dict[str, np.ndarray]  # rows each rate of each group is computed from
    cls: int | None = None  # multi-class: the class audited one-vs-rest


def record_parity(result: SectionResult, ctx: AuditContext, gs: GroupSet, *, positive: int | None,
                  params: FairnessParams, section: str) -> list[list[Any]]:
    """Group metrics, intervals, tables, figure and findings of one grouping; returns its disparity rows."""
    y, pred, k = ctx.data.y, ctx.clean_predictions(), ctx.data.num_classes
    binary = k == 2
    metrics = BINARY_METRICS if binary else MULTICLASS_METRICS
    statistic, counts, class_counts = group_statistic(gs.codes, y, pred, len(gs.groups), k, positive=positive,
                                                      min_count=params.min_rate_count)
    frame = metric_frame(y, pred, gs.columns, positive if binary else None)
    point = statistic(None)
    for m in metrics:  # reported per-group values: fairlearn's (the vectorized ones equal them)
        point[f"group.{m}"] = np.array([float(frame.by_group.loc[key, m]) for key in gs.frame_index])
    samples = None
    if params.n_resamples:
        desc = f"fairness: bootstrap by {gs.label} ({params.n_resamples} resamples)"
        samples = bootstrap(gs.codes, params.n_resamples, gs.seed, statistic,
                            progress=lambda chunks, total: ctx.progress(chunks, desc=desc, total=total))
    est = estimates(point, samples, params.confidence)
    _record_groups(result, gs, est, metrics, frame, counts, params)
    _undefined_notes(result, gs, est)
    if binary:
        headlines = {name: _headline(est, name, "", counts) for name in HEADLINE}
    else:
        headlines = _class_headlines(result, gs, est, k, class_counts, counts, positive, ctx.data.class_names)
    tolerances = {"demographic_parity_difference": params.dp_difference_max,
                  "demographic_parity_ratio": params.dp_ratio_min,
                  "equalized_odds_difference": params.eo_difference_max,
                  "equalized_odds_ratio": None,
                  "accuracy_difference": params.accuracy_difference_max}
    names = [*HEADLINE, *(f"{m}_{kind}" for m in metrics if m != "count" for kind in ("difference", "ratio"))]
    rows: list[list[Any]] = []
    for name in dict.fromkeys(names):
        head = headlines.get(name)
        if head is None and name not in est:
            continue
        e = head.value if head is not None else est[name][0]
        record_estimate(result, metric_key(gs.key, name), e, with_interval=bool(params.n_resamples))
        enough = head.supported.value if head is not None else None
        if head is not None:
            result.metric(metric_key(gs.key, name, "enough_rows"), enough)
        tol = tolerances.get(name)
        is_ratio = name.endswith("_ratio")
        flagged = tol is not None and e.beyond(tol, is_ratio=is_ratio)
        rows.append([gs.label, name, e.value, e.low, e.high, enough, tol, flagged])
        if flagged and tol is not None and head is not None:
            _finding(result, gs, name, head, tol, params, section, ctx.data.class_names)
    return rows


def group_statistic(codes: np.ndarray, y: np.ndarray, pred: np.ndarray, n_groups: int, k: int, *,
                    positive: int | None, min_count: int,
                    ) -> tuple[Statistic, dict[str, np.ndarray], dict[int, dict[str, np.ndarray]]]:
    """The statistic the bootstrap resamples: per-group rates, their disparities, and the headline
    disparities over the groups with at least ``min_count`` rows per rate ("supported."); multi-class
    tasks add every class one-vs-rest ("class<c>."). Also returns the rows behind each rate (overall
    and, multi-class, per class), counted once on the original rows."""
    binary = k == 2
    conf0 = confusion_counts(codes, y, pred, n_groups, k)
    counts = rate_counts(conf0, positive if binary else None)
    class_counts = {} if binary else {c: rate_counts(conf0, c) for c in range(k)}

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        conf = conf0 if index is None else confusion_counts(codes, y, pred, n_groups, k, index)
        per = metrics_from_counts(conf, positive if binary else None)
        out = {f"group.{m}": v for m, v in per.items()}
        out.update(disparities(per))
        out.update(_supported("", disparities(mask_thin(per, counts, min_count))))
        for c, c_counts in class_counts.items():
            ovr = {m: v for m, v in one_vs_rest(conf, c).items() if m in OVR_METRICS}
            out.update({f"class{c}.group.{m}": v for m, v in ovr.items()})
            out.update({f"class{c}.{m}": v for m, v in disparities(ovr).items()})
            out.update(_supported(f"class{c}.", disparities(mask_thin(ovr, c_counts, min_count))))
        return out

    return statistic, counts, class_counts


def _supported(prefix: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}supported.{n}": v for n, v in values.items() if n in HEADLINE}


def _headline(est: dict[str, list[Estimate]], name: str, prefix: str, counts: dict[str, np.ndarray],
              cls: int | None = None) -> Headline:
    kind = "ratio" if name.endswith("_ratio") else "difference"
    rates = HEADLINE[name]
    return Headline(value=est[f"{prefix}{name}"][0], supported=est[f"{prefix}supported.{name}"][0],
                    rates={m: est[f"{prefix}group.{m}"] for m in rates},
                    components={m: est[f"{prefix}{m}_{kind}"][0] for m in rates},
                    counts={m: counts[m] for m in rates}, cls=cls)


def _class_headlines(result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]], k: int,
                     class_counts: dict[int, dict[str, np.ndarray]], counts: dict[str, np.ndarray],
                     positive: int | None, class_names: list[str]) -> dict[str, Headline]:
    """Multi-class: every class one-vs-rest recorded; the headline is the favourable class when one is
    set, else the worst class of each disparity."""
    out = {"accuracy_difference": _headline(est, "accuracy_difference", "", counts)}
    rows = []
    for name in HEADLINE:
        if name == "accuracy_difference":
            continue
        per_class = [est[f"class{c}.{name}"][0] for c in range(k)]
        for c, e in enumerate(per_class):
            result.metric(metric_key(gs.key, ("class", c), name), e.value)
        if positive is not None:
            c = positive
        else:
            valid = [(c, e) for c, e in enumerate(per_class) if not math.isnan(e.value)]
            if not valid:
                out[name] = _headline(est, name, "class0.", class_counts[0], 0)
                continue
            pick = min if name.endswith("_ratio") else max
            c = pick(valid, key=lambda item: item[1].value)[0]
        out[name] = _headline(est, name, f"class{c}.", class_counts[c], c)
        e = out[name].value
        rows.append([name, class_names[c], e.value, e.low, e.high])
    which = "the favourable class" if positive is not None else "worst class"
    result.table(f"worst_class_{gs.key}", f"{gs.label}: one-vs-rest disparities, {which}",
                 ["metric", "class", "value", "ci_low", "ci_high"], rows)
    headline = (f"the headline value is the favourable class '{class_names[positive]}'" if positive is not None
                else "the headline value is the worst class")
    result.notes.append(f"{gs.label}: multi-class task; demographic parity and equalized odds are computed "
                        f"one-vs-rest per class (metrics class=<c>.*), {headline}")
    return out


def _record_groups(result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]], metrics: tuple[str, ...],
                   frame: Any, counts: dict[str, np.ndarray], params: FairnessParams) -> None:
    for m in metrics:
        result.metric(metric_key("overall", m), float(frame.overall[m]))
    count_columns = [c for c, rate in COUNT_COLUMNS.items() if rate in counts]
    thin = _thin_groups(gs, counts, params.min_rate_count)
    rows = []
    for j, (g, key) in enumerate(zip(gs.groups, gs.group_keys, strict=True)):
        row: list[Any] = [g, key, int(gs.counts[j]), *[int(counts[COUNT_COLUMNS[c]][j]) for c in count_columns],
                          thin.get(g)]
        for m in metrics[1:]:
            e = est[f"group.{m}"][j]
            row += [e.value, e.low, e.high]
            result.metric(metric_key(gs.key, ("group", key), m), e.value)
        rows.append(row)
    columns = ["group", "key", "count", *count_columns, "too_few_rows",
               *[f"{m}{s}" for m in metrics[1:] for s in ("", "_ci_low", "_ci_high")]]
    result.table(f"groups_{gs.key}", f"Group metrics by {gs.label}", columns, rows,
                 description="key: the group's name in metric names (group=<key>); positives: rows of the favourable "
                             "label; too_few_rows: rates computed from fewer than min_rate_count rows; null: "
                             "undefined for that group (e.g. no positives for the true-positive rate)")
    if thin:
        listed = "; ".join(f"'{g}' (n={int(gs.counts[gs.groups.index(g)])}): {what}" for g, what in thin.items())
        result.finding("info", f"{gs.label}: rates computed from fewer than {params.min_rate_count} rows "
                       f"(min_rate_count): {listed}. They are reported with their intervals; a gap resting on them is "
                       "rated by the groups with enough rows", code="fairness.small_group")
    series = []
    for m in (p for p in PLOTTED if p in metrics):
        values = est[f"group.{m}"]
        series.append({"label": words(m), "x": gs.groups, "y": [e.value for e in values], **error_bars(values)})
    result.figure({"name": f"groups_{gs.key}", "title": f"Group metrics by {gs.label} "
                   f"({params.confidence:.0%} bootstrap intervals)", "kind": "bar", "xlabel": gs.label,
                   "ylabel": "rate", "ylim": [0.0, 1.0], "series": series})


def _thin_groups(gs: GroupSet, counts: dict[str, np.ndarray], min_count: int) -> dict[str, str]:
    """group -> which of its rates rest on fewer than ``min_count`` rows, in words."""
    out = {}
    for j, g in enumerate(gs.groups):
        if gs.counts[j] < min_count:
            out[g] = "every rate"
            continue
        thin = [f"{words(rate)} from {count_of(int(c[j]), RATE_BASIS[rate])}" for rate, c in counts.items()
                if c[j] < min_count]
        if thin:
            out[g] = ", ".join(thin)
    return out


def _undefined_notes(result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]]) -> None:
    for m, why in UNDEFINED_WHY.items():
        if f"group.{m}" not in est:
            continue
        missing = [g for g, e in zip(gs.groups, est[f"group.{m}"], strict=True) if math.isnan(e.value)]
        if missing:
            result.notes.append(f"{gs.label}: {words(m)} undefined (null) for {missing}: the group {why}; it is "
                                f"left out of the {m} disparities instead of counting as 0")


def _finding(result: SectionResult, gs: GroupSet, name: str, head: Headline, tol: float, params: FairnessParams,
             section: str, class_names: list[str]) -> None:
    is_ratio = name.endswith("_ratio")
    exceeding = {m: v for m, v in head.rates.items() if head.components[m].beyond(tol, is_ratio=is_ratio)}
    thin: list[Thin] = thin_extremes(gs.groups, exceeding, head.counts, RATE_BASIS, params.min_rate_count)
    verdict = judge(head.value, tol, is_ratio=is_ratio, confidence=params.confidence, thin=thin,
                    supported=head.supported, min_count=params.min_rate_count)
    parts = []
    for m, values in head.rates.items():
        (lo_g, lo_v), (hi_g, hi_v) = lowest_highest(gs.groups, values)
        parts.append(f"{words(m)} '{lo_g}' {number(lo_v)} vs '{hi_g}' {number(hi_v)}")
    scope = "" if head.cls is None else f" (class '{class_names[head.cls]}' one-vs-rest)"
    rule = "four-fifths rule" if name == "demographic_parity_ratio" else "tolerance"
    side = "below" if is_ratio else "above"
    e = head.value
    result.finding(verdict.severity, f"{gs.label}: {words(name)}{scope} {e.value:.3f} "
                   f"({e.ci_text(params.confidence)}) is {side} the {rule} ({tol:g}); {verdict.text}; "
                   + ", ".join(parts), code=f"fairness.{name}", metric=metric_key(section, gs.key, name), value=e.value)
