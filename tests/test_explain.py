"""Explanations: exact answers on analytic models, captum/shap invariants, LRP robustness, quality metrics."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audit.model import Bounds, PredictFunctionAdapter, SelectOutput, TorchModelAdapter
from explain.base import Explainer, ExplainerError
from explain.captum_methods import (
    DeepLiftExplainer,
    GradientShapExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    SaliencyExplainer,
)
from explain.faithfulness import deletion_insertion
from explain.lime_methods import LimeExplainer, grid_segments
from explain.lrp import LRPExplainer, LRPRuleError
from explain.quality import rank_correlation, topk_overlap
from explain.randomization import randomized_adapter
from explain.section import ExplanationsSection
from explain.seeds import sample_seed
from explain.shap_methods import ShapDeepExplainer, ShapGradientExplainer, ShapKernelExplainer

UNIT = Bounds(0.0, 1.0)
DIGITS: dict[str, Any] = {"num_classes": 10, "bounds": UNIT}  # TorchModelAdapter.from_module
FAST = {"n_samples": 6, "background_size": 16, "infidelity_samples": 4, "sensitivity_samples": 2,
        "stability_samples": 6, "method_params": {"lime": {"n_samples": 40}, "shap_gradient": {"n_samples": 8},
                                                  "shap_deep": {"n_samples": 8}, "ig": {"n_steps": 16}}}


def outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


class FunctionalNet(nn.Module):
    """ReLU called as a function: shap's DeepExplainer cannot see it, so its additivity check fails."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1)) * 3.0))


# -- exact answers ----------------------------------------------------------------------------------------


