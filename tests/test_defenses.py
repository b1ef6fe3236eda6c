"""Inference-time defenses, the defenses section (naive vs adaptive), the squeezing detector, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from attacks.defenses import JPEG, BitDepth, GaussianNoise, MedianSmoothing
from attacks.defenses.detection import joint_attack, roc_auc, squeeze_scores, threshold_at, tpr_at_fpr
from attacks.defenses.evaluate import DefenseEvaluator, Evaluated
from attacks.defenses.section import VERDICT_CODES, DefensesSection
from attacks.section import RobustnessSection
from audit.errors import ConfigError

ROBUST: dict[str, Any] = {"minimal_samples": 0, "red_flags": False, "steps": 20}


def prepared(defense: Any, data: Any) -> Any:
    defense.prepare(data, lower=0.0, upper=1.0, key="sections.defenses.defenses")
    return defense


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[Evaluated]:
    """The per-sample outcomes behind the section's numbers: every ``Evaluated`` the section's evaluator returns."""
    seen: list[Evaluated] = []
    original = DefenseEvaluator.evaluate

    def spy(self: DefenseEvaluator, *args: Any, **kwargs: Any) -> Evaluated:
        ev = original(self, *args, **kwargs)
        seen.append(ev)
        return ev

    monkeypatch.setattr(DefenseEvaluator, "evaluate", spy)
    return seen


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: the chance of ``wins`` or more of ``wins + losses`` fair coin flips (two attacks on
    the same samples, the samples only one of them fools; equally strong attacks split them evenly)."""
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0


def test_transforms(digits_test: Any) -> None:
    from scipy.ndimage import median_filter

    x = torch.as_tensor(digits_test.x[:6])
    squeezed = prepared(BitDepth(bits=2), digits_test).transform(x)
    levels = np.unique(squeezed.numpy())
    assert len(levels) <= 4 and np.allclose(levels * 3, np.round(levels * 3), atol=1e-6)  # multiples of 1/3
    assert float((squeezed - x).abs().max()) <= 1 / 6 + 1e-6  # rounding moves a value by half a level at most
    median = prepared(MedianSmoothing(size=3), digits_test).transform(x).numpy()
    reference = median_filter(digits_test.x[:6], size=(1, 1, 3, 3), mode="mirror")  # torch 'reflect' = 'mirror'
    np.testing.assert_allclose(median, reference, atol=1e-6)
    jpeg = prepared(JPEG(quality=95), digits_test).transform(x)
    assert jpeg.shape == x.shape and 0 < float((jpeg - x).abs().mean()) < 0.05  # lossy, but close at quality 95
    noise = prepared(GaussianNoise(sigma=0.1), digits_test)
    a, b = noise.transform(x), noise.transform(x)
    assert not torch.equal(a, b) and float(a.min()) >= 0 and float(a.max()) <= 1  # fresh draws, clipped


