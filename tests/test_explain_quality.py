"""Quality metrics: bounded memory with identical outputs, captum's metrics on the same perturbations, the cascading
randomization check and its sign-randomized control, bootstrap rankings, and the stability noise reference."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from audit.model import Bounds, TorchModelAdapter
from explain.captum_methods import IntegratedGradientsExplainer, OcclusionExplainer, SaliencyExplainer
from explain.faithfulness import deletion_baseline, deletion_insertion, informative, random_ordering
from explain.lime_methods import LimeExplainer
from explain.quality import infidelity, rank_correlation, sensitivity_max
from explain.randomization import (
    cascade_layers,
    cascade_steps,
    masked_rank_correlation,
    randomized_adapter,
    sign_randomized,
)
from explain.ranking import rank, resampled_means
from explain.seeds import sample_rng
from explain.shap_methods import ShapKernelExplainer
from explain.stability import matched_noise, perturbation_norms

TINY_MB = 0.05
UNIT = Bounds(0.0, 1.0)  # a budget that forces one-row and few-window chunks on 8x8 digits


class Rows:
    """Counts the largest number of rows one forward pass of the network saw."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.most = 0
        network.register_forward_hook(self._hook)

    def _hook(self, _m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _o: torch.Tensor) -> None:
        self.most = max(self.most, inputs[0].shape[0])


# -- bounded memory, identical outputs --------------------------------------------------------------------------


def test_occlusion_in_chunks_equals_captum_with_every_window_at_once(digits_cnn: Any, digits_test: Any) -> None:
    from captum.attr import Occlusion

    x = digits_test.x[:12]
    ad = TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), num_classes=10, bounds=UNIT)
    target = ad.predict(x)
    rows = Rows(ad.network)
    explainer = OcclusionExplainer(ad, memory_mb=TINY_MB, batch_size=12)
    ours = explainer.explain(x, target)
    budget = explainer.eval_rows(torch.as_tensor(x[:1]))
    assert rows.most <= budget < 49 * 12  # 49 windows of 2x2 on 8x8: the old single evaluation
    with torch.no_grad():
        theirs = Occlusion(digits_cnn).attribute(torch.as_tensor(x), sliding_window_shapes=(1, 2, 2),
                                                 strides=(1, 1, 1), baselines=0.0, target=torch.as_tensor(target),
                                                 perturbations_per_eval=49)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)  # float32 rounding of the logits


def test_feature_ablation_kernel_shap_and_lime_unchanged_by_the_budget(cancer_mlp: Any, cancer_test: Any,
                                                                       digits_cnn: Any, digits_test: Any) -> None:
    tab = TorchModelAdapter.from_module(cancer_mlp, num_classes=2)
    x, background = cancer_test.x[:6], cancer_test.x[-30:]
    target = tab.predict(x)
    rows = Rows(tab.network)
    for cls, extra in ((OcclusionExplainer, {}), (ShapKernelExplainer, {"n_samples": 128}),
                       (LimeExplainer, {"n_samples": 60})):
        common = {"background": background, "modality": "tabular", **extra}
        whole = cls(tab, **common).explain(x, target)
        rows.most = 0
        small = cls(tab, memory_mb=TINY_MB / 10, **common)
        np.testing.assert_allclose(small.explain(x, target), whole, rtol=1e-5, atol=1e-5, err_msg=cls.method)
        assert rows.most <= small.eval_rows(torch.as_tensor(x[:1])) < 60, cls.method  # it did split them
    img = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    xi = digits_test.x[:3]
    ti = img.predict(xi)
    whole = LimeExplainer(img, n_samples=60).explain(xi, ti)
    rows = Rows(img.network)
    small = LimeExplainer(img, n_samples=60, memory_mb=TINY_MB / 10, background=digits_test.x[-8:])
    np.testing.assert_allclose(small.explain(xi, ti), whole, rtol=1e-4, atol=1e-7)  # float32 logits
    assert rows.most <= small.eval_rows(torch.as_tensor(xi[:1])) < 60


