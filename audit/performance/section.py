"""The ``performance`` and ``imbalance`` sections: what they record from ``audit.performance.metrics`` (scikit-learn
metrics on the clean predictions), and the findings they draw from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from audit.keys import metric_key
from audit.performance.metrics import (
    Calibration,
    Distribution,
    PerClass,
    Performance,
    Scores,
    balanced_and_chance,
    balanced_weights,
    calibration,
    distribution,
    per_class,
    per_sample_loss,
    performance,
    scores,
)
from audit.performance.tasks import DIRECTIONS as TASK_DIRECTIONS
from audit.performance.tasks import record_multilabel, record_regression
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AuditContext


class PerformanceParams(Params):
    top_k: int = Field(1, ge=1, description="also report top-k accuracy when k > 1")


class PerformanceSection(SectionPlugin):
    """Accuracy, cross-entropy loss and the confusion matrix on the audited data; regression and multi-label
    models get their own metrics (``audit.performance.tasks``)."""

    name = "performance"
    title = "Performance"
    ParamsModel = PerformanceParams
    params: PerformanceParams
    input_kinds = ("continuous", "tokens")  # predictions only: text models too
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")
    metric_directions: ClassVar[dict[str, Direction]] = {
        "accuracy": "higher", "top*_accuracy": "higher", "error_rate": "lower", "loss": "lower",
        "n_samples": None, "majority_baseline_accuracy": None, **TASK_DIRECTIONS,
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        if ctx.data.task == "regression":
            return record_regression(result, ctx, self.section)
        if ctx.data.task == "multilabel":
            return record_multilabel(result, ctx, self.section)
        y, pred, proba = ctx.data.y, ctx.clean_predictions(), ctx.clean_probabilities()
        perf = performance(y, pred, proba, top_k=self.params.top_k)
        result.metric("accuracy", perf.accuracy)
        result.metric("error_rate", 1.0 - perf.accuracy)
        result.metric("loss", perf.loss)
        result.metric("n_samples", perf.n_samples)
        if perf.topk_hit is not None:
            result.metric(f"top{perf.top_k}_accuracy", float(perf.topk_hit.mean()))
        self._save_outcomes(ctx, result, y, pred, proba, perf.topk_hit)
        names, k = ctx.data.class_names, ctx.data.num_classes
        matrix = perf.confusion
        result.table("confusion_matrix", "Confusion matrix (rows: true class, columns: predicted)",
                     ["true \\ predicted", *names], [[names[i], *map(int, matrix[i])] for i in range(k)])
        result.figure({"name": "confusion_matrix", "title": "Confusion matrix", "kind": "heatmap",
                       "matrix": matrix.tolist(), "x_labels": names, "y_labels": names,
                       "xlabel": "predicted", "ylabel": "true"})
        result.metric("majority_baseline_accuracy", perf.majority_baseline)
        if perf.accuracy <= perf.majority_baseline + 0.01:
            self._below_majority(result, perf, *balanced_and_chance(y, pred))

    def _below_majority(self, result: SectionResult, perf: Performance, balanced: float, chance: float) -> None:
        accuracy, majority = perf.accuracy, perf.majority_baseline
        if balanced >= chance + 0.05:  # trades majority-class accuracy for minority recall
            result.finding("low", f"accuracy {accuracy:.3f} is below always predicting the majority class "
                           f"({majority:.3f}), but balanced accuracy is {balanced:.3f} (chance {chance:.2f}): the "
                           "model trades majority-class accuracy for minority recall (class weights or a "
                           "threshold); judge it by balanced accuracy and per-class recall",
                           code="performance.below_majority_baseline", metric=metric_key(self.section, "accuracy"),
                           value=accuracy)
        else:
            result.finding("high", f"accuracy {accuracy:.3f} does not beat always predicting the majority class "
                           f"({majority:.3f}) and balanced accuracy is {balanced:.3f} (chance {chance:.2f}): "
                           "the model has learned little", code="performance.no_better_than_majority",
                           metric=metric_key(self.section, "accuracy"), value=accuracy)

    def _save_outcomes(self, ctx: AuditContext, result: SectionResult, y: np.ndarray, pred: np.ndarray,
                       proba: np.ndarray, topk_hit: np.ndarray | None) -> None:
        """Correct or not, and the cross-entropy, per sample (``audit.outcomes``): what ``nnaudit compare`` pairs;
        with the clean inputs, probabilities and sensitive columns the dashboard's sample explorer shows."""
        from audit.outcomes import EXTRA_GROUP, EXTRA_INPUTS, EXTRA_LABEL, EXTRA_PROBA, save_outcomes

        correct = (pred == y).astype(np.float64)
        values = {"accuracy": correct, "error_rate": 1.0 - correct, "loss": per_sample_loss(y, proba)}
        meta: dict[str, dict[str, Any]] = {"accuracy": {"kind": "correct"}, "error_rate": {"kind": "wrong"},
                                           "loss": {"kind": "cross_entropy"}}
        if topk_hit is not None:
            values[f"top{self.params.top_k}_accuracy"] = topk_hit.astype(np.float64)
            meta[f"top{self.params.top_k}_accuracy"] = {"kind": "correct", "top_k": self.params.top_k}
        groups = {f"{EXTRA_GROUP}{name}": np.asarray(column).astype(str) for name, column in ctx.data.sensitive.items()}
        save_outcomes(ctx, result, sample_id=np.arange(len(y)), values=values, meta=meta,
                      extra={EXTRA_LABEL: y, "prediction": pred, "confidence": proba.max(axis=1),
                             EXTRA_PROBA: proba.astype(np.float32), EXTRA_INPUTS: ctx.data.x, **groups})


