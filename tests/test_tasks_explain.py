"""Explanations of a regression model's predicted value (captum's target=0) and of each label of a multi-label model:
exact on a linear model, equal to captum called directly, deletion faithfulness against a random ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients
from test_tasks_performance import multilabel_context, regression_context
from test_tasks_robustness import W, linear_context

from explain.captum_methods import IntegratedGradientsExplainer
from explain.section import ExplanationsSection


def test_linear_regression_explanations_are_exact(tmp_path: Path) -> None:
    ctx = linear_context(tmp_path)
    result = ExplanationsSection(methods=["ig", "saliency", "lime"], n_samples=40, quality=["deletion"],
                                 bootstrap_resamples=200)(ctx)
    assert result.status == "ok", result.error
    assert any("lime explain class probabilities" in note for note in result.notes)
    table = next(t for t in result.tables if t.name == "importance")
    assert table.columns == ["feature", "ig", "saliency"]
    share = np.abs(W[0].numpy()) / float(W.abs().sum())  # saliency = |w| on every sample
    for row in table.rows:
        assert abs(row[2] - share[int(str(row[0])[1:])]) <= 1e-6
    m = result.metrics
    assert {"explanations.ig.deletion_auc", "explanations.saliency.faithfulness_rank"} <= set(m)
    assert not any("accuracy" in name for name in m)
    assert result.directions["explanations.ig.deletion_auc"] == "lower"


def test_regression_ig_equals_captum_with_target_zero(tmp_path: Path) -> None:
    ctx = regression_context(tmp_path)
    background = ctx.data.x[:32]
    explainer = IntegratedGradientsExplainer(ctx.model, background=background, modality="tabular", n_steps=16)
    x = ctx.data.x[40:60]
    ours = explainer.explain(x, np.zeros(len(x), np.int64))
    reference = torch.as_tensor(background.mean(axis=0)).expand(len(x), -1)
    theirs = IntegratedGradients(ctx.model.forward).attribute(torch.as_tensor(x), baselines=reference, target=0,
                                                              n_steps=16).double().numpy()
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
    # completeness: the attributions add up to the change of the predicted value from the baseline
    with torch.no_grad():
        gap = (ctx.model.forward(torch.as_tensor(x)) - ctx.model.forward(reference))[:, 0].double().numpy()
    assert np.allclose(ours.sum(axis=1), gap, rtol=0.05, atol=0.05 * np.abs(gap).max())


def test_multilabel_explains_every_label(tmp_path: Path) -> None:
    ctx = multilabel_context(tmp_path)
    result = ExplanationsSection(methods=["ig", "saliency"], n_samples=30, quality=["deletion"],
                                 bootstrap_resamples=200)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    for label in ("even", "five_or_more", "prime"):
        assert f"explanations.label={label}.ig.deletion_auc" in m
        assert f"explanations.label={label}.saliency.faithfulness_rank" in m
        assert any(t.name == f"faithfulness_{label}" for t in result.tables)
    # the label's logit through captum directly, target = the label's column
    background = ctx.data.x[:32]
    explainer = IntegratedGradientsExplainer(ctx.model, background=background, modality="tabular", n_steps=16)
    x = ctx.data.x[:10]
    ours = explainer.explain(x, np.full(len(x), 2, np.int64))
    reference = torch.as_tensor(background.mean(axis=0)).expand(len(x), -1)
    theirs = IntegratedGradients(ctx.model.forward).attribute(torch.as_tensor(x), baselines=reference, target=2,
                                                              n_steps=16).double().numpy()
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
