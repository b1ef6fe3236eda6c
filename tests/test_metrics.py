"""performance and imbalance sections: values equal scikit-learn's on the same predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from audit.performance import ImbalanceSection, PerformanceSection, expected_calibration_error


def _run(plugin: Any, ctx: Any) -> Any:
    result = plugin(ctx)
    assert result.status == "ok", result.error
    return result


def test_performance_matches_sklearn(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test)
    result = _run(PerformanceSection(top_k=3), ctx)
    y, pred, proba = digits_test.y, ctx.clean_predictions(), ctx.clean_probabilities()
    m = result.metrics
    assert m["performance.accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["performance.loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-9)
    assert m["performance.top3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, proba, k=3), abs=1e-12)
    assert m["performance.accuracy"] > 0.9
    matrix = np.array([row[1:] for row in result.tables[0].rows])
    assert np.array_equal(matrix, skm.confusion_matrix(y, pred))
    assert not any(f.code == "performance.no_better_than_majority" for f in result.findings)


def test_class_weighted_model_below_majority_is_not_called_useless(resume_mlp: Any, resume_test: Any,
                                                                   make_context: Any) -> None:
    result = _run(PerformanceSection(), make_context(resume_mlp, resume_test))
    codes = {f.code: f.severity for f in result.findings}
    assert result.metrics["performance.accuracy"] < result.metrics["performance.majority_baseline_accuracy"]
    assert codes == {"performance.below_majority_baseline": "low"}


def test_imbalance_matches_sklearn_multiclass(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test)
    m = _run(ImbalanceSection(), ctx).metrics
    y, pred, proba = digits_test.y, ctx.clean_predictions(), ctx.clean_probabilities()
    assert m["imbalance.balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["imbalance.macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert m["imbalance.weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    assert m["imbalance.mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    assert m["imbalance.roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-9)
    onehot = np.eye(10)[y]
    assert m["imbalance.pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba), abs=1e-9)
    recall = skm.recall_score(y, pred, average=None)
    assert m["imbalance.class=3.recall"] == pytest.approx(recall[3], abs=1e-12)
    counts = np.bincount(y)
    assert m["imbalance.imbalance_ratio"] == pytest.approx(counts.max() / counts.min())


def test_imbalance_binary_and_findings(cancer_mlp: Any, cancer_test: Any, make_context: Any) -> None:
    ctx = make_context(cancer_mlp, cancer_test)
    result = _run(ImbalanceSection(), ctx)
    y, proba = cancer_test.y, ctx.clean_probabilities()
    assert result.metrics["imbalance.roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert result.metrics["imbalance.pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]), abs=1e-12)


def test_constant_model_is_flagged(digits_test: Any, make_context: Any) -> None:
    import torch
    from torch import nn

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), 10)
            out[:, 3] = 5.0
            return out

    ctx = make_context(Constant(), digits_test)
    perf = _run(PerformanceSection(), ctx)
    assert any(f.code == "performance.no_better_than_majority" and f.severity == "high" for f in perf.findings)
    imb = _run(ImbalanceSection(), ctx)
    assert any(f.code == "imbalance.never_predicted" for f in imb.findings)
    assert imb.metrics["imbalance.balanced_accuracy"] == pytest.approx(0.1)


def _ece_reference(proba: np.ndarray, y: np.ndarray, bins: int) -> float:
    conf, pred = proba.max(1), proba.argmax(1)
    total = 0.0
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        mask = (conf > low) & (conf <= high) if i else (conf >= low) & (conf <= high)
        if mask.any():
            total += mask.sum() / len(y) * abs((pred[mask] == y[mask]).mean() - conf[mask].mean())
    return total


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.integers(2, 6), st.integers(2, 20), st.integers(0, 10_000))
def test_ece_matches_a_plain_loop(n: int, k: int, bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 5)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, k, n)
    ece, rows = expected_calibration_error(proba, y, bins)
    assert ece == pytest.approx(_ece_reference(proba, y, bins), abs=1e-12)
    assert sum(r[2] for r in rows) == n and 0 <= ece <= 1


def test_ece_zero_for_perfectly_calibrated_bins() -> None:
    proba = np.tile([[0.75, 0.25]], (8, 1))
    y = np.array([0, 0, 0, 1, 0, 0, 0, 1])  # 75% correct at confidence 0.75
    assert expected_calibration_error(proba, y, 10)[0] == pytest.approx(0.0, abs=1e-12)