def test_ig_unchanged_by_the_budget(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    x = digits_test.x[:10]
    target = ad.predict(x)
    np.testing.assert_allclose(IntegratedGradientsExplainer(ad, memory_mb=TINY_MB).explain(x, target),
                               IntegratedGradientsExplainer(ad).explain(x, target), rtol=1e-5, atol=1e-6)


def test_infidelity_equals_captum_on_the_same_perturbations_in_any_chunks(digits_cnn: Any, digits_test: Any) -> None:
    from captum.metrics import infidelity as captum_infidelity

    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    x = digits_test.x[:9]
    target = ad.predict(x)
    attr = SaliencyExplainer(ad).explain(x, target)
    ids = np.arange(9) + 70
    kwargs: dict[str, Any] = {"noise": 0.05, "n_perturb": 6, "seed": 3}
    ours = infidelity(ad, x, attr, target, ids, **kwargs)
    # Chunks change the batch sizes the model sees, and float32 kernels sum in a batch-dependent order: each
    # logit may move by a few ulps of the logit scale (delta). Infidelity is a mean squared difference of such
    # logit differences, so it moves by at most about 2 * sqrt(value) * delta (+ delta**2).
    delta = 16 * np.finfo(np.float32).eps * float(np.abs(ad.logits(torch.as_tensor(x)).detach().numpy()).max())
    atol = 2 * np.sqrt(ours) * delta + delta**2
    np.testing.assert_allclose(infidelity(ad, x, attr, target, ids, memory_mb=TINY_MB, **kwargs), ours,
                               rtol=0, atol=atol.max())
    assert delta < 1e-3 * ours.min() ** 0.5  # the tolerance is far below the values compared
    # one sample's value does not depend on the others
    np.testing.assert_allclose(infidelity(ad, x[4:5], attr[4:5], target[4:5], ids[4:5], **kwargs), ours[4:5],
                               rtol=0, atol=atol[4])
    draws = torch.as_tensor(np.concatenate([sample_rng(3, "infidelity", int(i)).standard_normal((6, 1, 8, 8))
                                            for i in ids]) * 0.05, dtype=torch.float32)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return draws, inputs - draws

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = captum_infidelity(lambda t: ad.logits(t), perturb, torch.as_tensor(x), torch.as_tensor(attr).float(),
                                   target=torch.as_tensor(target), n_perturb_samples=6, normalize=True)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=atol.max())


