"""The performance section for regression and multi-label models: values equal scikit-learn's on the same outputs,
no accuracy for a regressor, and sections that cannot audit a task are refused before any runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from task_helpers import diabetes_problem, digits_multilabel_problem

from audit.context import AuditContext
from audit.data import AuditData
from audit.errors import ConfigError
from audit.model import TorchModelAdapter
from audit.performance import PerformanceSection


def regression_context(tmp_path: Path, model: Any = None) -> AuditContext:
    p = diabetes_problem()
    data = AuditData(name="diabetes", x=p.x, y=p.y, class_names=["progression"], modality="tabular",
                     feature_names=list(p.features), task="regression",
                     sensitive={"sex": p.frame["sex"].astype(str).to_numpy()})
    adapter = TorchModelAdapter.from_module(model if model is not None else p.model, num_classes=1, task="regression")
    return AuditContext(model=adapter, data=data, run_dir=tmp_path / "run")


def multilabel_context(tmp_path: Path) -> AuditContext:
    p = digits_multilabel_problem()
    data = AuditData(name="digits-ml", x=p.x, y=p.y, class_names=list(p.target), modality="tabular",
                     task="multilabel")
    adapter = TorchModelAdapter.from_module(p.model, num_classes=3)
    return AuditContext(model=adapter, data=data, run_dir=tmp_path / "run")


def test_regression_metrics_equal_sklearn(tmp_path: Path) -> None:
    ctx = regression_context(tmp_path)
    result = PerformanceSection()(ctx)
    assert result.status == "ok", result.error
    y = ctx.data.y
    with torch.no_grad():
        pred = diabetes_problem().model(torch.as_tensor(ctx.data.x)).double().numpy()[:, 0]
    assert np.array_equal(ctx.clean_values(), pred)
    m = result.metrics
    assert abs(m["performance.mae"] - skm.mean_absolute_error(y, pred)) <= 1e-9
    assert abs(m["performance.rmse"] - np.sqrt(skm.mean_squared_error(y, pred))) <= 1e-9
    assert abs(m["performance.r2"] - skm.r2_score(y, pred)) <= 1e-9
    assert abs(m["performance.mape"] - skm.mean_absolute_percentage_error(y, pred)) <= 1e-9
    assert 0.2 < m["performance.r2"] < 0.8  # a model that learned something (about 0.34 on this split)
    assert not any("accuracy" in name for name in m), "a regressor has no accuracy"
    assert result.directions["performance.rmse"] == "lower" and result.directions["performance.r2"] == "higher"
    assert {t.name for t in result.tables} == {"residuals"}
    assert sum(row[2] for row in result.tables[0].rows) == len(y)
    assert not result.findings


def test_regression_constant_model_is_flagged(tmp_path: Path) -> None:
    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((len(x), 1), 10.0)

    result = PerformanceSection()(regression_context(tmp_path, Constant()))
    assert result.metrics["performance.r2"] < 0
    assert [f.code for f in result.findings] == ["performance.no_better_than_mean"]


def test_multilabel_metrics_equal_sklearn(tmp_path: Path) -> None:
    ctx = multilabel_context(tmp_path)
    result = PerformanceSection()(ctx)
    assert result.status == "ok", result.error
    y = ctx.data.y
    with torch.no_grad():
        pred = (torch.sigmoid(digits_multilabel_problem().model(torch.as_tensor(ctx.data.x))) >= 0.5).long().numpy()
    assert np.array_equal(ctx.clean_label_predictions(), pred)
    m = result.metrics
    assert m["performance.subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["performance.hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred), abs=1e-12)
    for average in ("micro", "macro"):
        assert m[f"performance.{average}_f1"] == pytest.approx(skm.f1_score(y, pred, average=average), abs=1e-12)
        assert m[f"performance.{average}_precision"] == pytest.approx(
            skm.precision_score(y, pred, average=average), abs=1e-12)
        assert m[f"performance.{average}_recall"] == pytest.approx(skm.recall_score(y, pred, average=average),
                                                                   abs=1e-12)
    f1 = skm.f1_score(y, pred, average=None)
    for j, name in enumerate(ctx.data.class_names):
        assert m[f"performance.label={name}.f1"] == pytest.approx(f1[j], abs=1e-12)
    assert m["performance.micro_f1"] > 0.8
    assert result.directions["performance.hamming_loss"] == "lower"


def test_sections_that_cannot_audit_a_task_are_refused(tmp_path: Path) -> None:
    from audit.performance import ImbalanceSection
    from audit.preflight import preflight

    ctx = multilabel_context(tmp_path)
    with pytest.raises(ConfigError) as info:
        preflight(ctx, [PerformanceSection(section="performance"), ImbalanceSection(section="imbalance")])
    assert info.value.key == "sections.imbalance" and "multilabel" in info.value.message
