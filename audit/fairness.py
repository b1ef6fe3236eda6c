"""The ``fairness`` section: does the model work equally well for every group?

- Group metrics through fairlearn's ``MetricFrame`` for each sensitive column (and, with
  ``intersections: true``, their intersection): count, accuracy, selection rate, true- and
  false-positive rate, precision, balanced accuracy; demographic parity and equalized odds
  differences and ratios. Multi-class tasks get them one-vs-rest per class (headline: worst class).
- Seeded, stratified bootstrap intervals for every group metric and disparity, vectorized over
  integer-coded groups (``audit.fairness_metrics``); ``MetricFrame`` runs once, never in the loop.
- Robustness disparity (robust accuracy, attack success rate, minimal adversarial eps per group)
  from ``ctx.adversarial``, which the robustness section wrote: no second attack pass.
- Explanation disparity (mean |attribution| per feature per group) from ``ctx.attributions``.

Findings use tolerances from the parameters (four-fifths rule, equalized-odds difference...).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from audit.errors import ConfigError
from audit.fairness_metrics import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    OVR_METRICS,
    Interval,
    bootstrap,
    confusion_counts,
    difference,
    disparities,
    encode_groups,
    group_means,
    metric_frame,
    metrics_from_counts,
    one_vs_rest,
    percentile_interval,
    sanitize,
)
from audit.plugin import Params, SectionPlugin
from audit.results import SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AdversarialOutcome, AuditContext

NO_SENSITIVE = ("the data has no sensitive columns: name them in the config (data.sensitive: [gender, ethnicity] "
                "for a CSV/Parquet file, or a built-in dataset that has them) to audit fairness")
NO_ADVERSARIAL = ("robustness disparity skipped: no adversarial outcomes in this audit (ctx.adversarial is empty); "
                  "add a robustness section before fairness in the config's sections")
NO_ATTRIBUTIONS = ("explanation disparity skipped: no attributions in this audit (ctx.attributions is empty); "
                   "add an explanations section before fairness in the config's sections")
PLOTTED = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
UNDEFINED_WHY = {
    "true_positive_rate": "has no positive labels",
    "false_positive_rate": "has no negative labels",
    "precision": "has no predicted positives",
}


class FairnessParams(Params):
    features: list[str] | None = Field(None, description="sensitive columns to audit (default: all of data.sensitive)")
    intersections: bool = Field(False, description="also audit the intersection of all the sensitive columns")
    n_resamples: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the intervals (0: none)")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    min_group_size: int = Field(30, ge=1, description="groups with fewer rows are reported but flagged as small")
    dp_ratio_min: float = Field(0.8, gt=0, le=1, description="selection-rate ratio below this is flagged "
                                "(four-fifths rule)")
    dp_difference_max: float = Field(0.1, gt=0, le=1, description="demographic parity difference above this is flagged")
    eo_difference_max: float = Field(0.1, gt=0, le=1, description="equalized odds difference above this is flagged")
    accuracy_difference_max: float = Field(0.05, gt=0, le=1, description="accuracy gap between groups to flag")
    robust_accuracy_difference_max: float = Field(0.1, gt=0, le=1, description="robust accuracy gap to flag")
    attack_success_difference_max: float = Field(0.1, gt=0, le=1, description="attack success rate gap to flag")
    explanation_gap_max: float = Field(0.1, gt=0, le=1, description="gap in a feature's share of total |attribution| "
                                       "between groups to flag")
    explanation_top_k: int = Field(10, ge=1, le=100, description="features shown in the explanation disparity table")


@dataclass
class GroupSet:
    """One way of splitting the rows: a sensitive column, or the intersection of several."""

    name: str  # metric-name segment
    label: str  # for people
    columns: dict[str, np.ndarray]
    codes: np.ndarray
    groups: list[str]
    seed: int
    counts: np.ndarray = field(init=False)
    keys: list[Any] = field(init=False)  # MetricFrame's by_group index entry of each group

    def __post_init__(self) -> None:
        self.counts = np.bincount(self.codes, minlength=len(self.groups))
        first = np.zeros(len(self.groups), np.int64)
        first[self.codes[::-1]] = np.arange(len(self.codes))[::-1]
        cols = [np.asarray(v).astype(str) for v in self.columns.values()]
        self.keys = [tuple(c[r] for c in cols) if len(cols) > 1 else cols[0][r] for r in first]

    def small(self, min_size: int) -> list[str]:
        return [g for g, c in zip(self.groups, self.counts, strict=True) if c < min_size]


@dataclass
class Estimate:
    """A point estimate with its bootstrap interval (NaN where undefined or not computed)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def ci_text(self, confidence: float) -> str:
        if math.isnan(self.low):
            return "no interval"
        return f"{confidence:.0%} CI {self.low:.3f} to {self.high:.3f}"