def test_bit_depth_naive_vs_adaptive_on_the_digits_cnn(digits_cnn: Any, digits_test: Any, make_context: Any,
                                                        evaluations: list[Evaluated]) -> None:
    """Bit-depth squeezing reads robust to a naive attack (zero gradients through round) and is broken by BPDA and
    transfer; the undefended, naive and adaptive numbers sit in one table row."""
    ctx = make_context(digits_cnn, digits_test, limit=100)
    ctx.results["robustness"] = RobustnessSection(eps=[0.1], **ROBUST)(ctx)
    result = DefensesSection(defenses=["bit_depth"], steps=20, detection=False)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    key = "defenses.bit_depth.linf.eps=0.1"
    naive, adaptive = m[f"{key}.naive_robust_accuracy"], m[f"{key}.adaptive_robust_accuracy"]
    undefended = m[f"{key}.undefended_robust_accuracy"]
    assert undefended == pytest.approx(ctx.results["robustness"].metrics[
        "robustness.worst_case.linf.eps=0.1.robust_accuracy"])
    # 100 paired samples: the binomial std of a difference of two shares is at most 0.1; 0.3 is three of them
    assert naive - adaptive >= 0.3, (naive, adaptive)
    # per sample, on the same samples: BPDA alone fools strictly more than the naive attack (a sign test on the
    # samples only one of them fools), and the numbers are those samples' shares
    (ev,) = evaluations
    clean_ok, bpda_fooled = ev.clean_ok, ev.adaptive_fooled["bpda"]
    only_bpda, only_naive = int((clean_ok & bpda_fooled & ~ev.naive_fooled).sum()), \
        int((clean_ok & ev.naive_fooled & ~bpda_fooled).sum())
    assert sign_test(only_bpda, only_naive) < 1e-3, (only_bpda, only_naive)
    assert m[f"{key}.bpda_robust_accuracy"] == pytest.approx((clean_ok & ~bpda_fooled).mean())
    assert naive == pytest.approx((clean_ok & ~ev.naive_fooled).mean())
    expected = "broken" if adaptive - undefended <= 0.02 else "partial"  # not holds: naive - adaptive > 0.05
    assert m[f"{key}.verdict"] == m["defenses.bit_depth.verdict"] == VERDICT_CODES[expected]
    row = next(t for t in result.tables if t.name == "defense_bit_depth").rows[0]
    assert row[:4] == ["linf", 0.1, undefended, naive] and row[7] == adaptive
    # independent BPDA reference: a hand-written straight-through bit-depth layer, PGD, replayed on the defense
    from attacks.base import Domain
    from attacks.gradient import PGD

    class RoundST(torch.autograd.Function):
        @staticmethod
        def forward(_: Any, t: torch.Tensor) -> torch.Tensor:
            return torch.round(t * 7) / 7

        @staticmethod
        def backward(_: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad

    x, y = ctx.data.x, ctx.data.y
    st = make_context(torch.nn.Sequential(_Apply(RoundST.apply), digits_cnn), ctx.data).model
    out = PGD(norm="linf", steps=40)(st, x, y, eps=0.1, domain=Domain.from_model_data(ctx.model, ctx.data))
    defended = make_context(torch.nn.Sequential(_Apply(lambda t: torch.round(t * 7) / 7), digits_cnn), ctx.data).model
    reference = float((defended.predict(out.x_adv) == y).mean())
    assert m[f"{key}.bpda_robust_accuracy"] <= reference + 0.1, (m[f"{key}.bpda_robust_accuracy"], reference)


class _Apply(torch.nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)  # type: ignore[no-any-return]


def test_randomized_defense_is_attacked_with_eot_and_the_section_is_deterministic(
        digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    runs = []
    for _ in range(2):
        ctx = make_context(digits_cnn, digits_test, limit=40)
        ctx.results["robustness"] = RobustnessSection(eps=[0.1], **ROBUST)(ctx)
        runs.append(DefensesSection(defenses=["gaussian_noise"], steps=10, eot_samples=4, detection=False)(ctx))
    assert runs[0].metrics == runs[1].metrics
    m = runs[0].metrics
    assert "defenses.gaussian_noise.linf.eps=0.1.eot_robust_accuracy" in m
    assert "defenses.gaussian_noise.linf.eps=0.1.bpda_robust_accuracy" not in m


def test_the_adaptive_number_is_the_per_sample_worst_case_of_every_attack(
        digits_cnn: Any, digits_test: Any, make_context: Any, evaluations: list[Evaluated]) -> None:
    """The adaptive robust accuracy is the share correct under naive, EOT and transfer attacks together, computed
    here from the evaluator's per-sample outcomes. On these 100 digits each of the three fools a sample the other two
    miss, so the number changes if any one of them is left out of the worst case."""
    ctx = make_context(digits_cnn, digits_test, limit=100)
    ctx.results["robustness"] = RobustnessSection(eps=[0.1], **ROBUST)(ctx)
    result = DefensesSection(defenses=["gaussian_noise"], steps=10, eot_samples=4, detection=False)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    (ev,) = evaluations
    assert set(ev.adaptive_fooled) == {"eot", "transfer"}
    parts = {"naive": ev.naive_fooled, **ev.adaptive_fooled}
    for name, fooled in parts.items():
        others = np.any([f for k, f in parts.items() if k != name], axis=0)
        assert (ev.clean_ok & fooled & ~others).any(), f"{name} adds no sample of its own: choose another case"
    robust_under_all = ev.clean_ok & ~parts["naive"] & ~parts["eot"] & ~parts["transfer"]
    key = "defenses.gaussian_noise.linf.eps=0.1"
    assert m[f"{key}.adaptive_robust_accuracy"] == pytest.approx(robust_under_all.mean())
    for name, fooled in parts.items():
        assert m[f"{key}.{name}_robust_accuracy"] == pytest.approx((ev.clean_ok & ~fooled).mean())
    row = next(t for t in result.tables if t.name == "defense_gaussian_noise").rows[0]
    assert row[7] == pytest.approx(robust_under_all.mean())


def test_defenses_after_robustness_on_a_subset_of_the_samples(digits_cnn: Any, digits_test: Any,
                                                               make_context: Any) -> None:
    """The robustness section attacks 60 of 100 digits (max_samples): the defenses section evaluates those rows, each
    with its own adversarial input (the outcome's positions map to data rows through outcome.index)."""
    ctx = make_context(digits_cnn, digits_test, limit=100)
    ctx.results["robustness"] = RobustnessSection(eps=[0.1], max_samples=60, **ROBUST)(ctx)
    outcome = ctx.adversarial["linf:0.1"]
    assert outcome.index is not None and len(outcome.index) == len(outcome.x_adv) == 60
    result = DefensesSection(defenses=["bit_depth"], steps=5, detection=False)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    assert m["defenses.bit_depth.linf.eps=0.1.undefended_robust_accuracy"] == pytest.approx(
        ctx.results["robustness"].metrics["robustness.worst_case.linf.eps=0.1.robust_accuracy"])
    # by hand: 3 bits = 8 levels of [0, 1]; clean and transfer accuracy of the squeezed model on the attacked rows
    defended = make_context(torch.nn.Sequential(_Apply(lambda t: torch.round(t * 7) / 7), digits_cnn), ctx.data).model
    y = ctx.data.y[outcome.index]
    clean_ok = defended.predict(ctx.data.x[outcome.index]) == y
    assert m["defenses.bit_depth.clean_accuracy"] == pytest.approx(clean_ok.mean())
    transfer_ok = clean_ok & (defended.predict(np.asarray(outcome.x_adv)) == y)
    assert m["defenses.bit_depth.linf.eps=0.1.transfer_robust_accuracy"] == pytest.approx(transfer_ok.mean())


def test_detector_scores_thresholds_and_auc(digits_cnn: Any, digits_test: Any, make_context: Any,
                                            rng: np.random.Generator) -> None:
    from sklearn.metrics import roc_auc_score

    clean = rng.integers(0, 5, 300).astype(float)  # ties on purpose
    adv = rng.integers(2, 8, 200).astype(float)
    labels = np.r_[np.zeros(300), np.ones(200)]
    assert roc_auc(clean, adv) == pytest.approx(roc_auc_score(labels, np.r_[clean, adv]))
    t = threshold_at(clean, 0.05)
    assert (clean > t).mean() <= 0.05 and (clean >= t).mean() > 0.05  # the smallest such threshold
    assert tpr_at_fpr(clean, adv, 0.05) == pytest.approx((adv > t).mean())
    ctx = make_context(digits_cnn, digits_test, limit=30)
    squeezers = [prepared(BitDepth(bits=1), digits_test)]
    x, y = ctx.data.x, ctx.data.y
    scores = squeeze_scores(ctx.model, squeezers, x)
    p = torch.softmax(ctx.model.logits(x).double(), 1)
    q = torch.softmax(ctx.model.logits(squeezers[0].transform(torch.as_tensor(x))).double(), 1)
    np.testing.assert_allclose(scores, (p - q).abs().sum(1).numpy(), atol=1e-9)
    from attacks.base import Domain

    out = joint_attack(ctx.model, squeezers, x, y, eps=0.2, norm="linf",
                       domain=Domain.from_model_data(ctx.model, ctx.data), threshold=float(np.median(scores)), steps=10)
    assert np.abs(out.x_adv - x).max() <= 0.2 + 1e-6
    np.testing.assert_array_equal(out.fooled, ctx.model.predict(out.x_adv) != y)
    assert np.all(out.scores[out.success] <= float(np.median(scores)))


def test_detection_in_the_section(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=60)
    ctx.results["robustness"] = RobustnessSection(eps=[0.1], **ROBUST)(ctx)
    result = DefensesSection(defenses=["bit_depth"], steps=10, detection_squeezers=["bit_depth"],
                             defense_params={"bit_depth": {"bits": 2}})(ctx)
    m = result.metrics
    for name in ("roc_auc", "tpr_at_5pct_fpr", "adaptive_roc_auc", "adaptive_tpr_at_5pct_fpr", "adaptive_evasion_rate"):
        value = m[f"defenses.squeezing_detector.linf.eps=0.1.{name}"]
        assert 0 <= value <= 1
    assert m["defenses.squeezing_detector.clean_false_positive_rate"] <= 0.05
    assert next(t for t in result.tables if t.name == "detector").rows[0][:2] == ["linf", 0.1]
    assert any(f["name"] == "detector_roc" for f in result.figures)


# --- bad input: errors naming the config key ---------------------------------------------------------------


def test_unknown_defense_name() -> None:
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["bit_dept"])
    assert err.value.key == "sections.defenses.defenses" and "bit_depth" in err.value.message


def test_jpeg_on_tabular_data(cancer_mlp: Any, cancer_test: Any, make_context: Any) -> None:
    ctx = make_context(cancer_mlp, cancer_test, bounds=(-10.0, 10.0))
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["jpeg"]).validate(ctx)
    assert err.value.key == "sections.defenses.defenses"
    assert "applies to image data only" in err.value.message and "tabular" in err.value.message


