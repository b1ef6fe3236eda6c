"""Randomness keyed per sample: an input gets the same attributions alone, in any batch and at any position; the
libraries called directly on one row with that row's seed give the same values; sensitivity-max at a radius near
zero is near zero for every method."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from audit.model import Bounds, TorchModelAdapter
from explain.base import Explainer
from explain.captum_methods import (
    DeepLiftExplainer,
    GradientShapExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    SaliencyExplainer,
)
from explain.lime_methods import LimeExplainer, _no_progress_bar, grid_segments
from explain.lrp import LRPExplainer
from explain.quality import sensitivity_max
from explain.seeds import sample_seed
from explain.shap_methods import ShapDeepExplainer, ShapGradientExplainer, ShapKernelExplainer, import_shap

SEED = 5


ImageFactory = Callable[[TorchModelAdapter, np.ndarray], Explainer]
IMAGE_METHODS: dict[str, ImageFactory] = {
    "ig": lambda ad, bg: IntegratedGradientsExplainer(ad, n_steps=16, background=bg, seed=SEED, batch_size=4),
    "saliency": lambda ad, bg: SaliencyExplainer(ad, background=bg, seed=SEED, batch_size=4),
    "deeplift": lambda ad, bg: DeepLiftExplainer(ad, background=bg, seed=SEED, batch_size=4),
    "lrp": lambda ad, bg: LRPExplainer(ad, background=bg, seed=SEED, batch_size=4),
    "occlusion": lambda ad, bg: OcclusionExplainer(ad, background=bg, seed=SEED, batch_size=4),
    "shap_deep": lambda ad, bg: ShapDeepExplainer(ad, background=bg, seed=SEED, batch_size=4),
    "gradient_shap": lambda ad, bg: GradientShapExplainer(ad, n_samples=8, background=bg, seed=SEED, batch_size=4),
    "shap_gradient": lambda ad, bg: ShapGradientExplainer(ad, n_samples=8, background=bg, seed=SEED, batch_size=4),
    "shap_kernel": lambda ad, bg: ShapKernelExplainer(ad, n_samples=256, background=bg, seed=SEED, batch_size=4),
    "lime": lambda ad, bg: LimeExplainer(ad, n_samples=40, background=bg, seed=SEED, batch_size=4),
}
RANDOM_METHODS = ["gradient_shap", "shap_gradient", "shap_kernel", "lime"]


def close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal to float rounding: batched model evaluations of other sizes may round the last bit differently."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(float(np.abs(b).max()), 1e-12))


@pytest.fixture(scope="module")
def digits_setup(digits_cnn: Any, digits_test: Any) -> tuple[TorchModelAdapter, np.ndarray, np.ndarray, np.ndarray]:
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=Bounds(0.0, 1.0))
    x = digits_test.x[:7]
    return ad, x, ad.predict(x), digits_test.x[-16:]


@pytest.mark.parametrize("method", list(IMAGE_METHODS))
def test_same_attributions_alone_in_any_batch_at_any_position(method: str, digits_setup: Any,
                                                              digits_test: Any) -> None:
    ad, x, target, background = digits_setup
    ids = np.arange(300, 307)
    explainer = IMAGE_METHODS[method](ad, background)
    batch = explainer.explain(x, target, ids)
    alone = explainer.explain(x[5:6], target[5:6], ids[5:6])
    close(alone[0], batch[5])
    order = np.array([5, 3, 6, 0, 4, 1, 2])  # another position, in another batch of 4
    shuffled = explainer.explain(x[order], target[order], ids[order])
    for position, row in enumerate(order):
        close(shuffled[position], batch[row])
    others = digits_test.x[40:43]  # next to other inputs, from a fresh explainer
    mixed = IMAGE_METHODS[method](ad, background).explain(np.concatenate([others, x[5:6]]),
                                                          np.concatenate([ad.predict(others), target[5:6]]),
                                                          np.array([1, 2, 3, 305]))
    close(mixed[-1], batch[5])
    # without ids the input's values are its id: the same input is the same sample anywhere
    keyed = explainer.explain(x, target)
    close(explainer.explain(x[[6, 5]], target[[6, 5]])[1], keyed[5])
    if method in RANDOM_METHODS:  # the draws are the sample's own: another id draws differently
        other = explainer.explain(x[5:6], target[5:6], np.array([999]))
        assert np.abs(other[0] - batch[5]).max() > 1e-3 * np.abs(batch[5]).max()


def test_lime_tabular_and_kernel_shap_tabular_keyed_per_sample(cancer_mlp: Any, cancer_test: Any) -> None:
    ad = TorchModelAdapter.from_module(cancer_mlp, num_classes=2)
    x, background = cancer_test.x[:6], cancer_test.x[-40:]
    target = ad.predict(x)
    ids = np.arange(6)
    for explainer in (LimeExplainer(ad, n_samples=60, background=background, modality="tabular", seed=SEED,
                                    batch_size=4),
                      ShapKernelExplainer(ad, n_samples=128, background=background, modality="tabular", seed=SEED,
                                          batch_size=4)):
        batch = explainer.explain(x, target, ids)
        order = np.array([4, 0, 5, 2, 1, 3])
        close(explainer.explain(x[order], target[order], ids[order]), batch[order])
        close(explainer.explain(x[2:3], target[2:3], ids[2:3])[0], batch[2])


# -- the libraries called directly on one row, with that row's seed -------------------------------------------


def test_shap_called_directly_per_row_with_the_rows_seed(digits_setup: Any) -> None:
    ad, x, target, background = digits_setup
    shap = import_shap()
    ids = np.arange(20, 27)
    network = ad.network
    ours = ShapGradientExplainer(ad, n_samples=8, background=background, seed=SEED).explain(x, target, ids)
    direct = shap.GradientExplainer(network, torch.as_tensor(background), batch_size=8)
    for i, sample_id in enumerate(ids):
        values, _ = direct.shap_values(torch.as_tensor(x[i : i + 1]), nsamples=8, ranked_outputs=1,
                                       rseed=sample_seed(SEED, "shap_gradient", int(sample_id)))
        np.testing.assert_array_equal(ours[i], np.asarray(values)[0, ..., 0])
    # the library backend is shap called per row (the batched default: tests/test_explain_surrogates.py)
    kernel = ShapKernelExplainer(ad, n_samples=256, background=background, seed=SEED, n_background=10,
                                 backend="library")
    ours = kernel.explain(x[:3], target[:3], ids[:3])
    summary = shap.kmeans(background.reshape(len(background), -1).astype(np.float64), 10)
    direct_kernel = shap.KernelExplainer(lambda flat: ad.logits(flat.reshape(-1, 1, 8, 8)).numpy().astype(np.float64),
                                         summary)
    for i, sample_id in enumerate(ids[:3]):
        np.random.seed(sample_seed(SEED, "shap_kernel", int(sample_id)))
        values = direct_kernel.shap_values(x[i : i + 1].reshape(1, -1).astype(np.float64), nsamples=256, silent=True,
                                           l1_reg=False)
        np.testing.assert_allclose(ours[i].reshape(-1), np.asarray(values)[0, :, target[i]], rtol=1e-6, atol=1e-9)


def test_lime_called_directly_per_row_with_the_rows_seed(digits_setup: Any, cancer_mlp: Any,
                                                         cancer_test: Any) -> None:
    from lime.lime_image import LimeImageExplainer
    from lime.lime_tabular import LimeTabularExplainer

    ad, x, target, background = digits_setup
    ids = np.arange(50, 53)
    # the library backend is lime called per row (the batched default: tests/test_explain_surrogates.py)
    ours = LimeExplainer(ad, n_samples=50, background=background, seed=SEED, backend="library").explain(
        x[:3], target[:3], ids)
    labels = grid_segments(8, 8, 2)

    def proba(images: np.ndarray) -> np.ndarray:
        return ad.numpy_predict_proba(np.ascontiguousarray(np.moveaxis(images[..., :1], -1, 1), dtype=np.float32))

    for i, sample_id in enumerate(ids):
        seed = sample_seed(SEED, "lime", int(sample_id))
        with _no_progress_bar():
            exp = LimeImageExplainer(random_state=seed).explain_instance(
                x[i, 0].astype(np.float64), proba, labels=(int(target[i]),), top_labels=None, hide_color=0.0,
                num_features=10**6, num_samples=50, batch_size=50, segmentation_fn=lambda _img: labels,
                random_seed=seed)
        weights = dict(exp.local_exp[int(target[i])])
        sizes = np.bincount(labels.reshape(-1))
        expected = np.array([weights.get(s, 0.0) / sizes[s] for s in range(len(sizes))])[labels]
        np.testing.assert_array_equal(ours[i, 0], expected)
    tab = TorchModelAdapter.from_module(cancer_mlp, num_classes=2)
    rows, reference = cancer_test.x[:3], cancer_test.x[-40:]
    tab_target = tab.predict(rows)
    ours_tab = LimeExplainer(tab, n_samples=60, background=reference, modality="tabular", seed=SEED,
                             backend="library").explain(rows, tab_target, ids)
    for i, sample_id in enumerate(ids):
        direct = LimeTabularExplainer(reference, mode="classification", discretize_continuous=True,
                                      random_state=sample_seed(SEED, "lime", int(sample_id)))
        exp = direct.explain_instance(rows[i], tab.numpy_predict_proba, labels=(int(tab_target[i]),), top_labels=None,
                                      num_features=rows.shape[1], num_samples=60)
        expected = np.zeros(rows.shape[1])
        for feature, weight in exp.local_exp[int(tab_target[i])]:
            expected[feature] = weight
        np.testing.assert_array_equal(ours_tab[i], expected)


# -- sensitivity-max measures the input, not sampling noise ---------------------------------------------------


@pytest.mark.parametrize("method", list(IMAGE_METHODS))
def test_sensitivity_max_near_zero_radius_is_near_zero(method: str, digits_setup: Any) -> None:
    ad, x, target, background = digits_setup
    explainer = IMAGE_METHODS[method](ad, background)
    ids = np.arange(len(x))
    attr = explainer.explain(x, target, ids)
    tiny = sensitivity_max(explainer, x, target, attr, ids, radius=1e-9, n_perturb=3, seed=SEED, lower=0.0,
                           upper=1.0)
    assert tiny.max() < 0.01, tiny
    # the same metric at the section's default radius does move: the near-zero figure is not a constant
    normal = sensitivity_max(explainer, x, target, attr, ids, radius=0.02, n_perturb=3, seed=SEED, lower=0.0,
                             upper=1.0)
    assert normal.max() > 10 * max(tiny.max(), 1e-9)


def test_sensitivity_near_zero_on_tabular_lime_and_kernel_shap(cancer_mlp: Any, cancer_test: Any) -> None:
    ad = TorchModelAdapter.from_module(cancer_mlp, num_classes=2)
    x, background = cancer_test.x[:5], cancer_test.x[-40:]
    target, ids = ad.predict(x), np.arange(5)
    for explainer in (LimeExplainer(ad, n_samples=60, background=background, modality="tabular", seed=SEED),
                      ShapKernelExplainer(ad, n_samples=128, background=background, modality="tabular", seed=SEED)):
        attr = explainer.explain(x, target, ids)
        tiny = sensitivity_max(explainer, x, target, attr, ids, radius=1e-9, n_perturb=3, seed=SEED,
                               lower=cancer_test.lower, upper=cancer_test.upper)
        assert tiny.max() < 0.01, (explainer.method, tiny)


def test_sensitivity_max_equals_captum_with_the_same_perturbations(digits_setup: Any) -> None:
    """nnaudit's sensitivity-max (clean attributions reused, perturbations keyed per sample) is captum's metric
    given the same perturbations."""
    from captum.metrics import sensitivity_max as captum_sensitivity

    from explain.seeds import sample_rng

    ad, x, target, background = digits_setup
    explainer = GradientShapExplainer(ad, n_samples=8, background=background, seed=SEED)
    ids, n_perturb, radius = np.arange(len(x)), 3, 0.05
    attr = explainer.explain(x, target, ids)
    ours = sensitivity_max(explainer, x, target, attr, ids, radius=radius, n_perturb=n_perturb, seed=SEED)
    noise = np.concatenate([sample_rng(SEED, "sensitivity", int(i)).uniform(-radius, radius, (n_perturb, 1, 8, 8))
                            for i in ids])

    def perturb(inputs: torch.Tensor) -> torch.Tensor:  # captum repeats each row n_perturb times, in order
        return (inputs.double() + torch.as_tensor(noise)).float()

    def explain(inputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = inputs[0] if isinstance(inputs, tuple) else inputs  # captum passes the clean inputs as a tuple
        rows = ids if len(batch) == len(ids) else np.repeat(ids, n_perturb)
        return (torch.as_tensor(explainer.explain(batch.numpy(), target.numpy(), rows), dtype=torch.float32),)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = captum_sensitivity(explain, torch.as_tensor(x), perturb_func=perturb, n_perturb_samples=n_perturb,
                                    target=torch.as_tensor(target))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-6)
