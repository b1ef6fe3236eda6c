"""Fairness of a regression model: the error per group equals fairlearn's MetricFrame (and numpy) on the same
predictions, disparities with bootstrap intervals, a finding when one group's error is far worse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, hamming_loss, mean_absolute_error, root_mean_squared_error
from task_helpers import diabetes_problem, digits_multilabel_problem
from test_tasks_performance import regression_context

from audit.bootstrap import stratified_resamples
from audit.context import AuditContext
from audit.data import AuditData
from audit.fairness import FairnessSection
from audit.fairness.multilabel import group_mean_statistic
from audit.fairness.regression import group_error_statistic
from audit.model import TorchModelAdapter


def test_group_errors_equal_fairlearn(tmp_path: Path) -> None:
    ctx = regression_context(tmp_path)
    result = FairnessSection(n_resamples=300)(ctx)
    assert result.status == "ok", result.error
    y, pred, sex = ctx.data.y, ctx.clean_values(), ctx.data.sensitive["sex"]
    frame = MetricFrame(metrics={"mae": mean_absolute_error, "rmse": root_mean_squared_error}, y_true=y, y_pred=pred,
                        sensitive_features=pd.Series(sex, name="sex"))
    m = result.metrics
    for group in ("1", "2"):
        assert m[f"fairness.sex.group={group}.mae"] == frame.by_group.loc[group, "mae"]
        rows = sex == group
        assert abs(m[f"fairness.sex.group={group}.rmse"] - np.sqrt(np.mean((pred[rows] - y[rows]) ** 2))) <= 1e-9
    mae = frame.by_group["mae"]
    assert abs(m["fairness.sex.mae_difference"] - (mae.max() - mae.min())) <= 1e-9
    assert abs(m["fairness.sex.mae_ratio"] - mae.min() / mae.max()) <= 1e-9
    assert abs(m["fairness.sex.worst_group_rmse"] - frame.by_group["rmse"].max()) <= 1e-9
    assert m["fairness.overall.mae"] == mean_absolute_error(y, pred)
    for name in ("mae_ratio", "mae_difference", "worst_group_rmse"):
        low, high = m[f"fairness.sex.{name}.ci_low"], m[f"fairness.sex.{name}.ci_high"]
        assert low is not None and high is not None and low < high
    assert result.directions["fairness.sex.worst_group_mae"] == "lower"
    assert result.directions["fairness.sex.mae_ratio"] == "higher"
    assert not any("accuracy" in name or "selection_rate" in name for name in m)
    assert {t.name for t in result.tables} >= {"disparities", "groups_sex", "setup"}


def test_bootstrap_statistic_equals_fairlearn_on_a_resample(tmp_path: Path) -> None:
    ctx = regression_context(tmp_path)
    y, pred = ctx.data.y, ctx.clean_values()
    codes = (ctx.data.sensitive["sex"] == "2").astype(np.int64)
    statistic = group_error_statistic(codes, np.abs(pred - y), 2, np.array([True, True]))
    index = next(stratified_resamples(codes, 5, seed=1))
    values = statistic(index)
    for b in range(3):
        rows = index[b]
        frame = MetricFrame(metrics={"mae": mean_absolute_error, "rmse": root_mean_squared_error}, y_true=y[rows],
                            y_pred=pred[rows], sensitive_features=codes[rows])
        assert np.allclose(values["group.mae"][b], frame.by_group["mae"].to_numpy(), rtol=1e-12)
        assert np.allclose(values["group.rmse"][b], frame.by_group["rmse"].to_numpy(), rtol=1e-12)


def test_one_group_far_worse_is_a_finding(tmp_path: Path) -> None:
    base = diabetes_problem().model
    sex_column = diabetes_problem().features.index("sex_z")

    class Biased(torch.nn.Module):  # 80 units too high for one sex: its error is far worse
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return base(x) + 80.0 * (x[:, sex_column : sex_column + 1] > 0).float()

    result = FairnessSection(n_resamples=200)(regression_context(tmp_path, Biased()))
    assert result.status == "ok", result.error
    found = {f.code: f for f in result.findings}
    assert "fairness.mae_ratio" in found and found["fairness.mae_ratio"].severity == "high"
    assert result.metrics["fairness.sex.mae_ratio.ci_high"] < 0.8
    assert "'2'" in found["fairness.mae_ratio"].message


def multilabel_groups_context(tmp_path: Path, model: Any = None) -> AuditContext:
    """Digits with three labels, grouped by how much ink the digit has (above or below the median): a property of
    each real image."""
    p = digits_multilabel_problem()
    ink = p.x.mean(axis=1)
    group = np.where(ink > np.median(ink), "heavy", "light")
    data = AuditData(name="digits-ml", x=p.x, y=p.y, class_names=list(p.target), modality="tabular",
                     task="multilabel", sensitive={"ink": group})
    adapter = TorchModelAdapter.from_module(model if model is not None else p.model, num_classes=3)
    return AuditContext(model=adapter, data=data, run_dir=tmp_path / "run")


def test_multilabel_group_metrics_equal_fairlearn(tmp_path: Path) -> None:
    ctx = multilabel_groups_context(tmp_path)
    result = FairnessSection(n_resamples=300)(ctx)
    assert result.status == "ok", result.error
    y, pred, ink = ctx.data.y, ctx.clean_label_predictions(), ctx.data.sensitive["ink"]
    frame = MetricFrame(metrics={"subset_accuracy": accuracy_score, "hamming_loss": hamming_loss}, y_true=y,
                        y_pred=pred, sensitive_features=pd.Series(ink, name="ink"))
    m = result.metrics
    for group in ("heavy", "light"):
        assert m[f"fairness.ink.group={group}.subset_accuracy"] == frame.by_group.loc[group, "subset_accuracy"]
        assert m[f"fairness.ink.group={group}.hamming_loss"] == frame.by_group.loc[group, "hamming_loss"]
    acc = frame.by_group["subset_accuracy"]
    assert abs(m["fairness.ink.subset_accuracy_difference"] - (acc.max() - acc.min())) <= 1e-12
    assert abs(m["fairness.ink.worst_group_subset_accuracy"] - acc.min()) <= 1e-12
    assert m["fairness.ink.subset_accuracy_difference.ci_low"] < m["fairness.ink.subset_accuracy_difference.ci_high"]
    assert result.directions["fairness.ink.worst_group_subset_accuracy"] == "higher"
    assert result.directions["fairness.ink.worst_group_hamming_loss"] == "lower"
    codes = (ink == "light").astype(np.int64)
    statistic = group_mean_statistic(codes, {"subset_accuracy": (pred == y).all(axis=1).astype(float),
                                             "hamming_loss": (pred != y).mean(axis=1)}, 2)
    index = next(stratified_resamples(codes, 3, seed=2))
    rows = index[0]
    again = MetricFrame(metrics={"hamming_loss": hamming_loss}, y_true=y[rows], y_pred=pred[rows],
                        sensitive_features=codes[rows])
    assert np.allclose(statistic(index)["group.hamming_loss"][0], again.by_group["hamming_loss"].to_numpy())


def test_multilabel_group_far_worse_is_a_finding(tmp_path: Path) -> None:
    base = digits_multilabel_problem().model
    threshold = float(np.median(digits_multilabel_problem().x.mean(axis=1)))

    class Biased(torch.nn.Module):  # every label inverted for the heavy-ink digits
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            heavy = (x.mean(dim=1, keepdim=True) > threshold).float()
            return base(x) * (1 - 2 * heavy)

    result = FairnessSection(n_resamples=200)(multilabel_groups_context(tmp_path, Biased()))
    found = {f.code: f for f in result.findings}
    assert found["fairness.subset_accuracy_difference"].severity == "high"
    assert "'heavy'" in found["fairness.subset_accuracy_difference"].message
