"""Built-in sections: ``performance`` and ``imbalance`` (scikit-learn metrics on the clean predictions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AuditContext


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, list[list[float]]]:
    """Top-label ECE with equal-width confidence bins. Returns (ece, rows of
    [bin_low, bin_high, count, mean_confidence, accuracy])."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; confidence 0 goes to bin 0
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    ece = float(np.abs(acc_sum - conf_sum).sum() / len(y))
    rows = []
    for i in range(n_bins):
        n = counts[i]
        rows.append([float(edges[i]), float(edges[i + 1]), int(n),
                     float(conf_sum[i] / n) if n else float("nan"), float(acc_sum[i] / n) if n else float("nan")])
    return ece, rows


class PerformanceParams(Params):
    top_k: int = Field(1, ge=1, description="also report top-k accuracy when k > 1")


class PerformanceSection(SectionPlugin):
    """Accuracy, cross-entropy loss and the confusion matrix on the audited data."""

    name = "performance"
    title = "Performance"
    ParamsModel = PerformanceParams
    params: PerformanceParams
    metric_directions: ClassVar[dict[str, Direction]] = {
        "accuracy": "higher", "top*_accuracy": "higher", "error_rate": "lower", "loss": "lower",
        "n_samples": None, "majority_baseline_accuracy": None,
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, log_loss

        y, pred, proba = ctx.data.y, ctx.clean_predictions(), ctx.clean_probabilities()
        k = ctx.data.num_classes
        labels = list(range(k))
        accuracy = accuracy_score(y, pred)
        result.metric("accuracy", accuracy)
        result.metric("error_rate", 1.0 - accuracy)
        result.metric("loss", log_loss(y, proba, labels=labels))
        result.metric("n_samples", len(y))
        topk_hit = None
        if self.params.top_k > 1:
            top = np.argsort(-proba, axis=1)[:, : self.params.top_k]
            topk_hit = (top == y[:, None]).any(axis=1)
            result.metric(f"top{self.params.top_k}_accuracy", float(topk_hit.mean()))
        self._save_outcomes(ctx, result, y, pred, proba, topk_hit)
        matrix = confusion_matrix(y, pred, labels=labels)
        names = ctx.data.class_names
        result.table("confusion_matrix", "Confusion matrix (rows: true class, columns: predicted)",
                     ["true \\ predicted", *names], [[names[i], *map(int, matrix[i])] for i in range(k)])
        result.figure({"name": "confusion_matrix", "title": "Confusion matrix", "kind": "heatmap",
                       "matrix": matrix.tolist(), "x_labels": names, "y_labels": names,
                       "xlabel": "predicted", "ylabel": "true"})
        majority = np.bincount(y, minlength=k).max() / len(y)
        result.metric("majority_baseline_accuracy", majority)
        if accuracy <= majority + 0.01:
            balanced = balanced_accuracy_score(y, pred)
            chance = 1.0 / len(np.unique(y))
            if balanced >= chance + 0.05:  # trades majority-class accuracy for minority recall
                result.finding("low", f"accuracy {accuracy:.3f} is below always predicting the majority class "
                               f"({majority:.3f}), but balanced accuracy is {balanced:.3f} (chance {chance:.2f}): the "
                               "model trades majority-class accuracy for minority recall (class weights or a "
                               "threshold); judge it by balanced accuracy and per-class recall",
                               code="performance.below_majority_baseline", metric=f"{self.section}.accuracy",
                               value=accuracy)
            else:
                result.finding("high", f"accuracy {accuracy:.3f} does not beat always predicting the majority class "
                               f"({majority:.3f}) and balanced accuracy is {balanced:.3f} (chance {chance:.2f}): "
                               "the model has learned little", code="performance.no_better_than_majority",
                               metric=f"{self.section}.accuracy", value=accuracy)


    def _save_outcomes(self, ctx: AuditContext, result: SectionResult, y: np.ndarray, pred: np.ndarray,
                       proba: np.ndarray, topk_hit: np.ndarray | None) -> None:
        """Correct or not, and the cross-entropy, per sample (``audit.outcomes``): what ``nnaudit compare`` pairs;
        with the clean inputs, probabilities and sensitive columns the dashboard's sample explorer shows."""
        from audit.outcomes import EXTRA_GROUP, EXTRA_INPUTS, EXTRA_LABEL, EXTRA_PROBA, save_outcomes

        correct = (pred == y).astype(np.float64)
        eps = np.finfo(proba.dtype).eps  # log_loss clips the same way
        values = {"accuracy": correct, "error_rate": 1.0 - correct,
                  "loss": -np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps))}
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
    metric_directions: ClassVar[dict[str, Direction]] = {
        "balanced_accuracy": "higher", "macro_f1": "higher", "weighted_f1": "higher", "mcc": "higher",
        "roc_auc_ovr": "higher", "pr_auc": "higher", "class=*.recall": "higher", "class=*.precision": "higher",
        "ece": "lower", "recall_gap": "lower",
        "imbalance_ratio": None, "minority_fraction": None, "positive_rate": None,  # properties of the data
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        y, pred, proba = ctx.data.y, ctx.clean_predictions(), ctx.clean_probabilities()
        names, k = ctx.data.class_names, ctx.data.num_classes
        counts = np.bincount(y, minlength=k)
        self._distribution(result, names, counts)
        self._per_class(result, y, pred, names)
        self._scores(result, y, pred, proba, k)
        self._save_outcomes(ctx, result, y, pred)
        self._calibration(result, y, proba)

    def _distribution(self, result: SectionResult, names: list[str], counts: np.ndarray) -> None:
        total = counts.sum()
        result.table("class_distribution", "Class distribution", ["class", "count", "fraction"],
                     [[n, int(c), float(c / total)] for n, c in zip(names, counts, strict=True)])
        result.figure({"name": "class_distribution", "title": "Class distribution", "kind": "bar",
                       "xlabel": "class", "ylabel": "samples",
                       "series": [{"label": "samples", "x": names, "y": counts.tolist()}]})
        present = counts[counts > 0]
        ratio = float(present.max() / present.min())
        result.metric("imbalance_ratio", ratio)
        result.metric("minority_fraction", float(present.min() / total))
        missing = [n for n, c in zip(names, counts, strict=True) if c == 0]
        if missing:
            result.finding("medium", f"classes {missing} have no samples in the audited data; their metrics are "
                           "undefined", code="imbalance.missing_classes")
        if ratio >= self.params.ratio_warn:
            severity: Severity = "high" if ratio >= self.params.ratio_high else "medium"
            result.finding(severity, f"imbalance ratio {ratio:.1f} (largest class / smallest class): accuracy "
                           "overstates quality; read balanced accuracy, per-class recall and PR AUC",
                           code="imbalance.ratio", metric=f"{self.section}.imbalance_ratio", value=ratio)

    def _per_class(self, result: SectionResult, y: np.ndarray, pred: np.ndarray, names: list[str]) -> None:
        from sklearn.metrics import f1_score, precision_recall_fscore_support

        labels = list(range(len(names)))
        precision, recall, f1, support = precision_recall_fscore_support(
            y, pred, labels=labels, zero_division=0)
        predicted = np.bincount(pred, minlength=len(names))
        result.table("per_class", "Per-class metrics", ["class", "precision", "recall", "f1", "support", "predicted"],
                     [[names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]),
                       int(predicted[i])] for i in labels])
        result.figure({"name": "per_class_recall", "title": "Recall and precision per class", "kind": "bar",
                       "xlabel": "class", "ylabel": "score", "ylim": [0.0, 1.0],
                       "series": [{"label": "recall", "x": names, "y": recall.tolist()},
                                  {"label": "precision", "x": names, "y": precision.tolist()}]})
        for i in labels:
            result.metric(f"class={_safe(names[i])}.recall", recall[i] if support[i] else None)
            result.metric(f"class={_safe(names[i])}.precision", precision[i] if predicted[i] else None)
        result.metric("macro_f1", f1_score(y, pred, labels=labels, average="macro", zero_division=0))
        result.metric("weighted_f1", f1_score(y, pred, labels=labels, average="weighted", zero_division=0))
        present = support > 0
        gap = float(recall[present].max() - recall[present].min())
        result.metric("recall_gap", gap)
        never = [names[i] for i in labels if support[i] and not predicted[i]]
        if never:
            result.finding("high", f"the model never predicts {never}, which have "
                           f"{int(support[[names.index(n) for n in never]].sum())} samples",
                           code="imbalance.never_predicted")
        if gap >= self.params.recall_gap_warn:
            worst = names[int(np.argmin(np.where(present, recall, np.inf)))]
            result.finding("medium", f"recall differs by {gap:.2f} across classes; worst is '{worst}' "
                           f"({recall[names.index(worst)]:.2f})", code="imbalance.recall_gap",
                           metric=f"{self.section}.recall_gap", value=gap)

    def _scores(self, result: SectionResult, y: np.ndarray, pred: np.ndarray, proba: np.ndarray, k: int) -> None:
        from sklearn.metrics import average_precision_score, balanced_accuracy_score, matthews_corrcoef, roc_auc_score

        result.metric("balanced_accuracy", balanced_accuracy_score(y, pred))
        result.metric("mcc", matthews_corrcoef(y, pred))
        present = np.unique(y)
        if len(present) < 2:
            result.notes.append("ROC AUC and PR AUC are undefined with a single class present")
            result.metric("roc_auc_ovr", None)
            result.metric("pr_auc", None)
            return
        if k == 2:
            result.metric("roc_auc_ovr", roc_auc_score(y, proba[:, 1]))
            result.metric("pr_auc", average_precision_score(y, proba[:, 1]))
            result.metric("positive_rate", float((y == 1).mean()))
            return
        # one-vs-rest over the classes present; renormalize so scores sum to 1 over them
        sub = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
        remap = np.searchsorted(present, y)
        if len(present) == 2:
            result.metric("roc_auc_ovr", roc_auc_score(remap, sub[:, 1]))
        else:
            result.metric("roc_auc_ovr", roc_auc_score(remap, sub, multi_class="ovr", average="macro"))
        onehot = np.eye(k)[y][:, present]
        result.metric("pr_auc", average_precision_score(onehot, proba[:, present], average="macro"))

    def _save_outcomes(self, ctx: AuditContext, result: SectionResult, y: np.ndarray, pred: np.ndarray) -> None:
        """Balanced accuracy as a mean over samples (``audit.outcomes``), for ``nnaudit compare``: each sample's
        correct-or-not weighted by N / (classes present x its class's count), so the mean is the mean recall."""
        from audit.outcomes import save_outcomes

        counts = np.bincount(y)
        present = int((counts > 0).sum())
        weight = len(y) / (present * counts[y])
        save_outcomes(ctx, result, sample_id=np.arange(len(y)),
                      values={"balanced_accuracy": (pred == y).astype(np.float64) * weight},
                      meta={"balanced_accuracy": {"kind": "correct_class_weighted"}})

    def _calibration(self, result: SectionResult, y: np.ndarray, proba: np.ndarray) -> None:
        ece, rows = expected_calibration_error(proba, y, self.params.n_bins)
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
                           code="imbalance.calibration", metric=f"{self.section}.ece", value=ece)


def _safe(name: str) -> str:
    """A class name as a metric-name segment: letters, digits and _ only."""
    out = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return out or "class"
