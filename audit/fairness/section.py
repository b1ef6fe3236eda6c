"""The ``fairness`` section: does the model work equally well for every group?

For each sensitive column (and, with ``intersections: true``, their intersection):

- group metrics and disparities (``audit.fairness.parity``): fairlearn's ``MetricFrame`` values,
  every rate with respect to the favourable label (``positive_label``), seeded stratified
  bootstrap intervals (``audit.bootstrap``, ``audit.fairness.estimates``), findings judged by interval and by the
  rows behind each rate (``audit.fairness.judge``);
- robustness disparity (``audit.fairness.robustness``) from ``ctx.adversarial``, which the
  robustness section wrote: no second attack pass;
- explanation disparity (``audit.fairness.explanations``) from ``ctx.attributions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from audit.errors import ConfigError, DataError
from audit.fairness.explanations import record_explanations
from audit.fairness.groups import GroupSet, build_group_sets
from audit.fairness.params import FairnessParams
from audit.fairness.parity import record_parity
from audit.fairness.robustness import record_robustness
from audit.fairness.tasks import record_task_fairness
from audit.fairness.text import record_text
from audit.plugin import SectionPlugin
from audit.results import Direction, SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.data import AuditData

NO_SENSITIVE = ("the data has no sensitive columns: name them in the config (data.sensitive: [gender, ethnicity] "
                "for a CSV/Parquet file, or a built-in dataset that has them) to audit fairness")
NO_ADVERSARIAL = ("robustness disparity skipped: no adversarial outcomes in this audit (ctx.adversarial is empty); "
                  "add a robustness section before fairness in the config's sections")
NO_ATTRIBUTIONS = ("explanation disparity skipped: no attributions in this audit (ctx.attributions is empty); "
                   "add an explanations section before fairness in the config's sections")


@dataclass(frozen=True)
class Favourable:
    """The favourable outcome the rates refer to (None for a multi-class task without one)."""

    index: int | None
    name: str | None
    source: str


class FairnessSection(SectionPlugin):
    """Group fairness (fairlearn) with bootstrap intervals, plus robustness and explanation disparity."""

    name = "fairness"
    title = "Fairness across groups"
    ParamsModel = FairnessParams
    params: FairnessParams
    reads_sections = ("robustness", "explanations")
    input_kinds = ("continuous", "tokens")  # group metrics need predictions only: text models too
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")  # others: fairness/tasks.py
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.ci_low": None, "*.ci_high": None, "*.enough_rows": None, "*.group=*": None,  # bounds, flags, groups
        "*_difference": "lower", "*_ratio": "higher",  # gaps between groups; min / max rate
        "*.max_importance_gap": "lower",
        "*.subgroup_auc": "higher", "*.bpsn_auc": "higher", "*.bnsp_auc": "higher", "overall.auc": "higher",  # text
        "counterfactual.flip_rate": "lower", "counterfactual.mean_abs_score_change": "lower",
        "overall.accuracy": "higher", "overall.balanced_accuracy": "higher",
        "*.worst_group_subset_accuracy": "higher", "overall.subset_accuracy": "higher",
        "*.worst_group_*": "lower", "overall.mae": "lower", "overall.rmse": "lower", "overall.hamming_loss": "lower",
        "*": None,  # overall rates, counts
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        data = ctx.data
        if data.input_kind == "tokens":
            audited = record_text(result, ctx, self.params, self._favourable(data).index, self.section)
            if not data.sensitive:
                result.status = "ok" if audited else "skipped"
                return
        if not data.sensitive:
            result.status = "skipped"
            result.notes.append(NO_SENSITIVE)
            return
        if data.task != "classification":  # errors or label metrics per group (audit.fairness.tasks)
            record_task_fairness(result, ctx, self._group_sets(result, data, ctx.seed), params=self.params,
                                 section=self.section)
            return
        favourable = self._favourable(data)
        group_sets = self._group_sets(result, data, ctx.seed)
        self._describe(result, favourable, data)
        rows: list[list[Any]] = []
        for gs in ctx.progress(group_sets, desc="fairness: group metrics", total=len(group_sets)):
            rows += record_parity(result, ctx, gs, positive=favourable.index, params=self.params,
                                  section=self.section)
        result.table("disparities", "Disparities between groups (max - min and min / max over groups)",
                     ["grouping", "metric", "value", "ci_low", "ci_high", "enough_rows", "tolerance", "flagged"],
                     rows, description=f"{self.params.confidence:.0%} bootstrap intervals from "
                                       f"{self.params.n_resamples} resamples drawn within groups; enough_rows: the "
                                       f"disparity over the groups with at least {self.params.min_rate_count} rows "
                                       "for each rate")
        if ctx.adversarial:
            for gs in group_sets:
                record_robustness(result, ctx, gs, params=self.params, section=self.section)
        else:
            result.notes.append(NO_ADVERSARIAL)
        if ctx.attributions and data.input_kind == "tokens":
            result.notes.append("explanation disparity is not computed on text (attributions by token position)")
        elif ctx.attributions:
            for gs in group_sets:
                record_explanations(result, ctx, gs, params=self.params, section=self.section)
        else:
            result.notes.append(NO_ATTRIBUTIONS)
        _small_multiples(result, "groups_", "groups", f"Group metrics by grouping ({self.params.confidence:.0%} "
                         "bootstrap intervals)")
        _small_multiples(result, "robust_accuracy_", "robust_accuracy", "Robust accuracy by grouping")

    # -- helpers -----------------------------------------------------------------------------------
    def _favourable(self, data: AuditData) -> Favourable:
        key = f"sections.{self.section}.positive_label"
        classes, value = list(data.class_names), self.params.positive_label
        k = len(classes)
        if isinstance(value, str):
            if value not in classes:
                raise ConfigError(key, f"'{value}' is not a class of the data; its classes are {classes}: give the "
                                  f"favourable class's name or its index 0..{k - 1}")
            return Favourable(classes.index(value), value, f"set by {key}")
        if isinstance(value, int):
            if not 0 <= value < k:
                raise ConfigError(key, f"{value} is not a class index of the data; its classes are {classes} "
                                  f"(indices 0..{k - 1}); give the favourable class's name or index")
            return Favourable(value, classes[value], f"set by {key}")
        if data.positive_class is not None:
            return Favourable(data.positive_class, classes[data.positive_class], f"the default of {data.name}")
        if k == 2:
            return Favourable(1, classes[1], f"taken by default: the data names no favourable label (set {key})")
        return Favourable(None, None, "none: a multi-class task is audited one-vs-rest for every class")

    def _group_sets(self, result: SectionResult, data: AuditData, seed: int) -> list[GroupSet]:
        sensitive = data.sensitive
        names = self.params.features if self.params.features is not None else sorted(sensitive)
        key = f"sections.{self.section}.features"
        unknown = [n for n in names if n not in sensitive]
        if unknown:
            raise ConfigError(key, f"{unknown} are not sensitive columns of the data; it has {sorted(sensitive)} "
                              "(list columns under data.sensitive)")
        if not names:
            raise ConfigError(key, f"is empty; name at least one sensitive column, out of {sorted(sensitive)}")
        if self.params.intersections and len(names) == 1:
            result.notes.append("intersections asked for but only one sensitive column is audited")
        sets = build_group_sets(sensitive, names, intersections=self.params.intersections, seed=seed)
        single = [gs for gs in sets if len(gs.groups) < 2]
        if len(single) == len(sets):
            listed = ", ".join(f"'{gs.label}' (all '{gs.groups[0]}')" for gs in single)
            raise DataError(f"every sensitive column audited holds one group only in the {data.n_samples} rows: "
                            f"{listed}; no disparity can be computed. Audit rows from more than one group (check "
                            "data.sensitive, data.split and data.limit)")
        for gs in single:
            result.finding("low", f"{gs.label}: every one of the {data.n_samples} rows is in group '{gs.groups[0]}', "
                           "so no disparity can be computed for it; it is left out (check data.split and data.limit)",
                           code="fairness.single_group")
        return [gs for gs in sets if len(gs.groups) >= 2]

    def _describe(self, result: SectionResult, favourable: Favourable, data: AuditData) -> None:
        p = self.params
        if favourable.index is None:
            rows: list[list[Any]] = [["favourable outcome (positive_label)", favourable.source]]
            result.notes.append("multi-class task without a favourable label: selection rate, true- and false-"
                                "positive rates are one-vs-rest per class (set positive_label to audit one class "
                                "as the favourable outcome)")
        else:
            label = f"'{favourable.name}' (class {favourable.index})"
            rows = [["favourable outcome (positive_label)", label], ["source", favourable.source],
                    ["selection rate", f"share of rows predicted {label}"],
                    ["true positive rate", f"share of {label} rows predicted {label}"],
                    ["false positive rate", f"share of the other rows predicted {label}"]]
            result.notes.append(f"favourable outcome: {label}, {favourable.source}; selection rate, the "
                                "four-fifths rule and the true- and false-positive rates refer to it")
        rows += [["min_rate_count", str(p.min_rate_count)],
                 ["bootstrap", f"{p.n_resamples} resamples within groups, {p.confidence:.0%} bias-corrected "
                               "percentile intervals" if p.n_resamples else "off (n_resamples: 0)"]]
        result.table("setup", "What the fairness metrics refer to", ["setting", "value"], rows)


def _small_multiples(result: SectionResult, prefix: str, name: str, title: str) -> None:
    """Fold the per-grouping figures named ``prefix*`` into one small-multiples figure, one panel per grouping."""
    picked = [f for f in result.figures if f["name"].startswith(prefix) and f["kind"] in ("bar", "line")]
    if len(picked) < 2:
        return
    at = result.figures.index(picked[0])
    panels = [{**{k: v for k, v in f.items() if k != "name"}, "title": f"by {f.get('xlabel') or f['name']}"}
              for f in picked]
    kept = [f for f in result.figures if f not in picked]
    result.figures = kept[:at]
    result.figure({"name": name, "title": title, "kind": "small_multiples", "columns": len(panels), "panels": panels})
    result.figures += kept[at:]
