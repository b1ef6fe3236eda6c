"""Fairness of a regression model: the error per group equals fairlearn's MetricFrame (and numpy) on the same
predictions, disparities with bootstrap intervals, a finding when one group's error is far worse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import mean_absolute_error, root_mean_squared_error
from task_helpers import diabetes_problem
from test_tasks_performance import regression_context

from audit.bootstrap import stratified_resamples
from audit.fairness import FairnessSection
from audit.fairness.regression import group_error_statistic


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