def test_sensitivity_and_deletion_unchanged_by_chunks(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    x = digits_test.x[:8]
    target, ids = ad.predict(x), np.arange(8)
    explainer = SaliencyExplainer(ad)
    attr = explainer.explain(x, target, ids)
    whole = sensitivity_max(explainer, x, target, attr, ids, radius=0.05, n_perturb=4, seed=1)
    np.testing.assert_allclose(sensitivity_max(explainer, x, target, attr, ids, radius=0.05, n_perturb=4, seed=1,
                                               memory_mb=1e-4), whole, rtol=1e-5)
    base = np.zeros(x.shape[1:], np.float32)
    one = deletion_insertion(ad.numpy_predict_proba, x, attr, target, base)
    chunked = deletion_insertion(ad.numpy_predict_proba, x, attr, target, base, rows=40)
    np.testing.assert_allclose(chunked.deletion, one.deletion, rtol=1e-6)
    np.testing.assert_allclose(chunked.insertion_aucs, one.insertion_aucs, rtol=1e-6)


# -- deletion baseline and the random reference -------------------------------------------------------------------


def test_mean_baseline_is_not_free_on_zero_pixels_and_random_order_starts_with_informative_features(
        digits_test: Any) -> None:
    x = digits_test.x[:20]
    mean = deletion_baseline("mean", x, data_mean=digits_test.x.mean(axis=0), fill=0.0, sigma=0.0,
                             modality="image")
    zero = deletion_baseline("lower", x, data_mean=digits_test.x.mean(axis=0), fill=0.0, sigma=0.0,
                             modality="image")
    assert informative(x, zero).mean() == pytest.approx((x != 0).mean())  # deleting zero pixels to 0 is free
    assert informative(x, mean).mean() > 0.85 > (x != 0).mean()
    blur = deletion_baseline("blur", x, data_mean=x.mean(axis=0), fill=0.0, sigma=1.0, modality="image")
    assert blur.shape == x.shape and np.abs(np.diff(blur, axis=3)).sum() < 0.7 * np.abs(np.diff(x, axis=3)).sum()
    scores = random_ordering(x, zero, np.arange(20), seed=0)
    flat, mask = scores.reshape(20, -1), informative(x, zero).reshape(20, -1)
    for row, keep in zip(flat, mask, strict=True):
        order = np.argsort(-row, kind="stable")
        assert keep[order[: keep.sum()]].all()  # every informative feature goes before any other
    np.testing.assert_array_equal(random_ordering(x[3:4], zero[3:4], np.array([3]), seed=0), scores[3:4])


# -- cascading randomization ------------------------------------------------------------------------------------


def test_cascade_randomizes_from_the_top_with_layer_keyed_weights(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    layers = cascade_layers(ad, digits_test.x[:1])
    assert layers == ["8", "6", "2", "0"]  # Linear out, Linear hidden, Conv, Conv: output layer first
    assert cascade_steps(layers, 5) == [1, 2, 3, 4] and cascade_steps(layers, 2) == [1, 4]
    top = randomized_adapter(ad, 9, layers[:1])
    two = randomized_adapter(ad, 9, layers[:2])
    def weight(model: torch.nn.Module, layer: str) -> torch.Tensor:
        out = model.get_submodule(layer).weight
        assert isinstance(out, torch.Tensor)
        return out

    assert torch.equal(weight(top.module, "8"), weight(two.module, "8"))  # same new weights at the next step
    assert not torch.equal(weight(top.module, "8"), weight(digits_cnn, "8"))
    assert torch.equal(weight(top.module, "6"), weight(digits_cnn, "6"))
    assert not torch.equal(weight(two.module, "6"), weight(digits_cnn, "6"))


def test_sign_randomized_control_fails_where_the_signed_check_would_pass(digits_cnn: Any, digits_test: Any) -> None:
    """Adebayo et al.: similarity of |attribution|. The control keeps IG's magnitudes and draws random signs: it
    does not depend on the model at all. Its signed Spearman is near 0 (the old check passed it); on |attribution|
    it is 1 (fails). IG itself after full randomization is well below."""
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=UNIT)
    x = digits_test.x[:20]
    target, ids = ad.predict(x), np.arange(20)
    ig = IntegratedGradientsExplainer(ad).explain(x, target, ids)
    mask = informative(x, np.zeros_like(x))
    control = sign_randomized(ig, ids, seed=0)
    assert np.abs(np.nanmean(rank_correlation(ig, control, absolute=False))) < 0.2
    np.testing.assert_allclose(masked_rank_correlation(ig, control, mask), 1.0)
    randomized = randomized_adapter(ad, 0, cascade_layers(ad, x))
    after = masked_rank_correlation(ig, IntegratedGradientsExplainer(randomized).explain(x, target, ids), mask)
    assert np.nanmean(after) < 0.6
    # on all pixels, the zero pixels (zero attribution under any weights) made the signed-abs check look similar
    assert np.nanmean(rank_correlation(ig, IntegratedGradientsExplainer(randomized).explain(x, target, ids))) > \
        np.nanmean(after)


def test_masked_rank_correlation_exact() -> None:
    a = np.array([[4.0, -3.0, 2.0, 1.0, 9.0]])
    b = np.array([[1.0, 2.0, 3.0, -4.0, 0.0]])
    keep = np.array([[True, True, True, True, False]])
    assert masked_rank_correlation(a, b, keep)[0] == pytest.approx(-1.0)
    assert np.isnan(masked_rank_correlation(a, b, np.array([[True, True, False, False, False]]))[0])


# -- bootstrap rankings -------------------------------------------------------------------------------------------


def test_resampled_means_match_a_plain_loop_and_skip_nan() -> None:
    values = np.array([[1.0, 2.0, np.nan, 4.0], [0.5, 0.5, 0.5, 0.5]])
    out = resampled_means(values, n_resamples=50, seed=4)
    from explain.seeds import sample_seed

    rng = np.random.default_rng(sample_seed(4, "bootstrap", 0))
    index = rng.integers(0, 4, size=(50, 4))
    for b in range(50):
        picked = values[0, index[b]]
        expected = np.nanmean(picked) if np.isfinite(picked).any() else np.nan
        assert out[0, b] == pytest.approx(expected, nan_ok=True)
    np.testing.assert_allclose(out[1], 0.5)


def test_ranking_ties_where_the_paired_interval_spans_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    scores = {"a": base, "b": base + rng.normal(0, 0.01, 60), "c": base + 0.05, "d": base + 0.3}
    ranking = rank(scores, lower_is_better=True, n_resamples=1000, seed=0)
    assert ranking.ranks == {"a": 1, "b": 1, "c": 3, "d": 4}
    assert ranking.tied_with("a") == ["b"] and ranking.difference("a", "b").spans_zero
    diff = ranking.difference("c", "a")
    assert diff.mean == pytest.approx(0.05) and diff.low == pytest.approx(0.05) and diff.high == pytest.approx(0.05)
    # the unpaired intervals overlap although the paired difference is certain
    assert ranking.estimates["c"].low < ranking.estimates["a"].high
    higher = rank(scores, lower_is_better=False, n_resamples=200, seed=0)
    assert higher.order[:2] == ["d", "c"] and higher.ranks["d"] == 1 and higher.ranks["a"] == 3


# -- stability: noise of the attack's size -------------------------------------------------------------------------


def test_matched_noise_has_each_samples_attack_size_in_the_threat_norm(digits_test: Any) -> None:
    x = digits_test.x[:10].astype(np.float32)
    rng = np.random.default_rng(0)
    sizes = np.linspace(0.05, 0.2, 10)
    attack = np.clip(x + np.sign(rng.normal(size=x.shape)) * sizes[:, None, None, None], 0, 1).astype(np.float32)
    ids = np.arange(10)
    noisy = matched_noise(x, attack, "linf", ids, 0, 0.0, 1.0)
    attack_linf, attack_l2 = perturbation_norms(attack - x)
    noise_linf, noise_l2 = perturbation_norms(noisy - x)
    np.testing.assert_allclose(noise_linf, attack_linf, rtol=1e-5)
    assert (noisy >= 0).all() and (noisy <= 1).all()
    np.testing.assert_allclose(noise_l2, attack_l2, rtol=0.05)  # as many features moved: L2 matched too
    # uniform noise in the ball falls short in L2
    uniform = np.clip(x + rng.uniform(-1, 1, x.shape) * sizes[:, None, None, None], 0, 1) - x
    assert perturbation_norms(uniform)[1].mean() < 0.75 * attack_l2.mean()
    l2_attack = np.clip(x + rng.normal(size=x.shape) * 0.05, 0, 1).astype(np.float32)
    l2_noise = matched_noise(x, l2_attack, "l2", ids, 0, 0.0, 1.0)
    np.testing.assert_allclose(perturbation_norms(l2_noise - x)[1], perturbation_norms(l2_attack - x)[1], rtol=1e-4)
    mask = np.zeros((1, 8, 8), bool)
    mask[:, :4] = True
    masked = matched_noise(x, attack, "linf", ids, 0, 0.0, 1.0, mask) - x
    assert (masked[:, ~mask] == 0).all() and np.abs(masked[:, mask]).max() > 0
    np.testing.assert_array_equal(matched_noise(x[4:5], attack[4:5], "linf", ids[4:5], 0, 0.0, 1.0), noisy[4:5])
