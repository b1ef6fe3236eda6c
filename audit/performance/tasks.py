"""The ``performance`` section for regression and multi-label models: scikit-learn's metrics on the clean
outputs, computed here and recorded by ``record_regression`` / ``record_multilabel`` (the section dispatches by
``ctx.data.task``). No accuracy for a regressor: it has none.

- regression: MAE, RMSE, R², MAPE (``performance.mae``, ``.rmse``, ``.r2``, ``.mape``), the mean target and
  prediction, a predicted-vs-true figure and a residual table by decile of the target;
- multi-label: per label and micro/macro precision, recall and F1, Hamming loss and subset accuracy (exact match),
  a per-label table and figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.keys import metric_key
from audit.results import Direction, SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext

DIRECTIONS: dict[str, Direction] = {
    "mae": "lower", "rmse": "lower", "mse": "lower", "r2": "higher", "mape": "lower", "max_error": "lower",
    "mean_target": None, "mean_prediction": None, "target_std": None,
    "hamming_loss": "lower", "subset_accuracy": "higher", "*precision": "higher", "*recall": "higher",
    "*f1": "higher", "label=*.support": None, "label=*.predicted": None,
}
LOW_R2 = 0.0  # R² at or below this: no better than predicting the mean target


@dataclass(frozen=True)
class Regression:
    mae: float
    mse: float
    rmse: float
    r2: float
    mape: float
    max_error: float
    mean_target: float
    mean_prediction: float
    target_std: float


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Regression:
    from sklearn import metrics as skm

    mse = float(skm.mean_squared_error(y, pred))
    return Regression(mae=float(skm.mean_absolute_error(y, pred)), mse=mse, rmse=float(np.sqrt(mse)),
                      r2=float(skm.r2_score(y, pred)), mape=float(skm.mean_absolute_percentage_error(y, pred)),
                      max_error=float(skm.max_error(y, pred)), mean_target=float(np.mean(y)),
                      mean_prediction=float(np.mean(pred)), target_std=float(np.std(y)))


@dataclass(frozen=True)
class MultiLabel:
    precision: np.ndarray  # (L,)
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # rows with the label
    predicted: np.ndarray  # rows predicted with it
    averages: dict[str, float]  # micro_/macro_ precision, recall, f1
    hamming_loss: float
    subset_accuracy: float


def multilabel_metrics(y: np.ndarray, pred: np.ndarray) -> MultiLabel:
    from sklearn import metrics as skm

    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    averages: dict[str, float] = {}
    for average in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        averages.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
    return MultiLabel(precision=precision, recall=recall, f1=f1, support=support, predicted=pred.sum(axis=0),
                      averages=averages, hamming_loss=float(skm.hamming_loss(y, pred)),
                      subset_accuracy=float(skm.accuracy_score(y, pred)))


def record_regression(result: SectionResult, ctx: AuditContext, section: str) -> None:
    y, pred = ctx.data.y, ctx.clean_values()
    m = regression_metrics(y, pred)
    for name in ("mae", "rmse", "r2", "mape", "mse", "max_error", "mean_target", "mean_prediction", "target_std"):
        result.metric(name, getattr(m, name))
    result.metric("n_samples", len(y))
    if np.any(np.abs(y) < 1e-12):
        result.notes.append("some targets are 0: MAPE divides by |target| (scikit-learn's guard, machine epsilon), "
                            "so it is huge or meaningless here; read MAE and RMSE")
    deciles = _residual_rows(y, pred)
    result.table("residuals", "Errors by decile of the target", ["target_from", "target_to", "count", "mae",
                 "mean_residual"], deciles, description="mean_residual: mean of prediction - target (bias)")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    order = np.argsort(y)
    result.figure({"name": "predicted_vs_true", "title": f"Predicted vs. true (R² {m.r2:.3f})", "kind": "line",
                   "xlabel": "true", "ylabel": "predicted", "diagonal": True, "ylim": [lo, hi],
                   "series": [{"label": "samples", "x": y[order].tolist(), "y": pred[order].tolist(),
                               "style": "o"}]})
    _save_regression_outcomes(ctx, result, y, pred)
    if m.r2 <= LOW_R2:
        result.finding("high", f"R² {m.r2:.3f}: the model predicts no better than the mean target "
                       f"({m.mean_target:.4g}); RMSE {m.rmse:.4g} vs the target's standard deviation "
                       f"{m.target_std:.4g}", code="performance.no_better_than_mean", metric=metric_key(section, "r2"),
                       value=m.r2)


def _residual_rows(y: np.ndarray, pred: np.ndarray) -> list[list[Any]]:
    edges = np.unique(np.quantile(y, np.linspace(0, 1, 11)))
    which = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, len(edges) - 2)
    rows: list[list[Any]] = []
    for b in range(len(edges) - 1):
        mask = which == b
        if mask.any():
            rows.append([float(edges[b]), float(edges[b + 1]), int(mask.sum()),
                         float(np.abs(pred[mask] - y[mask]).mean()), float((pred[mask] - y[mask]).mean())])
    return rows


def _save_regression_outcomes(ctx: AuditContext, result: SectionResult, y: np.ndarray, pred: np.ndarray) -> None:
    """The absolute error per sample (its mean is the MAE) for ``nnaudit compare``; with the inputs, target and
    prediction the sample explorer shows."""
    from audit.outcomes import EXTRA_GROUP, EXTRA_INPUTS, EXTRA_LABEL, save_outcomes

    groups = {f"{EXTRA_GROUP}{name}": np.asarray(column).astype(str) for name, column in ctx.data.sensitive.items()}
    save_outcomes(ctx, result, sample_id=np.arange(len(y)), values={"mae": np.abs(pred - y)},
                  meta={"mae": {"kind": "absolute_error"}},
                  extra={EXTRA_LABEL: y, "prediction": pred, EXTRA_INPUTS: ctx.data.x, **groups})


def record_multilabel(result: SectionResult, ctx: AuditContext, section: str) -> None:
    y, pred = ctx.data.y, ctx.clean_label_predictions()
    m = multilabel_metrics(y, pred)
    result.metric("subset_accuracy", m.subset_accuracy)
    result.metric("hamming_loss", m.hamming_loss)
    for name, value in m.averages.items():
        result.metric(name, value)
    result.metric("n_samples", len(y))
    names = ctx.data.class_names
    rows = []
    for j, name in enumerate(names):
        label = ("label", _safe(name))
        result.metric(metric_key(label, "precision"), float(m.precision[j]) if m.predicted[j] else None)
        result.metric(metric_key(label, "recall"), float(m.recall[j]) if m.support[j] else None)
        result.metric(metric_key(label, "f1"), float(m.f1[j]))
        rows.append([name, float(m.precision[j]), float(m.recall[j]), float(m.f1[j]), int(m.support[j]),
                     int(m.predicted[j])])
    result.table("per_label", "Per-label metrics (a label is predicted where its sigmoid is at least 0.5)",
                 ["label", "precision", "recall", "f1", "support", "predicted"], rows)
    result.figure({"name": "per_label", "title": "Precision, recall and F1 per label", "kind": "bar",
                   "xlabel": "label", "ylabel": "score", "ylim": [0.0, 1.0],
                   "series": [{"label": k, "x": names, "y": getattr(m, k).tolist()}
                              for k in ("precision", "recall", "f1")]})
    never = [names[j] for j in range(len(names)) if m.support[j] and not m.predicted[j]]
    if never:
        rows_with = int(sum(m.support[names.index(n)] for n in never))
        result.finding("high", f"the model never predicts the labels {never}, which {rows_with} rows carry",
                       code="performance.never_predicted_label")
    from audit.outcomes import save_outcomes

    save_outcomes(ctx, result, sample_id=np.arange(len(y)),
                  values={"subset_accuracy": (pred == y).all(axis=1).astype(np.float64),
                          "hamming_loss": (pred != y).mean(axis=1)},
                  meta={"subset_accuracy": {"kind": "correct"}, "hamming_loss": {"kind": "wrong_label_fraction"}},
                  # not the sample explorer's label / proba names: it shows one class per row (a softmax)
                  extra={"labels": y, "predicted_labels": pred,
                         "label_proba": ctx.clean_label_probabilities().astype(np.float32)})


def _safe(name: str) -> str:
    """A label name as a metric-name segment: letters, digits and _ only."""
    out = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return out or "label"
