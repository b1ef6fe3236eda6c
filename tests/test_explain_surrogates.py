"""lime and KernelSHAP batched across samples (``backend="batched"``, the default) against the libraries called
directly per row with the row's seed, the samplers against the libraries' own draws, the batched solves against
scikit-learn and against themselves one sample at a time, and the ``method_params`` switch to the libraries.

Tolerances. Where the two paths must see the same model outputs, the network (its trained weights) computes in
float64 and rounds its outputs once to float32 (``InFloat64``): in float32 a CPU convolution or matrix product
over a lone row rounds differently from the same row inside a batch (by up to 4e-6 on logits of 20 on the digits
CNN), and the library evaluates rows in other groupings than the batched path. With the same model outputs what
is left is float64 rounding in different orders (scikit-learn's ridge on rescaled rows vs a batched Cholesky;
shap's ``np.linalg.solve`` and its sequential sums vs batched ones; scipy's truncated-normal inverse CDF in log
space vs ours in linear space): a few ulps amplified by the condition number of the normal equations (lime's
ridge: at most 1 + n * d; KernelSHAP's at 256 coalitions of up to 64 features: below 1.3e3). ``1e-9`` of the
largest attribution bounds that with room; the measured differences are below 1e-13 of it.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audit.model import Bounds, TorchModelAdapter
from explain.lime_methods import LimeExplainer, _no_progress_bar, grid_segments
from explain.seeds import sample_seed
from explain.shap_methods import ShapKernelExplainer, import_shap
from explain.surrogates import kernel_coalitions, kernel_shap_solve, weighted_ridge

SEED = 11
RELATIVE = 1e-9  # float64 rounding in another order, amplified by the systems' conditioning (module docstring)


class InFloat64(nn.Module):
    """The network computed in float64, its outputs rounded once to float32: a row's output no longer depends on
    the rows evaluated beside it (their float64 rounding differences, ~1e-16, vanish in the rounding to float32)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.double()).float()


def equal(ours: np.ndarray, reference: np.ndarray) -> None:
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(ours, reference, rtol=0, atol=RELATIVE * np.abs(reference).max())


def proba(ad: TorchModelAdapter, shape: tuple[int, ...]) -> Any:
    return lambda rows: ad.numpy_predict_proba(np.asarray(rows, np.float32).reshape((-1, *shape)))


# -- against the libraries called directly ------------------------------------------------------------------


def test_batched_lime_equals_lime_called_directly(digits_cnn: Any, digits_test: Any, cancer_mlp: Any,
                                                  cancer_test: Any) -> None:
    from lime.lime_image import LimeImageExplainer
    from lime.lime_tabular import LimeTabularExplainer

    ad = TorchModelAdapter.from_module(InFloat64(digits_cnn), num_classes=10, bounds=Bounds(0.0, 1.0))
    x, ids = digits_test.x[:4], np.array([3, 40, 41, 99])
    target = ad.predict(x)
    ours = LimeExplainer(ad, n_samples=60, seed=SEED).explain(x, target, ids)
    labels = grid_segments(8, 8, 2)

    def images(batch: np.ndarray) -> np.ndarray:
        return ad.numpy_predict_proba(np.ascontiguousarray(np.moveaxis(batch[..., :1], -1, 1), dtype=np.float32))

    for i, sample_id in enumerate(ids):
        seed = sample_seed(SEED, "lime", int(sample_id))
        with _no_progress_bar():
            exp = LimeImageExplainer(random_state=seed).explain_instance(
                x[i, 0].astype(np.float64), images, labels=(int(target[i]),), top_labels=None, hide_color=0.0,
                num_features=10**6, num_samples=60, batch_size=60, segmentation_fn=lambda _img: labels,
                random_seed=seed)
        weights = dict(exp.local_exp[int(target[i])])
        sizes = np.bincount(labels.reshape(-1))
        equal(ours[i, 0], np.array([weights[s] / sizes[s] for s in range(len(sizes))])[labels])

    tab = TorchModelAdapter.from_module(InFloat64(cancer_mlp), num_classes=2)
    rows, background = cancer_test.x[:4], cancer_test.x[-40:]
    tab_target = tab.predict(rows)
    ours_tab = LimeExplainer(tab, n_samples=300, background=background, modality="tabular", seed=SEED).explain(
        rows, tab_target, ids)
    for i, sample_id in enumerate(ids):
        direct = LimeTabularExplainer(background, mode="classification", discretize_continuous=True,
                                      random_state=sample_seed(SEED, "lime", int(sample_id)))
        exp = direct.explain_instance(rows[i], proba(tab, rows.shape[1:]), labels=(int(tab_target[i]),),
                                      top_labels=None, num_features=rows.shape[1], num_samples=300)
        expected = np.zeros(rows.shape[1])
        for feature, weight in exp.local_exp[int(tab_target[i])]:
            expected[feature] = weight
        equal(ours_tab[i], expected)


