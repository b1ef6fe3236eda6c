"""Helpers shared by the fairness tests (pytest puts tests/ on sys.path)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.context import AuditContext
from audit.data import AuditData
from audit.model import TorchModelAdapter


class SignalModel(nn.Module):
    """Logit of class 1 = 4 * x[:, 0]; with ``flip``, predictions are flipped where x[:, 1] == 1
    (a planted bias against the group encoded in feature 1)."""

    def __init__(self, *, flip: bool = False) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 4.0 * x[:, 0]
        if self.flip:
            score = torch.where(x[:, 1] > 0.5, -score, score)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def signal_data(n: int, seed: int, *, noise: float = 0.35) -> AuditData:
    """Labels independent of the group; x0 = label signal + noise; x1 = group indicator; x2 = noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    group = rng.integers(0, 2, n)
    x = np.stack([(2 * y - 1) * 0.5 + rng.normal(0, noise, n), group, rng.normal(0, 1, n)], axis=1)
    return AuditData(name="signal", x=x, y=y, class_names=["no", "yes"], modality="tabular",
                     feature_names=["signal", "group", "noise"],
                     sensitive={"group": np.where(group == 1, "b", "a"), "site": rng.choice(["n", "s", "w"], n)})


def planted(y: np.ndarray, pred: np.ndarray, sensitive: dict[str, np.ndarray], *,
            class_names: tuple[str, ...] = ("no", "yes"), positive_class: int | None = None) -> AuditData:
    """Data on which ``SignalModel()`` predicts exactly ``pred`` (x0 = +1 for class 1, -1 for class 0)."""
    y, pred = np.asarray(y), np.asarray(pred)
    x = np.stack([2.0 * pred - 1.0, np.zeros(len(y)), np.zeros(len(y))], axis=1)
    return AuditData(name="planted", x=x, y=y, class_names=list(class_names), modality="tabular",
                     feature_names=["signal", "unused", "zero"], sensitive=sensitive, positive_class=positive_class)


def context(module: nn.Module, data: AuditData, tmp_path: Path, **kwargs: Any) -> AuditContext:
    model = kwargs.pop("adapter", None) or TorchModelAdapter.from_module(module, num_classes=data.num_classes,
                                                                          batch_size=512)
    return AuditContext(model=model, data=data, run_dir=tmp_path / "run", seed=0, **kwargs)


def fairlearn_frame(y: np.ndarray, pred: np.ndarray, sensitive: Any, pos_label: int) -> Any:
    """fairlearn's MetricFrame of the binary rates with the favourable label ``pos_label``, built here
    from fairlearn's and scikit-learn's own functions (not nnaudit's wrappers)."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, precision_score

    metrics = {"count": count, "accuracy": accuracy_score,
               "selection_rate": partial(selection_rate, pos_label=pos_label),
               "true_positive_rate": partial(true_positive_rate, pos_label=pos_label),
               "false_positive_rate": partial(false_positive_rate, pos_label=pos_label),
               "precision": partial(precision_score, pos_label=pos_label, zero_division=0)}
    return MetricFrame(metrics=metrics, y_true=y, y_pred=pred, sensitive_features=sensitive)
