"""Randomized smoothing: CERTIFY against a plain reference loop on the same noise draws, the radius
formula on an analytic linear model, abstentions, and certified <= empirical on the digits CNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from attacks.base import AttackNotApplicable
from attacks.smoothing import (
    ABSTAIN,
    NOISE_BLOCK,
    STREAM_ESTIMATE,
    STREAM_EVAL,
    STREAM_PREDICT,
    STREAM_SELECT,
    certificates,
    certify,
    clopper_pearson_lower,
    majority_vote,
    noise_draws,
    predict,
    sample_counts,
    smoothed_counts,
    smoothed_empirical,
    smoothing_metrics,
)
from audit.model import ModelAdapter, PredictFunctionAdapter, SelectOutput, TorchModelAdapter


class Halfplane(nn.Module):
    """Two classes split by the line w.x + b = 0: logits [0, w.x + b]."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.w = torch.tensor(w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.reshape(len(x), -1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_noise_draws_do_not_depend_on_chunking() -> None:
    whole = noise_draws((1, 8, 8), sigma=0.5, seed=3, stream=2, sample_id=7, start=0, count=3 * NOISE_BLOCK + 5)
    pieces = [noise_draws((1, 8, 8), sigma=0.5, seed=3, stream=2, sample_id=7, start=s, count=c)
              for s, c in ((0, 100), (100, NOISE_BLOCK), (100 + NOISE_BLOCK, 2 * NOISE_BLOCK - 95))]
    assert torch.equal(whole, torch.cat(pieces))
    other = noise_draws((1, 8, 8), sigma=0.5, seed=3, stream=2, sample_id=8, start=0, count=10)
    assert not torch.equal(whole[:10], other)


def reference_certify(model: nn.Module, x: np.ndarray, *, sigma: float, n0: int, n: int, alpha: float,
                      seed: int, ids: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CERTIFY as written in Cohen et al.'s paper, one sample at a time, on the same draws."""
    preds, radii = [], []
    for xi, sid in zip(x, ids, strict=True):
        xt = torch.as_tensor(xi)
        with torch.no_grad():
            draws0 = noise_draws(xi.shape, sigma=sigma, seed=seed, stream=STREAM_SELECT, sample_id=int(sid), start=0,
                                 count=n0)
            counts0 = np.bincount(model(xt + draws0).argmax(1).numpy(), minlength=classes)
            draws = noise_draws(xi.shape, sigma=sigma, seed=seed, stream=STREAM_ESTIMATE, sample_id=int(sid),
                                start=0, count=n)
            counts = np.bincount(model(xt + draws).argmax(1).numpy(), minlength=classes)
        c_a = int(np.argmax(counts0))
        n_a = int(counts[c_a])
        p_a = beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
        if p_a < 0.5:
            preds.append(ABSTAIN)
            radii.append(0.0)
        else:
            preds.append(c_a)
            radii.append(sigma * norm.ppf(p_a))
    return np.array(preds), np.array(radii)


def test_certify_equals_reference_loop(digits_cnn: Any, digits_test: Any) -> None:
    x, y = digits_test.x[:12], digits_test.y[:12]
    ids = np.arange(100, 112)
    kwargs: dict[str, Any] = {"sigma": 0.25, "n0": 50, "n": 300, "alpha": 0.001, "seed": 5, "ids": ids}
    model = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0))
    got = certify(model, x, y, batch=1000, **kwargs)
    preds, radii = reference_certify(digits_cnn, x, classes=10, **kwargs)
    np.testing.assert_array_equal(got.prediction, preds)
    np.testing.assert_array_equal(got.radius, radii)
    assert (got.prediction != ABSTAIN).sum() >= 6 and (got.radius > 0.1).any()  # not a vacuous comparison
    # a subset keyed by the same ids draws the same noise: the same certificates
    part = certify(model, x[4:9], y[4:9], batch=1000, **{**kwargs, "ids": ids[4:9]})
    np.testing.assert_array_equal(part.counts, got.counts[4:9])