def test_batched_lime_tabular_with_bins_without_width(resume_test: Any) -> None:
    """ResumeNames' one-hot columns give quartile bins whose bounds coincide: lime writes the bin's lower bound in
    standard units there and draws nothing for it, and a row's own bin can be one no background row fills."""
    from lime.lime_tabular import LimeTabularExplainer

    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(resume_test.x.shape[1], 16), nn.Tanh(), nn.Linear(16, 2))
    ad = TorchModelAdapter.from_module(InFloat64(network), num_classes=2)
    rows, background, ids = resume_test.x[:5], resume_test.x[-32:], np.arange(5)
    target = ad.predict(rows)
    explainer = LimeExplainer(ad, n_samples=200, background=background, modality="tabular", seed=SEED)
    neighbourhood_equal_bins = None
    ours = explainer.explain(rows, target, ids)
    neighbourhood_equal_bins = explainer._neighbourhood.equal & (explainer._neighbourhood.labels >= 0)
    assert neighbourhood_equal_bins.sum() >= 10  # the case this test is about
    for i, sample_id in enumerate(ids):
        direct = LimeTabularExplainer(background, mode="classification", discretize_continuous=True,
                                      random_state=sample_seed(SEED, "lime", int(sample_id)))
        exp = direct.explain_instance(rows[i], proba(ad, rows.shape[1:]), labels=(int(target[i]),),
                                      top_labels=None, num_features=rows.shape[1], num_samples=200)
        expected = np.zeros(rows.shape[1])
        for feature, weight in exp.local_exp[int(target[i])]:
            expected[feature] = weight
        equal(ours[i], expected)


