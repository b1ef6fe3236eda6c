"""Robustness of a regression model: on a linear model the worst case is known exactly (L-inf: eps * ||w||_1, L2:
eps * ||w||_2): PGD reaches the L-inf one exactly (sign steps end in the corner) and the L2 one within 1% (a
random start's component across w shrinks with each projection but never vanishes), never beyond either; on the
diabetes MLP the invariants hold (perturbations within eps, the adversarial error at least the clean one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_tasks_performance import regression_context

from attacks.section import RobustnessSection
from audit.context import AuditContext
from audit.data import AuditData
from audit.model import TorchModelAdapter

W = torch.tensor([[1.5, -2.0, 0.5, 0.0, 3.0]])


def linear_context(tmp_path: Path) -> AuditContext:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    model = torch.nn.Linear(5, 1)
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.fill_(0.7)
        pred = model(torch.as_tensor(x))[:, 0].double().numpy()
    data = AuditData(name="linear", x=x, y=pred - 10.0, class_names=["value"], modality="tabular",
                     feature_names=[f"x{i}" for i in range(5)], task="regression")
    adapter = TorchModelAdapter.from_module(model, num_classes=1, task="regression")
    return AuditContext(model=adapter, data=data, run_dir=tmp_path / "run")


def test_linear_model_worst_case_is_exact(tmp_path: Path) -> None:
    result = RobustnessSection(norm=["linf", "l2"], eps=[0.1, 0.5], steps=20, red_flags=False)(linear_context(tmp_path))
    assert result.status == "ok", result.error
    m = result.metrics
    l1, l2 = float(W.abs().sum()), float(W.norm())
    assert m["robustness.clean_mae"] == pytest.approx(10.0, rel=1e-6)
    for eps in (0.1, 0.5):
        key = f"robustness.linf.eps={eps:g}"
        assert m[f"{key}.max_output_change"] == pytest.approx(eps * l1, rel=1e-5)
        assert m[f"{key}.mean_output_change"] == pytest.approx(eps * l1, rel=1e-5)
        assert m[f"{key}.adversarial_mae"] == pytest.approx(10.0 + eps * l1, rel=1e-6)
        assert m[f"{key}.error_increase"] == pytest.approx(eps * l1, rel=1e-4)
        key, bound = f"robustness.l2.eps={eps:g}", eps * l2 * (1 + 1e-5)
        assert m[f"{key}.max_output_change"] == pytest.approx(eps * l2, rel=1e-4)
        assert 0.99 * eps * l2 <= m[f"{key}.mean_output_change"] <= bound
        assert 0.99 * eps * l2 <= m[f"{key}.error_increase"] <= bound
    assert not any("accuracy" in name for name in m)
    assert result.directions["robustness.linf.eps=0.5.adversarial_mae"] == "lower"
    assert {f["name"] for f in result.figures} == {"output_change_curve", "error_curve"}
    assert [f.code for f in result.findings] == ["robustness.regression_headline"] * 2


def test_diabetes_mlp_invariants(tmp_path: Path) -> None:
    ctx = regression_context(tmp_path)
    result = RobustnessSection(norm="linf", eps=[0.05, 0.2, 0.5], steps=10)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    table = next(t for t in result.tables if t.name == "regression_robustness")
    for row in table.rows:
        eps, max_perturbation = row[1], row[-1]
        assert max_perturbation <= eps * (1 + 1e-5)
        assert m[f"robustness.linf.eps={eps:g}.adversarial_mae"] >= m["robustness.clean_mae"]
    changes = [m[f"robustness.linf.eps={e:g}.max_output_change"] for e in (0.05, 0.2, 0.5)]
    assert changes == sorted(changes) and changes[0] > 0
    from audit.outcomes import load_outcomes

    outcomes = load_outcomes(tmp_path / "run", "robustness")
    assert outcomes is not None


W3 = torch.tensor([[1.0, -2.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, -1.0, 0.0], [2.0, 0.0, 0.0, 1.0, -1.0]])


def test_multilabel_flips_on_a_linear_model_are_exact(tmp_path: Path) -> None:
    """Label j of a linear model flips under L-inf eps exactly when |z_j| < eps * ||w_j||_1."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.copy_(W3)
        model.bias.copy_(torch.tensor([0.2, -0.1, 0.3]))
        z = model(torch.as_tensor(x)).double().numpy()
    y = (z >= 0).astype(np.int64)
    y[:10, 0] = 1 - y[:10, 0]  # 10 rows the model gets wrong
    data = AuditData(name="linear-ml", x=x, y=y, class_names=["a", "b", "c"], modality="tabular", task="multilabel")
    ctx = AuditContext(model=TorchModelAdapter.from_module(model, num_classes=3), data=data, run_dir=tmp_path / "run")
    result = RobustnessSection(eps=[0.1, 0.4], steps=20)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    l1 = W3.abs().sum(dim=1).numpy()
    assert m["robustness.clean_subset_accuracy"] == pytest.approx(70 / 80)
    for eps in (0.1, 0.4):
        flips = np.abs(z) < eps * l1
        key = f"robustness.linf.eps={eps:g}"
        for j, name in enumerate("abc"):
            assert m[f"{key}.label={name}.flip_rate"] == pytest.approx(flips[:, j].mean(), abs=1e-12)
        assert m[f"{key}.any_label_flip_rate"] == pytest.approx(flips.any(axis=1).mean(), abs=1e-12)
        robust = (y == (z >= 0)).all(axis=1) & ~flips.any(axis=1)
        assert m[f"{key}.robust_subset_accuracy"] == pytest.approx(robust.mean(), abs=1e-12)
    assert m["robustness.linf.eps=0.4.any_label_flip_rate"] > m["robustness.linf.eps=0.1.any_label_flip_rate"] > 0
    assert result.directions["robustness.linf.eps=0.4.label=a.flip_rate"] == "lower"
    assert [f.code for f in result.findings] == ["robustness.multilabel_headline"]
