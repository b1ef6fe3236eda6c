"""End to end as a user runs it: a regression MLP on scikit-learn's diabetes data (trained here, weights saved, a
YAML config written) through `nnaudit run`, the report and `nnaudit gate` on performance.rmse; a multi-label model
through the same path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm
from task_helpers import diabetes_problem, digits_multilabel_problem

from audit.cli import main
from audit.results import load_results

REGRESSION_CONFIG = """\
title: diabetes regression
model:
  factory: audit.zoo:tabular_mlp
  kwargs: {{in_features: 10, num_classes: 1, hidden: 16, dropout: 0.0}}
  weights: weights.pt
  task: {task}
data:
  source: csv
  path: diabetes.csv
  target: target
  features: [{features}]
  sensitive: [sex]
sections:
{sections}
"""
SECTIONS = """\
  performance: {}
  robustness: {eps: [0.1, 0.3], steps: 10}
  fairness: {n_resamples: 200}
"""


def write_regression(tmp_path: Path, *, task: str = "regression", sections: str = SECTIONS) -> Path:
    p = diabetes_problem()
    torch.save(p.model.state_dict(), tmp_path / "weights.pt")
    p.frame.to_csv(tmp_path / "diabetes.csv", index=False)
    config = tmp_path / "audit.yaml"
    config.write_text(REGRESSION_CONFIG.format(task=task, features=", ".join(p.features), sections=sections))
    return config


def test_regression_mlp_end_to_end(tmp_path: Path) -> None:
    config = write_regression(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    results = load_results(out)  # validates against the schema
    assert results["manifest"]["data"]["task"] == "regression"
    assert results["manifest"]["data"]["task_reason"] == "set by model.task"
    assert results["manifest"]["model"]["output_kind"] == "values"
    sections = results["sections"]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s["error"] for k, s in sections.items()}
    m = sections["performance"]["metrics"]
    p = diabetes_problem()
    with torch.no_grad():
        pred = p.model(torch.as_tensor(p.x)).double().numpy()[:, 0]
    assert abs(m["performance.mae"] - skm.mean_absolute_error(p.y, pred)) <= 1e-9
    assert abs(m["performance.rmse"] - np.sqrt(skm.mean_squared_error(p.y, pred))) <= 1e-9
    assert abs(m["performance.r2"] - skm.r2_score(p.y, pred)) <= 1e-9
    assert abs(m["performance.mape"] - skm.mean_absolute_percentage_error(p.y, pred)) <= 1e-9
    every = [name for s in sections.values() for name in s["metrics"]]
    assert not any("accuracy" in name for name in every), "a regressor has no accuracy"
    html = (out / "report.html").read_text()
    assert "performance.rmse" in html and "RMSE" in html and "Clean accuracy" not in html
    assert "Adversarial MAE (linf, eps 0.3)" in html and "robustness.linf.eps=0.3.adversarial_mae" in html
    robust = sections["robustness"]["metrics"]
    assert robust["robustness.linf.eps=0.3.adversarial_mae"] >= robust["robustness.clean_mae"]
    rmse = m["performance.rmse"]
    passing, failing = tmp_path / "pass.yaml", tmp_path / "fail.yaml"
    passing.write_text(f"rules:\n  - performance.rmse <= {rmse * 1.01:.6f}\n  - performance.r2 >= 0.2\n"
                       "  - fairness.sex.mae_ratio >= 0.5\n  - robustness.linf.eps=0.1.error_increase <= 1000\n")
    failing.write_text(f"rules:\n  - performance.rmse <= {rmse * 0.5:.6f}\n")
    assert main(["gate", str(out), "--policy", str(passing)]) == 0
    assert main(["gate", str(out), "--policy", str(failing)]) == 1
    _dashboard(out, ["RMSE", "MAE", "R²", "Adversarial MAE (linf, eps 0.3)"])


def _dashboard(run: Path, cards: list[str]) -> None:
    """The dashboard shows the run's task cards, and its sample explorer says why it has no samples for it."""
    import sys

    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parents[1] / "app.py"
    argv = sys.argv
    try:
        sys.argv = ["app.py", str(run)]
        for view in ("overview", "samples"):
            at = AppTest.from_file(str(app), default_timeout=120)
            at.query_params["view"] = view
            at.run()
            assert not at.exception
            assert [m.label for m in at.metric][: len(cards)] == cards
        assert any("sample explorer shows a classifier" in i.value for i in at.info)
    finally:
        sys.argv = argv


def test_regression_without_task_names_model_task(tmp_path: Path, capsys: object) -> None:
    config = write_regression(tmp_path, task="auto", sections="  performance: {}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "config error at 'model.task'" in err and "347 classes" not in err.split("make")[0]
    assert "set model.task: regression" in err


def test_multilabel_end_to_end(tmp_path: Path) -> None:
    p = digits_multilabel_problem()
    torch.save(p.model.state_dict(), tmp_path / "weights.pt")
    p.frame.to_csv(tmp_path / "digits.csv", index=False)
    (tmp_path / "audit.yaml").write_text(
        "model:\n  factory: audit.zoo:tabular_mlp\n  kwargs: {in_features: 64, num_classes: 3, hidden: 32, "
        "dropout: 0.0}\n  weights: weights.pt\n"
        f"data:\n  source: csv\n  path: digits.csv\n  target: [{', '.join(p.target)}]\n"
        "sections:\n  performance: {}\n")
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "audit.yaml"), "--out", str(out)]) == 0
    results = load_results(out)
    assert results["manifest"]["data"]["task"] == "multilabel"
    assert "3 columns of 0/1 values" in results["manifest"]["data"]["task_reason"]
    m = results["sections"]["performance"]["metrics"]
    with torch.no_grad():
        pred = (torch.sigmoid(p.model(torch.as_tensor(p.x))) >= 0.5).long().numpy()
    assert abs(m["performance.micro_f1"] - skm.f1_score(p.y, pred, average="micro")) <= 1e-9
    assert "Subset accuracy" in (out / "report.html").read_text()
    _dashboard(out, ["Subset accuracy", "Micro F1", "Macro F1", "Hamming loss"])