def test_batched_lime_quickshift_with_other_segment_counts_per_image() -> None:
    """Three-channel images whose quickshift segmentations have different numbers of segments in one batch: the
    surrogates of all of them in one padded solve equal lime's, image by image."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    ad = TorchModelAdapter.from_module(InFloat64(network), num_classes=5, bounds=Bounds(0.0, 1.0))
    rng = np.random.default_rng(0)
    x = np.kron(rng.random((3, 3, 4, 4)), np.ones((1, 1, 8, 8))) + 0.05 * rng.random((3, 3, 32, 32))
    x[1] = 0.5
    x[2, :, :16] = 0.2
    x = np.clip(x, 0, 1).astype(np.float32)
    target, ids = ad.predict(x), np.arange(3)
    batched = LimeExplainer(ad, n_samples=50, segmentation="quickshift", seed=SEED)
    ours = batched.explain(x, target, ids)
    counts = {len(np.unique(batched._image_segments(row.astype(np.float64), 1))) for row in x}
    assert len(counts) == 3  # the case this test is about
    library = LimeExplainer(ad, n_samples=50, segmentation="quickshift", seed=SEED, backend="library")
    equal(ours, library.explain(x, target, ids))  # the library backend is lime called directly (test below)


def test_batched_kernel_shap_equals_shap_called_directly(digits_cnn: Any, digits_test: Any, cancer_mlp: Any,
                                                         cancer_test: Any) -> None:
    shap = import_shap()
    image = TorchModelAdapter.from_module(InFloat64(digits_cnn), num_classes=10, bounds=Bounds(0.0, 1.0))
    tabular = TorchModelAdapter.from_module(InFloat64(cancer_mlp), num_classes=2)
    cases = [(image, digits_test.x[:3], digits_test.x[-16:], "image"),
             (tabular, cancer_test.x[:3], cancer_test.x[-40:], "tabular")]
    for ad, x, background, modality in cases:
        ids = np.array([7, 8, 300])
        target = ad.predict(x)
        ours = ShapKernelExplainer(ad, n_samples=256, background=background, modality=modality, seed=SEED,
                                   n_background=10).explain(x, target, ids)
        flat = background.reshape(len(background), -1).astype(np.float64)
        direct = shap.KernelExplainer(
            lambda rows, ad=ad, shape=x.shape[1:]: ad.logits(rows.reshape(-1, *shape)).numpy().astype(np.float64),
            shap.kmeans(flat, 10))
        for i, sample_id in enumerate(ids):
            np.random.seed(sample_seed(SEED, "shap_kernel", int(sample_id)))
            values = direct.shap_values(x[i : i + 1].reshape(1, -1).astype(np.float64), nsamples=256, silent=True,
                                        l1_reg=False)
            equal(ours[i].reshape(-1), np.asarray(values)[0, :, target[i]])


# -- the pieces ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "nsamples", "seed"), [(5, 256, 0), (12, 200, 1), (30, 256, 2), (64, 256, 3),
                                                     (64, 2048, 4), (9, 40, 5)])
def test_coalitions_are_the_ones_shap_draws(m: int, nsamples: int, seed: int) -> None:
    """The masks and kernel weights shap's KernelExplainer builds for a sample with ``m`` varying features, read
    off the explainer after a call, equal ``kernel_coalitions`` exactly: full enumeration of the small subset
    sizes (all of them at m=5: 30 coalitions), paired draws with repeats adding weight (m=9, 40 coalitions)."""
    shap = import_shap()
    explainer = shap.KernelExplainer(lambda rows: rows.sum(axis=1, keepdims=True), np.zeros((1, m)))
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer.shap_values(np.ones((1, m)), nsamples=nsamples, silent=True, l1_reg=False)
    drawn = kernel_coalitions(m, nsamples, np.random.RandomState(seed))
    added = explainer.nsamplesAdded
    np.testing.assert_array_equal(drawn.masks, explainer.maskMatrix[:added])
    np.testing.assert_array_equal(drawn.weights, explainer.kernelWeights[:added])
    if (m, nsamples) == (9, 40):
        assert drawn.weights.max() > drawn.weights[drawn.weights > 0].min() * 1.5  # a repeat did add weight


def test_weighted_ridge_is_scikit_learns_ridge() -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = (rng.random((3, 80, 6)) < 0.5).astype(np.float64)
    x[2, :, 4] = 0.0  # a column without variation: its coefficient is 0, the others as without it
    y, w = rng.random((3, 80)), rng.random((3, 80))
    coef, intercept = weighted_ridge(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(w))
    for b in range(3):
        reference = Ridge(alpha=1.0, fit_intercept=True).fit(x[b], y[b], sample_weight=w[b])
        np.testing.assert_allclose(coef[b].numpy(), reference.coef_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(float(intercept[b]), reference.intercept_, rtol=0, atol=1e-12)


def test_kernel_shap_solve_in_a_padded_batch_equals_each_alone() -> None:
    """Samples with different numbers of varying features and coalitions solved together (padded) give what
    each gives alone; the values sum to the gap (shap's efficiency constraint)."""
    rng = np.random.default_rng(1)
    problems = []
    for m, count in ((4, 14), (9, 60), (6, 40)):
        drawn = kernel_coalitions(m, count, np.random.RandomState(m))
        problems.append((drawn, rng.normal(size=len(drawn.weights)), float(rng.normal())))
    width, rows = max(p[0].masks.shape[1] for p in problems), max(len(p[0].weights) for p in problems)

    def solve(group: list[Any]) -> np.ndarray:
        masks = torch.zeros((len(group), rows, width), dtype=torch.float64)
        weights = torch.zeros((len(group), rows), dtype=torch.float64)
        values = torch.zeros((len(group), rows), dtype=torch.float64)
        for j, (drawn, v, _) in enumerate(group):
            s, k = drawn.masks.shape
            masks[j, :s, :k], weights[j, :s], values[j, :s] = (torch.as_tensor(drawn.masks),
                                                                torch.as_tensor(drawn.weights), torch.as_tensor(v))
        gap = torch.as_tensor([g for _, _, g in group], dtype=torch.float64)
        m = torch.as_tensor([p[0].masks.shape[1] for p in group])
        phi, singular = kernel_shap_solve(masks, weights, values, gap, m)
        assert not singular.any()
        return phi.numpy()

    together = solve(problems)
    for j, problem in enumerate(problems):
        alone = solve([problem])[0]
        np.testing.assert_allclose(together[j], alone, rtol=0, atol=1e-12)
        k = problem[0].masks.shape[1]
        assert together[j, k:].tolist() == [0.0] * (width - k)
        assert together[j].sum() == pytest.approx(problem[2], abs=1e-12)


# -- the switch ------------------------------------------------------------------------------------------------


def test_method_params_backend_library_calls_the_libraries(make_context: Any, cancer_mlp: Any, cancer_test: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from lime.lime_tabular import LimeTabularExplainer

    from explain.section import ExplanationsSection

    shap = import_shap()
    calls = {"lime": 0, "shap_kernel": 0}
    lime_call, shap_call = LimeTabularExplainer.explain_instance, shap.KernelExplainer.shap_values

    def lime_spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["lime"] += 1
        return lime_call(self, *args, **kwargs)

    def shap_spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["shap_kernel"] += 1
        return shap_call(self, *args, **kwargs)

    monkeypatch.setattr(LimeTabularExplainer, "explain_instance", lime_spy)
    monkeypatch.setattr(shap.KernelExplainer, "shap_values", shap_spy)
    settings: dict[str, Any] = {"methods": ["lime", "shap_kernel"], "quality": ["deletion"], "n_samples": 4,
                                "background_size": 16, "bootstrap_resamples": 100, "stability": False}
    values = {}
    for backend in ("batched", "library"):
        ctx = make_context(cancer_mlp, cancer_test, limit=40)
        params: dict[str, dict[str, Any]] = {"lime": {"n_samples": 60}, "shap_kernel": {"n_samples": 128}}
        if backend == "library":
            params = {method: {**kept, "backend": "library"} for method, kept in params.items()}
        result = ExplanationsSection(**settings, method_params=params)(ctx)
        assert result.status == "ok", result.error
        values[backend] = {m: ctx.attributions[m].values for m in ("lime", "shap_kernel")}
        assert calls == ({"lime": 0, "shap_kernel": 0} if backend == "batched" else {"lime": 4, "shap_kernel": 4})
    for method in ("lime", "shap_kernel"):  # the same values, but for the float32 rounding of the model's outputs
        reference = values["library"][method]  # over other groupings of rows (the determinism tests' tolerance)
        np.testing.assert_allclose(values["batched"][method], reference, rtol=1e-5,
                                   atol=1e-6 * np.abs(reference).max())
    bad = ExplanationsSection(methods=["lime"], quality=["deletion"], n_samples=4,
                              method_params={"lime": {"backend": "sklearn"}})(make_context(cancer_mlp, cancer_test,
                                                                                           limit=40))
    assert bad.status == "error"
    assert "sections.explanations.method_params.lime" in bad.error["message"]
    assert "batched, library" in bad.error["message"]