def per_sample_certify(model: ModelAdapter, x: np.ndarray, y: np.ndarray, ids: np.ndarray, *, sigma: float,
                       n0: int, n: int, batch: int, seed: int) -> Any:
    """CERTIFY one sample at a time, as ``certify`` ran before it batched samples: ``sample_counts`` per sample."""
    xt = torch.as_tensor(x)
    counts0 = np.stack([sample_counts(model, xt[i], sigma=sigma, num=n0, seed=seed, stream=STREAM_SELECT,
                                      sample_id=int(k), batch=batch) for i, k in enumerate(ids)])
    counts = np.stack([sample_counts(model, xt[i], sigma=sigma, num=n, seed=seed, stream=STREAM_ESTIMATE,
                                     sample_id=int(k), batch=batch) for i, k in enumerate(ids)])
    return certificates(counts0, counts, y, ids, sigma=sigma, n0=n0, n=n, alpha=0.001, seed=seed)


@pytest.mark.parametrize("batch", [1000, 100, 700, 5000])
def test_batched_certify_is_the_per_sample_certify(digits_cnn: Any, digits_test: Any, batch: int) -> None:
    """The noisy copies of many samples share forward passes (a pass of 5000 holds four samples' 1100 copies; one
    of 100 splits a block of 256 draws; 700 mixes partial blocks of two samples): the certificates are exactly
    those of one sample at a time, on the same keyed draws."""
    x, y, ids = digits_test.x[:12], digits_test.y[:12], np.arange(200, 212)
    model = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0))
    kwargs: dict[str, Any] = {"sigma": 0.25, "n0": 100, "n": 1000, "batch": batch, "seed": 3}
    got = certify(model, x, y, alpha=0.001, ids=ids, **kwargs)
    alone = per_sample_certify(model, x, y, ids, **kwargs)
    for field in ("prediction", "radius", "p_lower", "counts0", "counts"):
        np.testing.assert_array_equal(getattr(got, field), getattr(alone, field))
    assert (got.prediction != ABSTAIN).sum() >= 6 and len(set(got.radius.tolist())) >= 3  # not vacuous
    # the smoothed prediction and the majority vote batch the same way
    every = smoothed_counts(model, torch.as_tensor(x), ids, [(STREAM_PREDICT, 300), (STREAM_EVAL, 260)],
                            sigma=0.25, seed=3, batch=batch)
    for i, k in enumerate(ids):
        for s, (stream, num) in enumerate(((STREAM_PREDICT, 300), (STREAM_EVAL, 260))):
            expected = sample_counts(model, torch.as_tensor(x[i]), sigma=0.25, num=num, seed=3, stream=stream,
                                     sample_id=int(k), batch=batch)
            np.testing.assert_array_equal(every[s, i], expected)
    vote, _ = majority_vote(model, torch.as_tensor(x), y, ids, sigma=0.25, n_eval=260, batch=batch, seed=3)
    np.testing.assert_array_equal(vote, every[1].argmax(axis=1))


def test_batched_certify_on_a_black_box_is_the_per_sample_certify(digits_cnn: Any, digits_test: Any) -> None:
    network = digits_cnn.eval()

    def scores(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.as_tensor(a)).numpy()

    box = PredictFunctionAdapter(scores, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                 bounds=None, device=torch.device("cpu"), batch_size=256, source="fn",
                                 sha256="0" * 64)
    x, y, ids = digits_test.x[:5], digits_test.y[:5], np.arange(5)
    got = certify(box, x, y, sigma=0.25, n0=50, n=300, alpha=0.001, batch=500, seed=1, ids=ids)
    alone = per_sample_certify(box, x, y, ids, sigma=0.25, n0=50, n=300, batch=500, seed=1)
    np.testing.assert_array_equal(got.counts, alone.counts)
    np.testing.assert_array_equal(got.radius, alone.radius)


def test_clopper_pearson_bound_is_the_binomial_tail_at_alpha() -> None:
    n, alpha = 400, 0.01
    k = np.array([1, 50, 200, 399, 400])
    bound = clopper_pearson_lower(k, n, alpha)
    # P(X >= k | p = bound) = alpha: the defining property of the one-sided lower bound
    np.testing.assert_allclose(binom.sf(k - 1, n, bound), alpha, rtol=1e-6)
    assert clopper_pearson_lower(0, n, alpha) == 0.0
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n))


