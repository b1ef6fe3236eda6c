"""Targets by task (``model.task``): class indices, numbers (regression) or 0/1 per label (multi-label), and
``model.task: auto`` resolved only where the target says so unambiguously.

- 2-D 0/1 targets (``data.target: [col, col]``, an npz ``y`` of shape (N, L)) are multi-label, unless every row
  holds exactly one 1 (one-hot class labels look the same: a ``ConfigError`` naming ``model.task``);
- whole-number or text labels stay classification, as before (a single output with 0/1 labels is a binary
  classifier's logit: ``audit.model.outputs.check_width``);
- a target with fractional values is refused with a ``ConfigError`` naming ``model.task``: it could be a number
  to predict or broken labels, and only the user knows which.

The chosen task and why go to the manifest (``manifest.data.task``, ``manifest.data.task_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.data.base import AuditData, Task, stratified_subset
from audit.data.labels import encode_labels
from audit.errors import ConfigError, DataError

AUTO_HINT = ("set model.task: regression if the model predicts a number, or model.task: classification with "
             "labels 0..K-1 if it predicts classes")


@dataclass(frozen=True)
class Targets:
    """``y`` as ``AuditData`` holds it for ``task``, its output names, and why that task was chosen."""

    y: np.ndarray
    class_names: list[str]
    task: Task
    reason: str


def task_targets(values: np.ndarray, *, task: str, class_names: list[str] | None, key: str,
                 columns: list[str] | None = None) -> Targets:
    """Targets of a user file for ``task`` (auto, classification, regression, multilabel).

    ``values``: (N,) or (N, L); ``key``: the config key that names them (for the messages), ``columns``: the names
    of the L columns of a multi-label table (the default label names)."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1 and task != "multilabel":
        values = values[:, 0]
    if values.ndim > 2:
        raise DataError(f"targets ({key}) have shape {list(values.shape)}; expected (N,) or (N, labels)")
    if values.ndim == 2:
        return _multilabel(values, task=task, class_names=class_names, key=key, columns=columns)
    if task == "multilabel":
        raise ConfigError("data.target", f"model.task is multilabel but {key} holds one value per sample; name one "
                          "0/1 column per label (data.target: [label_a, label_b]) or store y as (N, labels)")
    if task == "regression":
        return _regression(values, class_names=class_names, key=key, columns=columns)
    if task == "auto" and values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        fractional = finite[finite != np.round(finite)]
        if fractional.size:
            examples = ", ".join(f"{v:g}" for v in np.unique(fractional)[:3])
            raise ConfigError("model.task", f"the target ({key}) holds {fractional.size} values that are not whole "
                              f"numbers ({examples}): a continuous target. {AUTO_HINT}")
    y, names = encode_labels(values, class_names, key)
    if task == "classification":
        return Targets(y, names, "classification", "set by model.task")
    what = "text labels" if values.dtype.kind not in "iufb" else f"whole numbers 0..{len(names) - 1}"
    return Targets(y, names, "classification", f"model.task auto: the target ({key}) holds {what}, class indices")


def _regression(values: np.ndarray, *, class_names: list[str] | None, key: str,
                columns: list[str] | None) -> Targets:
    if values.dtype.kind not in "iuf":
        raise DataError(f"regression targets ({key}) must be numbers, found {values.dtype} values such as "
                        f"{[str(v) for v in values[:3]]}")
    y = values.astype(np.float64)
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise DataError(f"{bad} regression targets ({key}) are NaN or infinite; drop those rows or fill them "
                        "before the audit")
    if class_names is not None and len(class_names) != 1:
        raise ConfigError("data.class_names", f"a regression model has one output; give one name, not "
                          f"{len(class_names)}")
    names = class_names or [columns[0] if columns else "target"]
    return Targets(y, names, "regression", "set by model.task")


def _multilabel(values: np.ndarray, *, task: str, class_names: list[str] | None, key: str,
                columns: list[str] | None) -> Targets:
    n_labels = values.shape[1]
    if task in ("classification", "regression"):
        raise ConfigError("model.task", f"{key} holds {n_labels} targets per sample, but model.task is {task}; set "
                          "model.task: multilabel (one 0/1 column per label) or name one target column")
    numeric = values.dtype.kind in "iufb"
    as_float = values.astype(np.float64) if numeric else None
    if as_float is None or not np.isin(as_float, (0.0, 1.0)).all():
        found = sorted({str(v) for v in np.unique(values.astype(str))} - {"0", "1", "0.0", "1.0", "True", "False"})
        raise DataError(f"multi-label targets ({key}) must be 0 or 1 in every column, found {found[:5]}; encode "
                        "each label as 0/1")
    if task == "auto" and (as_float.sum(axis=1) == 1).all():
        raise ConfigError("model.task", f"every row of {key} holds exactly one 1 among {n_labels} columns: one-hot "
                          "class labels or multi-label data? Set model.task: multilabel, or store class indices "
                          "(the argmax) for a classifier")
    if class_names is not None and len(class_names) != n_labels:
        raise ConfigError("data.class_names", f"{key} holds {n_labels} labels; give {n_labels} names, not "
                          f"{len(class_names)}")
    names = class_names or list(columns or [f"label{i}" for i in range(n_labels)])
    reason = "set by model.task" if task == "multilabel" else (
        f"model.task auto: the target ({key}) holds {n_labels} columns of 0/1 values, one per label")
    return Targets(as_float.astype(np.int64), names, "multilabel", reason)


def subset_rows(data: AuditData, limit: int, seed: int) -> np.ndarray:
    """``data.limit`` rows: stratified by class for classification, a seeded random draw otherwise (sorted)."""
    if data.task == "classification":
        return stratified_subset(data.y, limit, seed)
    if limit >= data.n_samples:
        return np.arange(data.n_samples)
    return np.sort(np.random.default_rng(seed).choice(data.n_samples, size=limit, replace=False))