def test_unknown_defense_parameter(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=20)
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["bit_depth"], defense_params={"bit_depth": {"bitz": 3}}).validate(ctx)
    assert err.value.key == "sections.defenses.defense_params.bit_depth.bitz"


def test_eot_needs_gradients(cancer_test: Any, make_context: Any) -> None:
    import toy_models

    from audit.model import PredictFunctionAdapter, SelectOutput

    data = cancer_test
    box = PredictFunctionAdapter(lambda a: toy_models.predict_proba(a)[:, :2], SelectOutput(None, "probabilities",
                                 False), num_classes=2, output_kind="probabilities", bounds=None,
                                 device=torch.device("cpu"), batch_size=64, source="box", sha256="0" * 64)
    ctx = make_context(box, data)
    with pytest.raises(ConfigError) as err:
        DefensesSection(defenses=["gaussian_noise"]).validate(ctx)
    assert err.value.key == "sections.defenses.defenses" and "EOT" in err.value.message \
        and "needs input gradients" in err.value.message


def test_without_the_robustness_section_the_section_skips(digits_cnn: Any, digits_test: Any,
                                                          make_context: Any) -> None:
    result = DefensesSection()(make_context(digits_cnn, digits_test, limit=20))
    assert result.status == "skipped" and "robustness section before defenses" in result.notes[0]