def test_radius_on_a_halfplane_is_at_most_the_distance_and_close_to_it() -> None:
    """For a linear two-class model the smoothed classifier's exact radius is the distance to the line."""
    w, b, sigma, n, alpha = [0.6, -0.8], 0.1, 0.5, 4000, 0.001
    model = TorchModelAdapter.from_module(Halfplane(w, b), num_classes=2)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.2, 1.2, size=(30, 2)).astype(np.float32)
    margin = x @ np.array(w) + b  # ||w|| = 1: the signed distance
    y = (margin > 0).astype(np.int64)
    got = certify(model, x, y, sigma=sigma, n0=100, n=n, alpha=alpha, batch=2000, seed=1)
    p_true = norm.cdf(np.abs(margin) / sigma)
    certified = got.prediction != ABSTAIN
    assert (got.prediction[certified] == y[certified]).all()
    assert (got.radius <= np.abs(margin) + 1e-6).all()
    # and not far below it: the count of the top class is at least its binomial 1e-6 quantile, whose
    # Clopper-Pearson bound gives the smallest radius to expect (each sample falls short with probability 1e-6)
    k_low = binom.ppf(1e-6, n, p_true)
    p_floor = beta.ppf(alpha, k_low, n - k_low + 1)
    wanted = p_floor > 0.5
    assert wanted.sum() >= 15
    assert (got.radius[wanted] >= sigma * norm.ppf(p_floor[wanted]) - 1e-9).all()


def test_abstains_on_the_boundary_and_with_too_few_draws() -> None:
    model = TorchModelAdapter.from_module(Halfplane([1.0, 0.0], 0.0), num_classes=2)
    on_line = np.array([[0.0, 0.3], [0.0, -2.0]], np.float32)
    got = certify(model, on_line, np.array([1, 1]), sigma=0.5, n0=100, n=2000, alpha=0.001, seed=0)
    assert (got.prediction == ABSTAIN).all() and (got.radius == 0).all()
    assert (predict(model, on_line, sigma=0.5, n=2000, alpha=0.001, seed=0) == ABSTAIN).all()
    far = np.array([[5.0, 0.0]], np.float32)  # every draw says class 1
    # 5 of 5 draws: the lower bound is alpha^(1/5) = 0.25 < 1/2, abstain; 10 of 10: 0.501, a tiny radius
    assert certify(model, far, np.array([1]), sigma=0.5, n0=10, n=5, alpha=0.001).prediction[0] == ABSTAIN
    ten = certify(model, far, np.array([1]), sigma=0.5, n0=10, n=10, alpha=0.001)
    assert ten.prediction[0] == 1
    assert ten.radius[0] == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 10)), rel=1e-9)
    assert predict(model, far, sigma=0.5, n=100, alpha=0.001)[0] == 1


def test_empirical_never_below_certified_on_digits(digits_cnn: Any, digits_test: Any) -> None:
    x, y = digits_test.x[:40], digits_test.y[:40]
    model = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0))
    radii = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75]
    sigma = 0.12
    cert = certify(model, x, y, sigma=sigma, n0=64, n=512, alpha=0.001, batch=512, seed=0)
    emp = smoothed_empirical(model, x, y, sigma=sigma, radii=radii, steps=10, eot_samples=8, n_eval=256, seed=0)
    certified, empirical = cert.certified_accuracy(radii), emp.accuracy(radii)
    assert all(e >= c for c, e in zip(certified, empirical, strict=True)), (certified, empirical)
    assert certified[1] > 0.5  # there is something certified to compare
    assert empirical[-1] < empirical[0] - 0.3  # the attack does work
    # the comparison has teeth: a radius formula three times too large claims more than the attack leaves
    inflated = [float((cert.correct & (3 * cert.radius >= r)).mean()) for r in radii]
    assert any(i > e for i, e in zip(inflated, empirical, strict=True))
    metrics = smoothing_metrics(cert, emp, radii)
    assert metrics["smoothing.l2.radius=0.1.certified_accuracy"] == certified[1]
    assert metrics["smoothing.l2.radius=0.75.empirical_robust_accuracy"] == empirical[-1]
    assert metrics["smoothing.sigma"] == sigma


def test_empirical_needs_gradients() -> None:
    black_box = PredictFunctionAdapter(lambda a: np.zeros((len(a), 2)), SelectOutput(None, "logits", False),
                                       num_classes=2, output_kind="logits", bounds=None,
                                       device=torch.device("cpu"), batch_size=8, source="fn", sha256="0" * 64)
    x = np.zeros((2, 3), np.float32)
    assert certify(black_box, x, [0, 0], sigma=0.5, n0=10, n=20).prediction.shape == (2,)  # scores suffice
    with pytest.raises(AttackNotApplicable, match="has none"):
        smoothed_empirical(black_box, x, [0, 0], sigma=0.5, radii=[0.1])
