"""Tasks (model.task): the loaders read regression and multi-label targets, auto is resolved only where the target
is unambiguous, the model probe fits the output width to the task (a raw number, never a softmax; a sigmoid per
label), and bad targets get errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from task_helpers import diabetes_problem, digits_multilabel_problem

from audit.config import DataConfig, ModelConfig
from audit.data import load_data
from audit.errors import ConfigError, DataError, ModelError
from audit.model import load_model


def _csv(tmp_path: Path, frame: Any, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _table(path: Path, target: str | list[str], features: list[str], **extra: Any) -> DataConfig:
    return DataConfig(source="csv", path=path, target=target, features=features, **extra)


def _weights(tmp_path: Path, model: Any) -> Path:
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def _model_config(tmp_path: Path, model: Any, outputs: int, in_features: int) -> ModelConfig:
    hidden = model[0].out_features
    return ModelConfig(factory="audit.zoo:tabular_mlp", weights=_weights(tmp_path, model),
                       kwargs={"in_features": in_features, "num_classes": outputs, "hidden": hidden, "dropout": 0.0})


def test_regression_target_read_as_numbers(tmp_path: Path) -> None:
    p = diabetes_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), "target", p.features, sensitive=["sex"]), task="regression")
    assert data.task == "regression" and data.y.dtype == np.float64
    assert np.array_equal(data.y, p.y) and data.class_names == ["target"] and data.num_classes == 1
    assert data.describe()["task_reason"] == "set by model.task"
    # data.limit on a regression target: a seeded random draw, not a stratification by value
    limited = load_data(_table(_csv(tmp_path, p.frame), "target", p.features, limit=40), task="regression", seed=3)
    assert limited.n_samples == 40 and set(limited.y) <= set(p.y)


def test_continuous_target_with_auto_names_model_task(tmp_path: Path) -> None:
    p = diabetes_problem()
    frame = p.frame.copy()
    frame["target"] = frame["target"] + 0.5  # fractional values: a continuous target
    with pytest.raises(ConfigError, match="holds 111 values that are not whole numbers") as info:
        load_data(_table(_csv(tmp_path, frame), "target", p.features))
    assert info.value.key == "model.task" and "model.task: regression" in info.value.message


def test_whole_number_target_and_one_output_names_model_task(tmp_path: Path) -> None:
    """Diabetes' target is whole numbers (25..346): auto reads class indices, and the one-output model is then
    refused naming model.task, not with 'outputs 1 scores per sample but the data has 347 classes'."""
    p = diabetes_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), "target", p.features))
    assert data.task == "classification"
    with pytest.raises(ConfigError) as info:
        load_model(_model_config(tmp_path, p.model, 1, 10), num_classes=data.num_classes, sample=data.x,
                   device=torch.device("cpu"), batch_size=64, default_bounds=None, task=data.task, task_auto=True)
    assert info.value.key == "model.task"
    assert "set model.task: regression" in info.value.message and "scores per sample" not in info.value.message


def test_regression_model_outputs_its_raw_value(tmp_path: Path) -> None:
    p = diabetes_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), "target", p.features), task="regression")
    adapter = load_model(_model_config(tmp_path, p.model, 1, 10), num_classes=1, sample=data.x,
                         device=torch.device("cpu"), batch_size=64, default_bounds=None, task="regression")
    assert adapter.output_kind == "values"
    out = adapter.logits(data.x)
    with torch.no_grad():
        expected = p.model(torch.as_tensor(data.x))
    assert out.shape == (data.n_samples, 1) and torch.equal(out, expected)
    assert float(out.max()) > 100  # raw units: no softmax, no squashing
    two = ModelConfig(factory="torch.nn:Linear", kwargs={"in_features": 10, "out_features": 2})
    with pytest.raises(ModelError, match=r"a regression model .* outputs one number per sample"):
        load_model(two, num_classes=1, sample=data.x, device=torch.device("cpu"), batch_size=64, default_bounds=None,
                   task="regression")


def test_regression_nan_target_names_the_column(tmp_path: Path) -> None:
    p = diabetes_problem()
    frame = p.frame.copy()
    frame.loc[3, "target"] = np.nan
    with pytest.raises(DataError, match=r"1 regression targets \(data.target column 'target'\) are NaN"):
        load_data(_table(_csv(tmp_path, frame), "target", p.features), task="regression")


def test_multilabel_columns_auto(tmp_path: Path) -> None:
    p = digits_multilabel_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), list(p.target), p.features))
    assert data.task == "multilabel" and data.y.shape == (len(p.frame), 3) and np.array_equal(data.y, p.y)
    assert data.class_names == ["even", "five_or_more", "prime"]
    assert "3 columns of 0/1 values" in str(data.task_reason)
    with pytest.raises(ConfigError, match=r"model\.task is classification") as info:
        load_data(_table(_csv(tmp_path, p.frame), list(p.target), p.features), task="classification")
    assert info.value.key == "model.task"


def test_multilabel_targets_not_zero_one_name_the_columns(tmp_path: Path) -> None:
    p = digits_multilabel_problem()
    frame = p.frame.copy()
    frame.loc[0, "prime"] = 2
    with pytest.raises(DataError, match=r"multi-label targets \(data.target columns \['even', 'five_or_more', "
                                        r"'prime'\]\) must be 0 or 1 in every column, found \['2'\]"):
        load_data(_table(_csv(tmp_path, frame), list(p.target), p.features))


def test_npz_targets_by_task(tmp_path: Path) -> None:
    p = digits_multilabel_problem()
    np.savez(tmp_path / "ml.npz", x=p.x, y=p.y)
    data = load_data(DataConfig(source="npz", path=tmp_path / "ml.npz"))
    assert data.task == "multilabel" and data.class_names == ["label0", "label1", "label2"]
    d = diabetes_problem()
    np.savez(tmp_path / "reg.npz", x=d.x, y=d.y)
    reg = load_data(DataConfig(source="npz", path=tmp_path / "reg.npz"), task="regression")
    assert reg.task == "regression" and np.array_equal(reg.y, d.y)
    np.savez(tmp_path / "bad.npz", x=p.x, y=p.y * 3)
    with pytest.raises(DataError, match=r"data.y_key 'y' in bad.npz\) must be 0 or 1"):
        load_data(DataConfig(source="npz", path=tmp_path / "bad.npz"))
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig(source="digits"), task="regression")
    assert info.value.key == "model.task"
    onehot = np.eye(3, dtype=np.int64)[np.arange(len(p.x)) % 3]  # one-hot rows: classes or labels? not auto
    np.savez(tmp_path / "onehot.npz", x=p.x, y=onehot)
    with pytest.raises(ConfigError, match="exactly one 1") as info:
        load_data(DataConfig(source="npz", path=tmp_path / "onehot.npz"))
    assert info.value.key == "model.task"
    assert load_data(DataConfig(source="npz", path=tmp_path / "onehot.npz"), task="multilabel").task == "multilabel"


def test_multilabel_probe_sigmoid_not_softmax(tmp_path: Path) -> None:
    p = digits_multilabel_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), list(p.target), p.features))
    adapter = load_model(_model_config(tmp_path, p.model, 3, 64), num_classes=3, sample=data.x,
                         device=torch.device("cpu"), batch_size=64, default_bounds=None, task="multilabel")
    with torch.no_grad():
        logits = p.model(torch.as_tensor(data.x))
    assert adapter.output_kind == "logits" and torch.allclose(adapter.logits(data.x), logits)

    class Probabilities(torch.nn.Module):  # the same model returning a sigmoid per label
        def __init__(self) -> None:
            super().__init__()
            self.inner = p.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.inner(x))

    from audit.context import AuditContext
    from audit.model import TorchModelAdapter
    from audit.model.outputs import SelectOutput, probe

    kind, binary, _ = probe(Probabilities(), torch.as_tensor(data.x[:64]), None, 3, "multilabel")
    assert (kind, binary) == ("probabilities", False)
    select = SelectOutput(None, kind, False, "multilabel")
    wrapped = TorchModelAdapter.from_module(torch.nn.Sequential(Probabilities(), select), num_classes=3)
    ctx = AuditContext(model=wrapped, data=data, run_dir=tmp_path / "run")
    expected = torch.sigmoid(logits.double()).numpy()
    assert np.allclose(ctx.clean_label_probabilities(), expected, atol=1e-5)
    assert np.array_equal(ctx.clean_label_predictions(), (expected >= 0.5).astype(np.int64))
    with pytest.raises(Exception, match="outputs 3 scores per sample but the data has 2 labels"):
        probe(p.model, torch.as_tensor(data.x[:8]), None, 2, "multilabel")


def test_binary_single_logit_stays_classification(tmp_path: Path, cancer_test: Any) -> None:
    from audit.model.outputs import probe

    kind, binary, _ = probe(torch.nn.Linear(30, 1), torch.as_tensor(cancer_test.x[:16]), None, 2,
                            "classification", task_auto=True)
    assert binary and kind == "logits"


def test_black_box_regression(tmp_path: Path) -> None:
    """A predict function returning one number per row (N,): audited as a regression model without gradients."""
    from attacks.section import RobustnessSection
    from audit.context import AuditContext
    from audit.performance import PerformanceSection

    p = diabetes_problem()
    data = load_data(_table(_csv(tmp_path, p.frame), "target", p.features), task="regression")
    adapter = load_model(ModelConfig(predict_fn="task_helpers:diabetes_predict"), num_classes=1, sample=data.x,
                         device=torch.device("cpu"), batch_size=64, default_bounds=None, task="regression")
    assert not adapter.has_gradients and adapter.output_kind == "values"
    ctx = AuditContext(model=adapter, data=data, run_dir=tmp_path / "run")
    with torch.no_grad():
        expected = p.model(torch.as_tensor(data.x))[:, 0].double().numpy()
    assert np.allclose(ctx.clean_values(), expected, rtol=1e-6)
    assert PerformanceSection()(ctx).status == "ok"
    robust = RobustnessSection(eps=[0.1])(ctx)
    assert robust.status == "skipped" and "needs gradients" in robust.notes[-1]
