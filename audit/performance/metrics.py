"""The computing behind the ``performance`` and ``imbalance`` sections: scikit-learn metrics on the clean
predictions, returned as dataclasses (no recording here; ``audit.performance.section`` records them).

scikit-learn is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.calibration import expected_calibration_error


@dataclass(frozen=True)
class Performance:
    """Accuracy, loss and the confusion matrix, and the majority-class baseline to judge them by."""

    accuracy: float
    loss: float
    n_samples: int
    confusion: np.ndarray  # (K, K): rows true class, columns predicted
    majority_baseline: float  # accuracy of always predicting the most frequent class
    top_k: int
    topk_hit: np.ndarray | None  # (N,) bool: the true class among the top_k scores (None when top_k == 1)


@dataclass(frozen=True)
class Distribution:
    """How the audited rows spread over the classes."""

    counts: np.ndarray  # (K,)
    imbalance_ratio: float  # largest / smallest class present
    minority_fraction: float
    missing: list[int]  # classes without a row


@dataclass(frozen=True)
class PerClass:
    """Per-class precision, recall and F1, and the gaps between classes."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true rows per class
    predicted: np.ndarray  # predicted rows per class
    macro_f1: float
    weighted_f1: float
    recall_gap: float  # best - worst recall over the classes present
    never_predicted: list[int]  # classes with rows that the model never predicts
    worst: int  # the class present with the lowest recall


@dataclass(frozen=True)
class Scores:
    """Imbalance-aware scores. ROC AUC and PR AUC are None (undefined) when a single class is present;
    ``positive_rate`` is set for two classes."""

    balanced_accuracy: float
    mcc: float
    roc_auc_ovr: float | None
    pr_auc: float | None
    positive_rate: float | None
    single_class: bool


@dataclass(frozen=True)
class Calibration:
    """Top-label expected calibration error and its reliability rows."""

    ece: float
    rows: list[list[float]]  # [bin_low, bin_high, count, mean_confidence, accuracy]


def performance(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, *, top_k: int = 1) -> Performance:
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    k = proba.shape[1]
    labels = list(range(k))
    topk_hit = None
    if top_k > 1:
        top = np.argsort(-proba, axis=1)[:, :top_k]
        topk_hit = (top == y[:, None]).any(axis=1)
    return Performance(accuracy=accuracy_score(y, pred), loss=log_loss(y, proba, labels=labels), n_samples=len(y),
                       confusion=confusion_matrix(y, pred, labels=labels),
                       majority_baseline=np.bincount(y, minlength=k).max() / len(y), top_k=top_k, topk_hit=topk_hit)


def balanced_and_chance(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, chance level 1 / classes present): what tells a model that learned little from one that
    trades majority-class accuracy for minority recall."""
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y, pred), 1.0 / len(np.unique(y))


def per_sample_loss(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each row's cross-entropy, clipped as scikit-learn's log_loss clips (its mean is the loss)."""
    eps = np.finfo(proba.dtype).eps
    return -np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps))


def distribution(y: np.ndarray, k: int) -> Distribution:
    counts = np.bincount(y, minlength=k)
    present = counts[counts > 0]
    return Distribution(counts=counts, imbalance_ratio=float(present.max() / present.min()),
                        minority_fraction=float(present.min() / counts.sum()),
                        missing=[i for i in range(k) if counts[i] == 0])


def per_class(y: np.ndarray, pred: np.ndarray, k: int) -> PerClass:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    predicted = np.bincount(pred, minlength=k)
    present = support > 0
    return PerClass(precision=precision, recall=recall, f1=f1, support=support, predicted=predicted,
                    macro_f1=f1_score(y, pred, labels=labels, average="macro", zero_division=0),
                    weighted_f1=f1_score(y, pred, labels=labels, average="weighted", zero_division=0),
                    recall_gap=float(recall[present].max() - recall[present].min()),
                    never_predicted=[i for i in labels if support[i] and not predicted[i]],
                    worst=int(np.argmin(np.where(present, recall, np.inf))))


def scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> Scores:
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, matthews_corrcoef, roc_auc_score

    k = proba.shape[1]
    balanced, mcc = balanced_accuracy_score(y, pred), matthews_corrcoef(y, pred)
    present = np.unique(y)
    if len(present) < 2:
        return Scores(balanced, mcc, None, None, None, single_class=True)
    if k == 2:
        return Scores(balanced, mcc, roc_auc_score(y, proba[:, 1]), average_precision_score(y, proba[:, 1]),
                      float((y == 1).mean()), single_class=False)
    # one-vs-rest over the classes present; renormalize so scores sum to 1 over them
    sub = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
    remap = np.searchsorted(present, y)
    if len(present) == 2:
        roc = roc_auc_score(remap, sub[:, 1])
    else:
        roc = roc_auc_score(remap, sub, multi_class="ovr", average="macro")
    onehot = np.eye(k)[y][:, present]
    return Scores(balanced, mcc, roc, average_precision_score(onehot, proba[:, present], average="macro"), None,
                  single_class=False)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights N / (classes present x the row's class count): the weighted mean of correct-or-not is the
    mean recall, i.e. balanced accuracy."""
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    weight: np.ndarray = len(y) / (present * counts[y])
    return weight


def calibration(proba: np.ndarray, y: np.ndarray, n_bins: int) -> Calibration:
    ece, rows = expected_calibration_error(proba, y, n_bins)
    return Calibration(ece, rows)