def _estimates(point: dict[str, np.ndarray], samples: dict[str, np.ndarray] | None,
               confidence: float) -> dict[str, list[Estimate]]:
    """Point arrays (G,) or scalars plus their bootstrap samples (B, ...) -> Estimates per entry."""
    out: dict[str, list[Estimate]] = {}
    for name, values in point.items():
        flat = np.atleast_1d(values).astype(np.float64)
        rows = []
        for j, v in enumerate(flat):
            interval = Interval(math.nan, math.nan, 0.0)
            if samples is not None and name in samples and not math.isnan(v):
                interval = percentile_interval(samples[name].reshape(len(samples[name]), -1)[:, j], confidence, v)
            rows.append(Estimate(float(v), interval.low, interval.high))
        out[name] = rows
    return out


class FairnessSection(SectionPlugin):
    """Group fairness (fairlearn) with bootstrap intervals, plus robustness and explanation disparity."""

    name = "fairness"
    title = "Fairness across groups"
    ParamsModel = FairnessParams
    params: FairnessParams
    reads_sections = ("robustness", "explanations")

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        data = ctx.data
        if not data.sensitive:
            result.status = "skipped"
            result.notes.append(NO_SENSITIVE)
            return
        group_sets = self._group_sets(data.sensitive, ctx.seed)
        y = data.y
        pred = ctx.clean_predictions()
        k = data.num_classes
        self._small_groups(result, group_sets)
        disparity_rows: list[list[Any]] = []
        for gs in group_sets:
            disparity_rows += self._group_fairness(result, gs, y, pred, k)
        result.table("disparities", "Disparities between groups (max - min and min / max over groups)",
                     ["grouping", "metric", "value", "ci_low", "ci_high", "tolerance", "flagged"], disparity_rows,
                     description=f"{self.params.confidence:.0%} bootstrap intervals from {self.params.n_resamples} "
                                 "resamples drawn within groups")
        if ctx.adversarial:
            for gs in group_sets:
                self._robustness(result, gs, ctx.adversarial, data.n_samples)
        else:
            result.notes.append(NO_ADVERSARIAL)
        if ctx.attributions:
            for gs in group_sets:
                self._explanations(result, gs, ctx)
        else:
            result.notes.append(NO_ATTRIBUTIONS)

    # -- groups --------------------------------------------------------------------------------
    def _group_sets(self, sensitive: dict[str, np.ndarray], seed: int) -> list[GroupSet]:
        names = self.params.features if self.params.features is not None else sorted(sensitive)
        unknown = [n for n in names if n not in sensitive]
        if unknown:
            raise ConfigError(f"sections.{self.section}.params.features",
                              f"{unknown} are not sensitive columns of the data; it has {sorted(sensitive)} "
                              "(list columns under data.sensitive)")
        if not names:
            raise ConfigError(f"sections.{self.section}.params.features", "is empty; name at least one sensitive "
                              f"column, out of {sorted(sensitive)}")
        sets = []
        for name in names:
            codes, groups = encode_groups([sensitive[name]])
            sets.append(GroupSet(sanitize(name), name, {name: sensitive[name]}, codes, groups,
                                 seed + zlib.crc32(name.encode())))
        if self.params.intersections and len(names) > 1:
            codes, groups = encode_groups([sensitive[n] for n in names])
            label = " & ".join(names)
            sets.append(GroupSet("_x_".join(sanitize(n) for n in names), label, {n: sensitive[n] for n in names},
                                 codes, groups, seed + zlib.crc32(label.encode())))
        return sets

    def _small_groups(self, result: SectionResult, group_sets: list[GroupSet]) -> None:
        if self.params.intersections and len(group_sets) == 1:
            result.notes.append("intersections asked for but only one sensitive column is audited")
        for gs in group_sets:
            small = gs.small(self.params.min_group_size)
            if small:
                sizes = ", ".join(f"'{g}' (n={int(gs.counts[gs.groups.index(g)])})" for g in small)
                result.finding("info", f"{gs.label}: groups {sizes} have fewer than {self.params.min_group_size} "
                               "rows; their metrics are reported but noisy (see the intervals)",
                               code="fairness.small_group")

    # -- group metrics and disparities -------------------------------------------------------------
    def _group_fairness(self, result: SectionResult, gs: GroupSet, y: np.ndarray, pred: np.ndarray,
                        k: int) -> list[list[Any]]:
        binary = k == 2
        n_groups = len(gs.groups)
        frame = metric_frame(y, pred, gs.columns, binary)
        by_group = frame.by_group
        metrics = BINARY_METRICS if binary else MULTICLASS_METRICS

        def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
            conf = confusion_counts(gs.codes, y, pred, n_groups, k, index)
            out = {f"group.{m}": v for m, v in metrics_from_counts(conf).items()}
            out.update(disparities({m: out[f"group.{m}"] for m in metrics}))
            if not binary:
                for c in range(k):
                    ovr = one_vs_rest(conf, c)
                    per = {m: ovr[m] for m in OVR_METRICS}
                    out.update({f"class{c}.group.{m}": v for m, v in per.items()})
                    out.update({f"class{c}.{m}": v for m, v in disparities(per).items()})
            return out

        point = statistic(None)
        # reported per-group values come from fairlearn's MetricFrame (the vectorized ones match it)
        for m in metrics:
            point[f"group.{m}"] = np.array([float(by_group.loc[key, m]) for key in gs.keys])
        samples = bootstrap(gs.codes, self.params.n_resamples, gs.seed, statistic) if self.params.n_resamples \
            else None
        est = _estimates(point, samples, self.params.confidence)
        self._record_groups(result, gs, est, metrics, frame)
        self._undefined_notes(result, gs, est)
        rows: list[list[Any]] = []
        headline = est if binary else self._worst_class(result, gs, est, k)
        tolerances = {"demographic_parity_difference": self.params.dp_difference_max,
                      "demographic_parity_ratio": self.params.dp_ratio_min,
                      "equalized_odds_difference": self.params.eo_difference_max,
                      "equalized_odds_ratio": None,
                      "accuracy_difference": self.params.accuracy_difference_max,
                      "accuracy_ratio": None, "balanced_accuracy_difference": None}
        names = [*tolerances, *(f"{m}_{kind}" for m in metrics if m != "count" for kind in ("difference", "ratio"))]
        for name in dict.fromkeys(names):
            if name not in headline:
                continue
            e = headline[name][0]
            self._metric_ci(result, f"{gs.name}.{name}", e)
            tol = tolerances.get(name)
            flagged = tol is not None and not math.isnan(e.value) and (
                e.value < tol if name.endswith("_ratio") else e.value > tol)
            rows.append([gs.label, name, e.value, e.low, e.high, tol, flagged])
            if flagged and tol is not None:
                self._disparity_finding(result, gs, name, e, tol, est, binary)
        return rows

    def _worst_class(self, result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]],
                     k: int) -> dict[str, list[Estimate]]:
        """Multi-class: one-vs-rest per class recorded; the headline disparity is the worst class."""
        out = {n: v for n, v in est.items() if not n.startswith("class")}
        rows = []
        for name in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                     "equalized_odds_ratio"):
            per_class = [est[f"class{c}.{name}"][0] for c in range(k)]
            for c, e in enumerate(per_class):
                result.metric(f"{gs.name}.class={c}.{name}", e.value)
            valid = [(c, e) for c, e in enumerate(per_class) if not math.isnan(e.value)]
            if not valid:
                out[name] = [Estimate(math.nan)]
                continue
            pick = min if name.endswith("_ratio") else max
            c, e = pick(valid, key=lambda item: item[1].value)
            out[name] = [e]
            rows.append([name, str(c), e.value, e.low, e.high])
        result.table(f"worst_class_{gs.name}", f"{gs.label}: one-vs-rest disparities, worst class",
                     ["metric", "class", "value", "ci_low", "ci_high"], rows)
        result.notes.append(f"{gs.label}: multi-class task; demographic parity and equalized odds are computed "
                            "one-vs-rest per class (metrics class=<c>.*), the headline value is the worst class")
        return out

    def _record_groups(self, result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]],
                       metrics: tuple[str, ...], frame: Any) -> None:
        overall = frame.overall
        for m in metrics:
            result.metric(f"overall.{m}", float(overall[m]))
        rows = []
        for j, g in enumerate(gs.groups):
            row: list[Any] = [g, int(gs.counts[j]), bool(gs.counts[j] < self.params.min_group_size)]
            for m in metrics[1:]:
                e = est[f"group.{m}"][j]
                row += [e.value, e.low, e.high]
                result.metric(f"{gs.name}.group={sanitize(g)}.{m}", e.value)
            rows.append(row)
        columns = ["group", "count", "small_group"] + [f"{m}{s}" for m in metrics[1:] for s in ("", "_ci_low",
                                                                                              "_ci_high")]
        result.table(f"groups_{gs.name}", f"Group metrics by {gs.label}", columns, rows,
                     description="null: undefined for that group (e.g. no positives for the true-positive rate)")
        series = []
        for m in (p for p in PLOTTED if p in metrics):
            values = est[f"group.{m}"]
            series.append({"label": m.replace("_", " "), "x": gs.groups, "y": [e.value for e in values],
                           "yerr_low": [_distance(e.value, e.low) for e in values],
                           "yerr_high": [_distance(e.high, e.value) for e in values]})
        result.figure({"name": f"groups_{gs.name}", "title": f"Group metrics by {gs.label} "
                       f"({self.params.confidence:.0%} bootstrap intervals)", "kind": "bar", "xlabel": gs.label,
                       "ylabel": "rate", "series": series})

    def _undefined_notes(self, result: SectionResult, gs: GroupSet, est: dict[str, list[Estimate]]) -> None:
        for m, why in UNDEFINED_WHY.items():
            if f"group.{m}" not in est:
                continue
            missing = [g for g, e in zip(gs.groups, est[f"group.{m}"], strict=True) if math.isnan(e.value)]
            if missing:
                result.notes.append(f"{gs.label}: {m.replace('_', ' ')} undefined (null) for {missing}: the group "
                                    f"{why}; it is left out of the {m} disparities instead of counting as 0")

    def _disparity_finding(self, result: SectionResult, gs: GroupSet, name: str, e: Estimate, tol: float,
                           est: dict[str, list[Estimate]], binary: bool) -> None:
        is_ratio = name.endswith("_ratio")
        whole = (e.high < tol) if is_ratio else (e.low > tol)
        base = {"demographic_parity_difference": "selection_rate", "demographic_parity_ratio": "selection_rate",
                "accuracy_difference": "accuracy"}.get(name)
        detail = ""
        small = False
        if (base is not None and binary) or name == "accuracy_difference":
            (lo_g, lo_v), (hi_g, hi_v) = _lowest_highest(gs.groups, est[f"group.{base}"])
            detail = f"; {str(base).replace('_', ' ')}: '{lo_g}' {lo_v:.3f} vs '{hi_g}' {hi_v:.3f}"
            small = any(gs.counts[gs.groups.index(g)] < self.params.min_group_size for g in (lo_g, hi_g))
        elif name.startswith("equalized_odds") and binary:
            parts = []
            for m in ("true_positive_rate", "false_positive_rate"):
                (lo_g, lo_v), (hi_g, hi_v) = _lowest_highest(gs.groups, est[f"group.{m}"])
                parts.append(f"{m.replace('_', ' ')} '{lo_g}' {lo_v:.3f} vs '{hi_g}' {hi_v:.3f}")
            detail = "; " + ", ".join(parts)
        severity: Severity = "high" if whole else "medium"
        if small:
            severity = "low"
        rule = "four-fifths rule" if name == "demographic_parity_ratio" else "tolerance"
        side = "below" if is_ratio else "above"
        certainty = ("the whole interval is " + side) if whole else "the interval also holds values within tolerance"
        result.finding(severity, f"{gs.label}: {name.replace('_', ' ')} {e.value:.3f} "
                       f"({e.ci_text(self.params.confidence)}) is {side} the {rule} ({tol:g}); {certainty}"
                       f"{detail}{' (small group: treat with care)' if small else ''}",
                       code=f"fairness.{name}", metric=f"{self.section}.{gs.name}.{name}", value=e.value)

    def _metric_ci(self, result: SectionResult, name: str, e: Estimate) -> None:
        result.metric(name, e.value)
        if self.params.n_resamples:
            result.metric(f"{name}.ci_low", e.low)
            result.metric(f"{name}.ci_high", e.high)

    # -- robustness disparity ----------------------------------------------------------------------
    def _robustness(self, result: SectionResult, gs: GroupSet, adversarial: dict[str, AdversarialOutcome],
                    n: int) -> None:
        n_groups = len(gs.groups)
        worst: tuple[float, str, Estimate] | None = None
        rows: list[list[Any]] = []
        series = []
        for key, outcome in adversarial.items():
            rows_index = getattr(outcome, "index", None)  # rows of the data attacked, if a subset
            codes = gs.codes if rows_index is None else gs.codes[np.asarray(rows_index, np.int64)]
            if len(outcome.robust_correct) != len(codes) or len(outcome.clean_correct) != len(codes):
                result.notes.append(f"robustness disparity for {key} skipped: the outcome covers "
                                    f"{len(outcome.robust_correct)} rows but the data has {n}")
                continue
            clean = np.asarray(outcome.clean_correct, bool)
            robust = np.asarray(outcome.robust_correct, bool) & clean
            min_eps = None if outcome.min_eps is None else np.asarray(outcome.min_eps, np.float64)

            def statistic(index: np.ndarray | None, clean: np.ndarray = clean, robust: np.ndarray = robust,
                          min_eps: np.ndarray | None = min_eps, codes: np.ndarray = codes) -> dict[str, np.ndarray]:
                per = {"clean_accuracy": group_means(codes, clean, n_groups, index),
                       "robust_accuracy": group_means(codes, robust, n_groups, index),
                       "attack_success_rate": group_means(codes, ~robust, n_groups, index, mask=clean)}
                if min_eps is not None:
                    broken = clean & np.isfinite(min_eps)
                    per["mean_min_eps"] = group_means(codes, np.where(broken, min_eps, 0.0), n_groups, index,
                                                      mask=broken)
                out = {f"group.{m}": v for m, v in per.items()}
                out.update({f"{m}_difference": difference(v) for m, v in per.items()})
                return out

            point = statistic(None)
            samples = bootstrap(codes, self.params.n_resamples, gs.seed, statistic) if self.params.n_resamples \
                else None
            est = _estimates(point, samples, self.params.confidence)
            prefix = f"{gs.name}.norm={sanitize(outcome.norm)}.eps={outcome.eps:g}"
            for m in ("robust_accuracy", "attack_success_rate", "mean_min_eps"):
                if f"{m}_difference" not in est:
                    continue
                self._metric_ci(result, f"{prefix}.{m}_difference", est[f"{m}_difference"][0])
                for j, g in enumerate(gs.groups):
                    result.metric(f"{prefix}.group={sanitize(g)}.{m}", est[f"group.{m}"][j].value)
            attacked = np.bincount(codes, minlength=n_groups)
            for j, g in enumerate(gs.groups):
                row: list[Any] = [key, g, int(attacked[j])]
                for m in ("clean_accuracy", "robust_accuracy", "attack_success_rate", "mean_min_eps"):
                    e = est[f"group.{m}"][j] if f"group.{m}" in est else Estimate(math.nan)
                    row += [e.value, e.low, e.high]
                rows.append(row)
            ra = est["group.robust_accuracy"]
            series.append({"label": key, "x": gs.groups, "y": [e.value for e in ra],
                           "yerr_low": [_distance(e.value, e.low) for e in ra],
                           "yerr_high": [_distance(e.high, e.value) for e in ra]})
            diff = est["robust_accuracy_difference"][0]
            if not math.isnan(diff.value) and (worst is None or diff.value > worst[0]):
                worst = (diff.value, key, diff)
            self._robust_findings(result, gs, key, est, prefix, attacked)
            if min_eps is not None:
                never = int((clean & ~np.isfinite(min_eps)).sum())
                if never:
                    result.notes.append(f"{gs.label} / {key}: mean minimal eps is over the {int(clean.sum()) - never}"
                                        f" clean-correct rows an adversarial example was found for; {never} were "
                                        "never broken")
        if not rows:
            return
        columns = ["attack", "group", "count"] + [f"{m}{s}" for m in ("clean_accuracy", "robust_accuracy",
                                                                      "attack_success_rate", "mean_min_eps")
                                                  for s in ("", "_ci_low", "_ci_high")]
        result.table(f"robustness_{gs.name}", f"Robustness by {gs.label} (from the robustness section's attacks)",
                     columns, rows, description="attack success rate: share of clean-correct rows the attack broke")
        result.figure({"name": f"robust_accuracy_{gs.name}", "title": f"Robust accuracy by {gs.label}",
                       "kind": "bar", "xlabel": gs.label, "ylabel": "robust accuracy", "series": series})
        if worst is not None:
            result.notes.append(f"{gs.label}: robust_accuracy_difference is the worst over the attacks ({worst[1]})")
            self._metric_ci(result, f"{gs.name}.robust_accuracy_difference", worst[2])

    def _robust_findings(self, result: SectionResult, gs: GroupSet, key: str, est: dict[str, list[Estimate]],
                         prefix: str, attacked: np.ndarray) -> None:
        for m, tol in (("robust_accuracy", self.params.robust_accuracy_difference_max),
                       ("attack_success_rate", self.params.attack_success_difference_max)):
            e = est[f"{m}_difference"][0]
            if math.isnan(e.value) or e.value <= tol:
                continue
            (lo_g, lo_v), (hi_g, hi_v) = _lowest_highest(gs.groups, est[f"group.{m}"])
            easier = hi_g if m == "attack_success_rate" else lo_g
            small = any(attacked[gs.groups.index(g)] < self.params.min_group_size for g in (lo_g, hi_g))
            severity: Severity = "low" if small else ("high" if e.low > tol else "medium")
            result.finding(severity, f"{gs.label} under {key}: {m.replace('_', ' ')} differs by {e.value:.3f} "
                           f"({e.ci_text(self.params.confidence)}) across groups, above the tolerance {tol:g}: "
                           f"'{lo_g}' {lo_v:.3f} vs '{hi_g}' {hi_v:.3f}; group '{easier}' is easier to attack",
                           code=f"fairness.{m}_difference", metric=f"{self.section}.{prefix}.{m}_difference",
                           value=e.value)

    # -- explanation disparity ---------------------------------------------------------------------
    def _explanations(self, result: SectionResult, gs: GroupSet, ctx: AuditContext) -> None:
        data = ctx.data
        for method, aset in ctx.attributions.items():
            index = np.asarray(aset.index, np.int64)
            values = np.abs(np.asarray(aset.values, np.float64).reshape(len(index), -1))
            if len(index) == 0 or index.max() >= data.n_samples or index.min() < 0:
                result.notes.append(f"explanation disparity for '{method}' skipped: its row index does not fit the "
                                    f"{data.n_samples} rows of the data")
                continue
            names = _feature_names(data.feature_names, data.input_shape, values.shape[1])
            codes = gs.codes[index]
            present = np.unique(codes)
            n_groups = len(gs.groups)
            counts = np.bincount(codes, minlength=n_groups)
            sums = np.zeros((n_groups, values.shape[1]))
            np.add.at(sums, codes, values)
            mean_abs = sums[present] / counts[present, None]
            totals = mean_abs.sum(axis=1, keepdims=True)
            share = np.divide(mean_abs, totals, out=np.zeros_like(mean_abs), where=totals > 0)
            groups = [gs.groups[g] for g in present]
            prefix = f"{gs.name}.explanation.{sanitize(method)}"
            if len(present) < 2:
                result.notes.append(f"explanation disparity for '{method}' by {gs.label}: the explained rows hold "
                                    f"one group only ({groups}); explain more rows")
                continue
            gap = share.max(axis=0) - share.min(axis=0)
            order = np.argsort(-gap, kind="stable")[: self.params.explanation_top_k]
            result.metric(f"{prefix}.max_importance_gap", float(gap[order[0]]))
            result.metric(f"{prefix}.rows_explained", len(index))
            rows = [[names[f], *[float(share[i, f]) for i in range(len(groups))],
                     *[float(mean_abs[i, f]) for i in range(len(groups))], float(gap[f])] for f in order]
            result.table(f"explanation_{sanitize(method)}_{gs.name}",
                         f"{method}: features whose importance differs most between {gs.label} groups",
                         ["feature", *[f"share[{g}]" for g in groups], *[f"mean_abs[{g}]" for g in groups], "gap"],
                         rows, description="share: a feature's share of the group's total mean |attribution|; "
                                           "gap: max - min share over groups")
            result.figure({"name": f"explanation_{sanitize(method)}_{gs.name}",
                           "title": f"{method}: importance share by {gs.label} (top {len(order)} gaps)",
                           "kind": "bar", "xlabel": "feature", "ylabel": "share of mean |attribution|",
                           "series": [{"label": g, "x": [names[f] for f in order],
                                       "y": [float(share[i, f]) for f in order]} for i, g in enumerate(groups)]})
            small = [g for g in groups if counts[gs.groups.index(g)] < self.params.min_group_size]
            if small:
                result.notes.append(f"explanation disparity for '{method}' by {gs.label}: groups {small} have fewer "
                                    f"than {self.params.min_group_size} explained rows")
            top = int(order[0])
            if gap[top] > self.params.explanation_gap_max:
                hi, lo = int(np.argmax(share[:, top])), int(np.argmin(share[:, top]))
                result.finding("low" if small else "medium",
                               f"{method} by {gs.label}: feature '{names[top]}' carries {share[hi, top]:.1%} of the "
                               f"attribution for '{groups[hi]}' but {share[lo, top]:.1%} for '{groups[lo]}' (gap "
                               f"{gap[top]:.3f} > {self.params.explanation_gap_max:g}): the model relies on different "
                               "features for different groups", code="fairness.explanation_gap",
                               metric=f"{self.section}.{prefix}.max_importance_gap", value=float(gap[top]))


def _lowest_highest(groups: list[str], values: list[Estimate]) -> tuple[tuple[str, float], tuple[str, float]]:
    """(group, value) of the lowest and the highest defined value (NaN if none is defined)."""
    defined = [(g, e.value) for g, e in zip(groups, values, strict=True) if not math.isnan(e.value)]
    if not defined:
        return ("none", math.nan), ("none", math.nan)
    return min(defined, key=lambda t: t[1]), max(defined, key=lambda t: t[1])


def _distance(a: float, b: float) -> float | None:
    """A non-negative error-bar length, or None when either end is undefined."""
    if math.isnan(a) or math.isnan(b):
        return None
    return max(0.0, a - b)


def _feature_names(names: list[str] | None, shape: tuple[int, ...], width: int) -> list[str]:
    if names is not None and len(names) == width:
        return list(names)
    if len(shape) > 1 and int(np.prod(shape)) == width:
        return ["[" + ",".join(str(int(i)) for i in np.unravel_index(f, shape)) + "]" for f in range(width)]
    return [f"x{f}" for f in range(width)]