def test_integrated_gradients_completeness(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x = digits_test.x[:16]
    target = ad.predict(x)
    attr = IntegratedGradientsExplainer(ad, n_steps=64).explain(x, target)
    logits = outputs(digits_cnn, x)[np.arange(16), target]
    base = outputs(digits_cnn, np.zeros_like(x))[np.arange(16), target]
    delta = logits - base
    assert np.all(np.abs(attr.reshape(16, -1).sum(axis=1) - delta) <= 0.01 * np.abs(delta))


def test_deep_explainer_sums_to_output_minus_expected_value(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x, background = digits_test.x[:10], digits_test.x[100:140]
    target = ad.predict(x)
    explainer = ShapDeepExplainer(ad, background=background)
    values = explainer.explain(x, target)
    assert explainer.fallback_reason is None
    expected = outputs(digits_cnn, background).mean(axis=0)
    out = outputs(digits_cnn, x)
    for t in (target, (target + 3) % 10):  # the predicted class and another one
        values = explainer.explain(x, t)
        gap = values.reshape(10, -1).sum(axis=1) - (out[np.arange(10), t] - expected[t])
        assert np.abs(gap).max() < 1e-3


def test_linear_model_attributions_are_weights_times_inputs(rng: np.random.Generator) -> None:
    linear = nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(rng.normal(size=(3, 5)), dtype=torch.float32))
    ad = TorchModelAdapter.from_module(linear, num_classes=3)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    target = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    w = linear.weight.detach().numpy()[target]
    zeros = np.zeros((4, 5), np.float32)  # background with mean zero: baseline 0 for every method
    common = {"background": zeros, "modality": "tabular"}
    for cls in (IntegratedGradientsExplainer, DeepLiftExplainer, LRPExplainer, OcclusionExplainer,
                GradientShapExplainer, ShapDeepExplainer):
        attr = cls(ad, **common).explain(x, target)
        np.testing.assert_allclose(attr, w * x, rtol=1e-4, atol=1e-5, err_msg=cls.method)
    np.testing.assert_allclose(SaliencyExplainer(ad, **common).explain(x, target), np.abs(w), rtol=1e-6)
    kernel = ShapKernelExplainer(ad, n_samples=64, **common).explain(x, target)
    np.testing.assert_allclose(kernel, w * x, rtol=1e-3, atol=1e-4)


# -- LRP --------------------------------------------------------------------------------------------------


def test_lrp_runs_on_cnn_with_flatten_and_leaves_model_usable(digits_cnn: Any, digits_test: Any) -> None:
    assert any(isinstance(m, nn.Flatten) for m in digits_cnn.modules())
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x = digits_test.x[:12]
    before = outputs(digits_cnn, x)
    state = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    target = ad.predict(x)
    explainer = LRPExplainer(ad)
    first = explainer.explain(x, target)
    second = explainer.explain(x, target)  # captum deletes rules after a call: they are assigned again
    np.testing.assert_allclose(first, second)
    assert np.abs(first).sum() > 0
    np.testing.assert_array_equal(outputs(digits_cnn, x), before)
    for key, value in digits_cnn.state_dict().items():
        assert torch.equal(value, state[key])
    assert not any(hasattr(m, "rule") for m in digits_cnn.modules())
    np.testing.assert_allclose(LRPExplainer(ad).explain(x, target), first)


def test_gradient_methods_agree_with_captum_called_per_row(digits_cnn: Any, digits_test: Any) -> None:
    """nnaudit hands captum one summed class score instead of ``target=`` (one backward pass, not one per row):
    the attributions must be captum's own, batch split included."""
    from captum.attr import LRP, GradientShap, IntegratedGradients, Saliency

    from explain.lrp import assign_rules

    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x, background = digits_test.x[:13], digits_test.x[-8:]
    target = ad.predict(x)
    xt, tt = torch.as_tensor(x).requires_grad_(True), torch.as_tensor(target)

    def check(ours: np.ndarray, theirs: torch.Tensor) -> None:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-4, atol=1e-5)

    check(SaliencyExplainer(ad, batch_size=5).explain(x, target), Saliency(digits_cnn).attribute(xt, target=tt))
    check(IntegratedGradientsExplainer(ad, batch_size=5, n_steps=12).explain(x, target),
          IntegratedGradients(digits_cnn).attribute(xt, baselines=torch.zeros_like(xt), target=tt, n_steps=12))
    # GradientShap's draws are keyed per row: captum called on each row alone, numpy and torch seeded with it
    for stdevs in (0.0, 0.05):
        ids = np.arange(40, 53)
        ours = GradientShapExplainer(ad, batch_size=5, n_samples=6, stdevs=stdevs, seed=3,
                                     background=background).explain(x, target, ids)
        for i, sample_id in enumerate(ids):
            np.random.seed(sample_seed(3, "gradient_shap", sample_id))
            torch.manual_seed(sample_seed(3, "gradient_shap", sample_id))
            check(ours[i : i + 1], GradientShap(digits_cnn).attribute(
                xt[i : i + 1], baselines=torch.as_tensor(background), target=tt[i : i + 1], n_samples=6,
                stdevs=stdevs))
    reference = copy.deepcopy(digits_cnn)
    assign_rules(reference)
    per_row = LRP(reference).attribute(xt, target=tt)
    check(LRPExplainer(ad, batch_size=5).explain(x, target), per_row)


