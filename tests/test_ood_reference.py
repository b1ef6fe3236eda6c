"""Cross-checks of the ood section's computing: the metrics against scikit-learn's on the same scores, the
detector scores against pytorch-ood's on the same inputs and model, and temperature scaling."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from audit.shift.ood import (
    FeatureTap,
    fit_mahalanobis,
    knn_scores,
    logit_scores,
    normalize,
    odin_scores,
    train_autoencoder,
)
from audit.shift.ood_metrics import confident_share, detection_metrics

pytorch_ood = pytest.importorskip("pytorch_ood.detector")


def _score_sets(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0.0, 1.0, 300)
    s_out = rng.normal(1.0, 1.5, 170)
    if ties:  # many exact ties, inside and across the two sets
        s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
    return s_in, s_out


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True), (3, False)])
def test_metrics_equal_scikit_learn(seed: int, ties: bool) -> None:
    s_in, s_out = _score_sets(seed, ties)
    found = detection_metrics(s_in, s_out)
    is_in = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scores = np.r_[s_in, s_out]  # outlier scores: higher = more OOD
    assert found.auroc == pytest.approx(roc_auc_score(1 - is_in, scores), abs=1e-12)
    assert found.aupr_in == pytest.approx(average_precision_score(is_in, -scores), abs=1e-12)
    assert found.aupr_out == pytest.approx(average_precision_score(1 - is_in, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(is_in, -scores, drop_intermediate=False)
    assert found.fpr_at_95_tpr == fpr[np.searchsorted(tpr, 0.95, side="left")]
    assert 0 <= found.fpr_at_95_tpr <= 1


def test_metrics_extremes_and_confident_share() -> None:
    s_in = np.arange(10.0)
    perfect = detection_metrics(s_in, s_in + 100)
    assert (perfect.auroc, perfect.aupr_in, perfect.aupr_out, perfect.fpr_at_95_tpr) == (1.0, 1.0, 1.0, 0.0)
    reversed_ = detection_metrics(s_in + 100, s_in)
    assert reversed_.auroc == 0.0 and reversed_.fpr_at_95_tpr == 1.0
    assert confident_share(np.array([0.1, 0.5, 0.9]), np.array([0.4, 0.6, 0.95, 0.2])) == 0.5
    with pytest.raises(ValueError, match="finite"):
        detection_metrics(s_in, np.array([np.nan]))


@pytest.fixture(scope="module")
def digits_batch(digits_test: Any) -> torch.Tensor:
    return torch.as_tensor(digits_test.x[:96], dtype=torch.float32)


def test_logit_detectors_equal_pytorch_ood(digits_cnn: Any, digits_batch: torch.Tensor) -> None:
    with torch.no_grad():
        logits = digits_cnn(digits_batch)
    ours = logit_scores(logits, energy_temperature=2.0)
    det = pytorch_ood
    for name, reference in (("msp", det.MaxSoftmax(digits_cnn)), ("max_logit", det.MaxLogit(digits_cnn)),
                            ("energy", det.EnergyBased(digits_cnn, t=2.0))):
        expected = reference.predict(digits_batch).double()
        torch.testing.assert_close(ours[name], expected, rtol=1e-6, atol=1e-6, msg=name)


def test_odin_equals_pytorch_ood(digits_cnn: Any, digits_batch: torch.Tensor) -> None:
    for temperature, eps in ((1000.0, 0.0014), (10.0, 0.01)):
        expected = pytorch_ood.ODIN(digits_cnn, eps=eps, temperature=temperature).predict(digits_batch)
        found = odin_scores(digits_cnn, digits_batch, temperature=temperature, eps=eps)
        torch.testing.assert_close(found, expected.double(), rtol=1e-5, atol=1e-6)
    # the step moves the scores: not the plain softmax at T
    plain = odin_scores(digits_cnn, digits_batch, temperature=10.0, eps=0.0)
    assert not torch.allclose(plain, found)


def _penultimate(cnn: Any, x: torch.Tensor) -> torch.Tensor:
    tap = FeatureTap(cnn, cnn, "8", input_of=True)  # the input of the last Linear
    return tap(x)[1]


def test_feature_tap_gives_the_penultimate_layer(digits_cnn: Any, digits_batch: torch.Tensor) -> None:
    with torch.no_grad():
        expected = digits_cnn[:-1](digits_batch).double()
    torch.testing.assert_close(_penultimate(digits_cnn, digits_batch), expected)
    maps = FeatureTap(digits_cnn, digits_cnn, "2", input_of=False)(digits_batch)[1]  # conv maps -> spatial mean
    with torch.no_grad():
        torch.testing.assert_close(maps, digits_cnn[:3](digits_batch).mean(dim=(2, 3)).double())


def test_mahalanobis_equals_pytorch_ood(digits_cnn: Any, digits_train: Any, digits_batch: torch.Tensor) -> None:
    x_fit = torch.as_tensor(digits_train.x[:600], dtype=torch.float32)
    y_fit = digits_train.y[:600]
    z_fit, z = _penultimate(digits_cnn, x_fit), _penultimate(digits_cnn, digits_batch)
    reference = pytorch_ood.Mahalanobis(None).fit_features(z_fit.float(), torch.as_tensor(y_fit))
    expected = reference.predict_features(z.float()).double()
    # pytorch-ood's covariance is the scatter sum (not / N) + 1e-6 I: with ridge 1e-6 / N ours is it / N, so our
    # distances are N times its
    n = len(z_fit)
    ours = fit_mahalanobis(z_fit, y_fit, 10, ridge=1e-6 / n).scores(z)
    torch.testing.assert_close(ours, n * expected, rtol=2e-3, atol=1e-3)
    # and the ranking (what every metric reads) is the same
    assert np.array_equal(np.argsort(ours.numpy()), np.argsort(expected.numpy()))


def test_knn_equals_pytorch_ood(digits_cnn: Any, digits_train: Any, digits_batch: torch.Tensor) -> None:
    x_fit = torch.as_tensor(digits_train.x[:500], dtype=torch.float32)
    z_fit, z = _penultimate(digits_cnn, x_fit), _penultimate(digits_cnn, digits_batch)
    for k in (1, 7, 50):
        reference = pytorch_ood.KNN(None, k=k).fit_features(z_fit.float(), torch.zeros(len(z_fit), dtype=torch.long))
        expected = reference.predict_features(z.float()).double()
        torch.testing.assert_close(knn_scores(z, normalize(z_fit), k), expected, rtol=1e-5, atol=1e-6)


def test_autoencoder_is_seeded_and_separates_noise(digits_train: Any, digits_test: Any) -> None:
    kwargs: dict[str, Any] = {"hidden": [64, 16], "bounds": (0.0, 1.0), "epochs": 5, "lr": 3e-3, "batch_size": 64}
    first, err = train_autoencoder(digits_train.x, seed=3, **kwargs)
    again, _ = train_autoencoder(digits_train.x, seed=3, **kwargs)
    x = torch.as_tensor(digits_test.x, dtype=torch.float32)
    assert torch.equal(first.scores(x), again.scores(x))
    noise = torch.rand(len(x), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    found = detection_metrics(first.scores(x).numpy(), first.scores(noise).numpy())
    assert err > 0 and found.auroc > 0.95


def test_histogram_figure_kind_draws() -> None:
    from audit.shift.ood_metrics import histogram
    from reports.figures import render_figure

    rng = np.random.default_rng(0)
    hist = histogram(rng.normal(0, 1, 200), rng.normal(2, 1, 100), bins=20)
    assert len(hist["edges"]) == 21 and sum(hist["in"]) * (hist["edges"][1] - hist["edges"][0]) == pytest.approx(1)
    spec = {"name": "h", "title": "scores", "kind": "histogram", "edges": hist["edges"],
            "series": [{"label": "in", "y": hist["in"]}, {"label": "out", "y": hist["out"]}]}
    fig = render_figure(spec)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 4  # a filled and an outlined step per series
    grid = render_figure({"name": "g", "title": "sets", "kind": "small_multiples",
                          "panels": [{**spec, "title": "a"}, {**spec, "title": "b"}]})
    assert [ax.get_title(loc="left") for ax in grid.axes] == ["a", "b"]
    broken = render_figure({**spec, "series": [{"label": "in", "y": hist["in"][:-1]}]})
    assert any("cannot draw figure" in t.get_text() for ax in broken.axes for t in ax.texts) or \
        any("cannot draw figure" in t.get_text() for t in broken.texts)