class ImbalanceParams(Params):
    n_bins: int = Field(10, ge=2, le=100, description="calibration bins")
    ratio_warn: float = Field(3.0, gt=1, description="imbalance ratio above which to warn")
    ratio_high: float = Field(10.0, gt=1, description="imbalance ratio rated high severity")
    ece_warn: float = Field(0.05, gt=0, description="expected calibration error above which to warn")
    recall_gap_warn: float = Field(0.2, gt=0, description="gap between best and worst per-class recall to warn")


class ImbalanceSection(SectionPlugin):
    """Class distribution, per-class and imbalance-aware metrics, calibration."""

    name = "imbalance"
    title = "Class imbalance and calibration"
    ParamsModel = ImbalanceParams
    params: ImbalanceParams
    input_kinds = ("continuous", "tokens")  # predictions only: text models too
    metric_directions: ClassVar[dict[str, Direction]] = {
        "balanced_accuracy": "higher", "macro_f1": "higher", "weighted_f1": "higher", "mcc": "higher",
        "roc_auc_ovr": "higher", "pr_auc": "higher", "class=*.recall": "higher", "class=*.precision": "higher",
        "ece": "lower", "recall_gap": "lower",
        "imbalance_ratio": None, "minority_fraction": None, "positive_rate": None,  # properties of the data
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        y, pred, proba = ctx.data.y, ctx.clean_predictions(), ctx.clean_probabilities()
        names, k = ctx.data.class_names, ctx.data.num_classes
        self._distribution(result, names, distribution(y, k))
        self._per_class(result, names, per_class(y, pred, k))
        self._scores(result, scores(y, pred, proba))
        self._save_outcomes(ctx, result, y, pred)
        self._calibration(result, calibration(proba, y, self.params.n_bins))

    def _distribution(self, result: SectionResult, names: list[str], dist: Distribution) -> None:
        counts = dist.counts
        total = counts.sum()
        result.table("class_distribution", "Class distribution", ["class", "count", "fraction"],
                     [[n, int(c), float(c / total)] for n, c in zip(names, counts, strict=True)])
        result.figure({"name": "class_distribution", "title": "Class distribution", "kind": "bar",
                       "xlabel": "class", "ylabel": "samples",
                       "series": [{"label": "samples", "x": names, "y": counts.tolist()}]})
        ratio = dist.imbalance_ratio
        result.metric("imbalance_ratio", ratio)
        result.metric("minority_fraction", dist.minority_fraction)
        if dist.missing:
            result.finding("medium", f"classes {[names[i] for i in dist.missing]} have no samples in the audited "
                           "data; their metrics are undefined", code="imbalance.missing_classes")
        if ratio >= self.params.ratio_warn:
            severity: Severity = "high" if ratio >= self.params.ratio_high else "medium"
            result.finding(severity, f"imbalance ratio {ratio:.1f} (largest class / smallest class): accuracy "
                           "overstates quality; read balanced accuracy, per-class recall and PR AUC",
                           code="imbalance.ratio", metric=metric_key(self.section, "imbalance_ratio"), value=ratio)

    def _per_class(self, result: SectionResult, names: list[str], pc: PerClass) -> None:
        labels = range(len(names))
        result.table("per_class", "Per-class metrics", ["class", "precision", "recall", "f1", "support", "predicted"],
                     [[names[i], float(pc.precision[i]), float(pc.recall[i]), float(pc.f1[i]), int(pc.support[i]),
                       int(pc.predicted[i])] for i in labels])
        result.figure({"name": "per_class_recall", "title": "Recall and precision per class", "kind": "bar",
                       "xlabel": "class", "ylabel": "score", "ylim": [0.0, 1.0],
                       "series": [{"label": "recall", "x": names, "y": pc.recall.tolist()},
                                  {"label": "precision", "x": names, "y": pc.precision.tolist()}]})
        for i in labels:
            label = ("class", _safe(names[i]))
            result.metric(metric_key(label, "recall"), pc.recall[i] if pc.support[i] else None)
            result.metric(metric_key(label, "precision"), pc.precision[i] if pc.predicted[i] else None)
        result.metric("macro_f1", pc.macro_f1)
        result.metric("weighted_f1", pc.weighted_f1)
        result.metric("recall_gap", pc.recall_gap)
        if pc.never_predicted:
            result.finding("high", f"the model never predicts {[names[i] for i in pc.never_predicted]}, which have "
                           f"{int(pc.support[pc.never_predicted].sum())} samples", code="imbalance.never_predicted")
        if pc.recall_gap >= self.params.recall_gap_warn:
            worst = names[pc.worst]
            result.finding("medium", f"recall differs by {pc.recall_gap:.2f} across classes; worst is '{worst}' "
                           f"({pc.recall[pc.worst]:.2f})", code="imbalance.recall_gap",
                           metric=metric_key(self.section, "recall_gap"), value=pc.recall_gap)

    def _scores(self, result: SectionResult, sc: Scores) -> None:
        result.metric("balanced_accuracy", sc.balanced_accuracy)
        result.metric("mcc", sc.mcc)
        if sc.single_class:
            result.notes.append("ROC AUC and PR AUC are undefined with a single class present")
        result.metric("roc_auc_ovr", sc.roc_auc_ovr)
        result.metric("pr_auc", sc.pr_auc)
        if sc.positive_rate is not None:
            result.metric("positive_rate", sc.positive_rate)

    def _save_outcomes(self, ctx: AuditContext, result: SectionResult, y: np.ndarray, pred: np.ndarray) -> None:
        """Balanced accuracy as a mean over samples (``audit.outcomes``), for ``nnaudit compare``: each sample's
        correct-or-not weighted by N / (classes present x its class's count), so the mean is the mean recall."""
        from audit.outcomes import save_outcomes

        save_outcomes(ctx, result, sample_id=np.arange(len(y)),
                      values={"balanced_accuracy": (pred == y).astype(np.float64) * balanced_weights(y)},
                      meta={"balanced_accuracy": {"kind": "correct_class_weighted"}})

    def _calibration(self, result: SectionResult, cal: Calibration) -> None:
        ece, rows = cal.ece, cal.rows
        result.metric("ece", ece)
        result.table("reliability", "Reliability (top-label confidence vs. accuracy)",
                     ["bin_low", "bin_high", "count", "mean_confidence", "accuracy"], rows)
        filled = [r for r in rows if r[2] > 0]
        result.figure({"name": "reliability", "title": f"Reliability diagram (ECE {ece:.3f})", "kind": "line",
                       "xlabel": "confidence", "ylabel": "accuracy", "diagonal": True,
                       "series": [{"label": "model", "x": [r[3] for r in filled], "y": [r[4] for r in filled],
                                   "style": "o-"}]})
        if ece >= self.params.ece_warn:
            result.finding("low" if ece < 3 * self.params.ece_warn else "medium",
                           f"expected calibration error {ece:.3f}: confidences do not match accuracy",
                           code="imbalance.calibration", metric=metric_key(self.section, "ece"), value=ece)


def _safe(name: str) -> str:
    """A class name as a metric-name segment: letters, digits and _ only."""
    out = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return out or "class"