def test_lrp_batch_whose_scores_sum_to_zero_takes_the_per_row_route(digits_test: Any) -> None:
    """LRP through the summed score divides by that sum; a batch where it is exactly zero goes per row."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.cat([torch.ones(1, 64), -torch.ones(1, 64)]))
    x = digits_test.x[:1]
    x = np.concatenate([x, x])  # scores s and -s: the sum is exactly 0
    target = np.array([0, 1])
    attr = LRPExplainer(TorchModelAdapter.from_module(model, num_classes=2, bounds=UNIT)).explain(x, target)
    flat = x.reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(attr.reshape(2, -1), np.stack([flat[0], -flat[1]]), rtol=1e-4, atol=1e-6)


def test_lrp_names_the_layer_without_a_rule_and_keeps_the_model(digits_test: Any) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 10)).eval()
    x = digits_test.x[:4]
    before = outputs(model, x)
    with pytest.raises(LRPRuleError, match=r"layer '2' \(LayerNorm\) of your model") as failed:
        # planned before any work
        LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=digits_test.x[:8])
    with pytest.raises(LRPRuleError, match=r"layer '2' \(LayerNorm\)"):
        # no background: at the first call
        LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS)).explain(x, np.zeros(4, np.int64))
    np.testing.assert_array_equal(outputs(model, x), before)
    assert not any(hasattr(m, "rule") for m in model.modules())
    # the hint is valid Python on the user's own model; following it lets LRP run
    assert failed.value.hint.splitlines()[-1] == "model[2].rule = IdentityRule()"
    exec(failed.value.hint, {"model": model})
    attr = LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=digits_test.x[:8]).explain(
        x, np.zeros(4, np.int64))
    assert attr.shape == x.shape and np.isfinite(attr).all() and np.abs(attr).sum() > 0
    # GELU and Identity get rules
    ok = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Identity(), nn.Dropout(0.2),
                       nn.Linear(16, 10)).eval()
    attr = LRPExplainer(TorchModelAdapter.from_module(ok, **DIGITS)).explain(x, np.zeros(4, np.int64))
    assert attr.shape == x.shape and np.isfinite(attr).all()


# -- black boxes, lime, shap fallback --------------------------------------------------------------------------


def test_gradient_methods_refuse_black_box_and_perturbation_methods_run(digits_cnn: Any, digits_test: Any) -> None:
    def predict(batch: np.ndarray) -> np.ndarray:
        return outputs(digits_cnn, batch.astype(np.float32))

    box = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                 bounds=Bounds(0.0, 1.0), device=torch.device("cpu"), batch_size=256,
                                 source="fn", sha256="0" * 64)
    for cls in (IntegratedGradientsExplainer, SaliencyExplainer, LRPExplainer, ShapGradientExplainer):
        with pytest.raises(ExplainerError, match=r"needs input gradients .* black box"):
            cls(box, background=digits_test.x[:8])
    x = digits_test.x[:3]
    target = box.predict(x)
    for explainer in (LimeExplainer(box, n_samples=30, background=digits_test.x[:8]),
                      ShapKernelExplainer(box, n_samples=128, background=digits_test.x[:8]),
                      OcclusionExplainer(box, background=digits_test.x[:8])):
        attr = explainer.explain(x, target)
        assert attr.shape == x.shape and np.abs(attr).sum() > 0
        assert explainer.counter.rows > 0


def test_lime_grid_segmentation_on_small_images(digits_cnn: Any, digits_test: Any) -> None:
    labels = grid_segments(8, 8, 2)
    assert len(np.unique(labels)) == 16
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    explainer = LimeExplainer(ad, n_samples=60, background=digits_test.x[:8])
    x = digits_test.x[:2]
    attr = explainer.explain(x, ad.predict(x))
    assert len(np.unique(attr[0])) > 1  # more than one segment
    assert explainer.counter.calls == 1  # the perturbations of both inputs in one model evaluation
    np.testing.assert_allclose(explainer.explain(x, ad.predict(x)), attr)  # seeded
    library = LimeExplainer(ad, n_samples=60, background=digits_test.x[:8], backend="library")
    library.explain(x, ad.predict(x))
    assert library.counter.calls == 2  # lime: one batched classifier_fn call per explanation


def test_deep_explainer_falls_back_per_sample(digits_test: Any) -> None:
    """The additivity check is made per sample: with a tolerance between the samples' gaps, the samples within it
    keep DeepExplainer's values and the others get GradientExplainer's, each the same as when explained alone
    (a check over the batch gave every sample of a batch with one miss the fallback)."""
    model = FunctionalNet().eval()
    ad = TorchModelAdapter.from_module(model, **DIGITS)
    x, background, ids = digits_test.x[:8], digits_test.x[100:116], np.arange(8)
    target = ad.predict(x)
    deep = ShapDeepExplainer(ad, background=background, tolerance=1e9).explain(x, target, ids)  # never falls back
    expected = np.asarray(ShapDeepExplainer(ad, background=background).expected_value)
    gaps = np.abs(outputs(model, x)[np.arange(8), target] - expected[target] - deep.reshape(8, -1).sum(axis=1))
    tolerance = float(np.median(gaps))
    kept = gaps <= tolerance
    assert kept.any() and not kept.all()

    def explainer() -> ShapDeepExplainer:
        return ShapDeepExplainer(ad, background=background, tolerance=tolerance, n_samples=8, seed=3)

    batch = explainer().explain(x, target, ids)
    scale = float(np.abs(batch).max())
    for i in range(8):
        alone = explainer().explain(x[i : i + 1], target[i : i + 1], ids[i : i + 1])
        np.testing.assert_allclose(batch[i], alone[0], rtol=1e-5, atol=1e-6 * scale, err_msg=str(i))
    np.testing.assert_allclose(batch[kept], deep[kept], rtol=1e-5, atol=1e-6 * scale)
    assert np.abs(batch[~kept] - deep[~kept]).max() > 0.01 * scale


def test_deep_explainer_fallback_records_a_finding(make_context: Any, digits_test: Any) -> None:
    ctx = make_context(FunctionalNet().eval(), digits_test, limit=40)
    result = ExplanationsSection(methods=["shap_deep"], quality=[], **{k: v for k, v in FAST.items()
                                                                       if k != "stability_samples"})(ctx)
    assert result.status == "ok", result.error
    codes = [f.code for f in result.findings]
    assert "explanations.shap_deep_fallback" in codes
    message = next(f.message for f in result.findings if f.code == "explanations.shap_deep_fallback")
    assert "additivity" in message and "GradientExplainer" in message
    assert ctx.attributions["shap_deep"].values.shape == (6, 1, 8, 8)


# -- quality -----------------------------------------------------------------------------------------------------


def test_deletion_auc_ig_beats_random_on_digits(digits_cnn: Any, digits_test: Any, rng: np.random.Generator) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x = digits_test.x[:30]
    target = ad.predict(x)
    attr = IntegratedGradientsExplainer(ad).explain(x, target)
    baseline = np.zeros(x.shape[1:], np.float32)
    ig = deletion_insertion(ad.numpy_predict_proba, x, attr, target, baseline)
    random = deletion_insertion(ad.numpy_predict_proba, x, rng.normal(size=x.shape), target, baseline)
    assert ig.deletion_auc < random.deletion_auc - 0.1
    assert ig.insertion_auc > random.insertion_auc + 0.1
    assert ig.deletion[:, 0].mean() == pytest.approx(ig.insertion[:, -1].mean())  # both ends are the clean input


class InputExplainer(Explainer):
    """An 'explanation' that ignores the model: the input itself (an edge detector would do the same)."""

    method = "input"
    needs_gradients = False

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return x.detach()


def test_randomization_check_tells_model_dependent_from_independent(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    random_ad = randomized_adapter(ad, seed=3)
    x = digits_test.x[:20]
    target = ad.predict(x)
    assert not np.allclose(outputs(random_ad.module, x), outputs(digits_cnn, x))
    ig = rank_correlation(IntegratedGradientsExplainer(ad).explain(x, target),
                          IntegratedGradientsExplainer(random_ad).explain(x, target), absolute=False)
    assert np.nanmean(ig) < 0.5  # 'passes': the explanation depends on the weights
    plain = rank_correlation(InputExplainer(ad).explain(x, target), InputExplainer(random_ad).explain(x, target),
                             absolute=False)
    assert np.nanmean(plain) == pytest.approx(1.0)  # 'fails': identical under random weights


def test_topk_overlap_and_rank_correlation_exact() -> None:
    a = np.array([[4.0, 3.0, 2.0, 1.0]])
    assert topk_overlap(a, a, 2)[0] == 1.0
    assert topk_overlap(a, a[:, ::-1], 2)[0] == 0.0
    assert rank_correlation(a, a[:, ::-1], absolute=False)[0] == pytest.approx(-1.0)
    assert rank_correlation(a, 2 * a)[0] == pytest.approx(1.0)
