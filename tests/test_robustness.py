"""The robustness section: metrics, worst case, shared outcomes, artifacts and gradient-masking red flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from plugin_helpers import validate_section
from torch import nn

from attacks.base import AttackOutput
from attacks.evaluate import NormEvaluation, closest_candidate
from attacks.redflags import check_monotone, check_single_step
from attacks.section import RobustnessSection
from audit.errors import ConfigError
from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

FAST = {"minimal_samples": 0, "check_samples": 40, "steps": 20}


class Quantize(nn.Module):
    """Non-differentiable input quantization: zero gradients everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class Noisy(nn.Module):
    """A randomized defense: fresh Gaussian noise on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * torch.randn_like(x)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Sqrt(nn.Module):
    """sqrt at 0 has an infinite derivative: NaN/inf input gradients on the digits' zero pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sqrt()


def flags(result: Any) -> dict[str, str]:
    table = next(t for t in result.tables if t.name == "red_flags")
    return {row[0]: row[2] for row in table.rows}  # check title -> verdict


def raised_codes(result: Any) -> set[str]:
    return {f.code.split(".")[2] for f in result.findings if f.code and f.code.startswith("robustness.red_flag.")}




def test_closest_candidate_is_the_one_with_the_largest_margin_loss() -> None:
    """The failed candidates kept for later sections: per sample, the attack that came closest."""

    def run(rows: list[list[float]], margin: list[float] | None) -> AttackOutput:
        n = len(rows)
        return AttackOutput("a", "linf", 0.1, np.array(rows, np.float32), np.zeros(n, bool), np.zeros(n), 0.0,
                            margin=None if margin is None else np.array(margin, np.float32))

    first = run([[1.0, 0.0], [0.2, 0.1], [0.0, 0.5]], [-1.0, -0.1, -0.5])
    second = run([[0.6, 0.5], [0.9, 0.0], [0.3, 0.4]], [-0.1, -0.9, -0.1])
    no_margin = run([[9.0, 9.0]] * 3, None)  # passed over
    picked = closest_candidate([first, no_margin, second], np.arange(3))
    np.testing.assert_allclose(picked, [[0.6, 0.5], [0.2, 0.1], [0.3, 0.4]])
    np.testing.assert_allclose(closest_candidate([first, second], np.array([2])), [[0.3, 0.4]])


def test_default_section_on_digits(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=150)
    result = RobustnessSection(minimal_samples=40)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    clean = m["robustness.clean_accuracy"]
    worst = [m[f"robustness.worst_case.linf.eps={e}.robust_accuracy"] for e in ("0.05", "0.1", "0.2")]
    assert clean >= worst[0] >= worst[1] >= worst[2]
    for e in ("0.05", "0.1", "0.2"):
        for attack in ("apgd_ce", "apgd_dlr"):
            # the worst case is at most each attack's own number
            assert worst[("0.05", "0.1", "0.2").index(e)] <= m[f"robustness.{attack}.linf.eps={e}.robust_accuracy"]
        assert m[f"robustness.worst_case.linf.eps={e}.max_perturbation"] <= float(e) + 1e-6
    assert worst[2] < 0.1
    assert m["robustness.red_flags.count"] == 0, [f.message for f in result.findings]
    assert m["robustness.red_flags.checks"] >= 8
    assert m["robustness.fmn.linf.median_min_eps"] is not None
    # every number has its settings row
    settings = next(t for t in result.tables if t.name == "settings")
    assert {(r[0], r[3]) for r in settings.rows} >= {(a, e) for a in ("apgd_ce", "apgd_dlr") for e in (0.05, 0.1, 0.2)}
    # shared outcomes for explanations and fairness
    assert set(ctx.adversarial) == {"linf:0.05", "linf:0.1", "linf:0.2"}
    out = ctx.adversarial["linf:0.1"]
    assert out.x_adv.shape == ctx.data.x.shape
    assert np.abs(out.x_adv - ctx.data.x).max() <= 0.1 + 1e-6
    assert not (out.robust_correct & ~out.clean_correct).any()
    fooled = out.clean_correct & ~out.robust_correct
    assert (ctx.model.predict(out.x_adv[fooled]) != ctx.data.y[fooled]).all()
    assert out.robust_correct.mean() == pytest.approx(m["robustness.worst_case.linf.eps=0.1.robust_accuracy"])
    assert out.min_eps is not None and (out.min_eps[fooled] <= 0.1 + 1e-6).all()
    # where every attack failed: the closest candidate, perturbed and still classified correctly
    resisted = out.robust_correct
    assert resisted.any()
    moved = np.abs(out.x_adv - ctx.data.x).reshape(len(out.x_adv), -1).max(axis=1)
    assert (moved[resisted] > 0).all()
    assert (ctx.model.predict(out.x_adv[resisted]) == ctx.data.y[resisted]).all()
    assert (moved[~out.clean_correct] == 0).all()  # clean-wrong samples are not attacked
    # artifacts: gallery PNG recorded as an image figure; the curve as a line figure
    kinds = {f["name"]: f["kind"] for f in result.figures}
    assert kinds["robustness_curve_linf"] == "line" and kinds["gallery_linf"] == "image"
    png = Path(ctx.run_dir) / result.artifacts["gallery_linf"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validate_section(result, ctx)


def test_tabular_respects_perturbable_features(resume_mlp: Any, resume_test: Any, make_context: Any) -> None:
    ctx = make_context(resume_mlp, resume_test, limit=300)
    result = RobustnessSection(**FAST)(ctx)
    assert result.status == "ok", result.error
    mask = resume_test.perturbable
    for key, out in ctx.adversarial.items():
        changed = np.abs(out.x_adv - ctx.data.x) > 0
        assert not changed[:, ~mask].any(), key
        assert (out.x_adv >= resume_test.lower - 1e-6).all() and (out.x_adv <= resume_test.upper + 1e-6).all()
    table = next(t for t in result.tables if t.name == "feature_perturbation_linf")
    assert {r[0] for r in table.rows} <= {"jobs", "experience"}
    flag_table = flags(result)
    assert flag_table["Unbounded attack does not reach 0%"] == "n/a"


def test_black_box_model_uses_square(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    def predict(arr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return digits_cnn(torch.as_tensor(arr)).numpy()

    box = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                 bounds=Bounds(0.0, 1.0), device=torch.device("cpu"), batch_size=256, source="fn",
                                 sha256="0" * 64)
    ctx = make_context(box, digits_test, limit=60)
    result = RobustnessSection(eps=[0.2], square_queries=150, check_queries=50, **FAST)(ctx)
    assert result.status == "ok", result.error
    assert result.metrics["robustness.square.linf.eps=0.2.robust_accuracy"] < 0.3
    assert any("apgd_ce (linf) skipped" in n for n in result.notes)


@pytest.mark.parametrize(("name", "build", "kind", "expected"), [
    ("quantized", lambda m: nn.Sequential(Quantize(), m), "logits",
     {"zero_gradients", "unbounded_attack", "blackbox_stronger"}),
    ("randomized", lambda m: nn.Sequential(Noisy(), m), "logits", {"randomized_outputs"}),
    ("softmax as logits", lambda m: nn.Sequential(m, nn.Softmax(dim=1)), "logits", {"probability_outputs"}),
    ("softmax declared", lambda m: nn.Sequential(m, nn.Softmax(dim=1)), "probabilities", {"probability_outputs"}),
    ("saturated", lambda m: nn.Sequential(m, Scale(1e4)), "logits", {"zero_gradients"}),
    ("sqrt input", lambda m: nn.Sequential(Sqrt(), m), "logits", {"nonfinite_gradients"}),
])
def test_red_flag_fires_on_a_model_built_to_trigger_it(name: str, build: Any, kind: str, expected: set[str],
                                                       digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(build(digits_cnn), digits_test, limit=100, output_kind=kind)
    result = RobustnessSection(**FAST)(ctx)
    assert result.status == "ok", result.error
    assert expected <= raised_codes(result), (name, [f.message for f in result.findings])
    assert result.metrics["robustness.red_flags.count"] >= len(expected)
    assert all(f.severity in ("medium", "high") for f in result.findings if f.code.startswith("robustness.red"))


def test_red_flags_quiet_on_a_normal_model(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=100)
    result = RobustnessSection(**FAST)(ctx)
    assert result.metrics["robustness.red_flags.count"] == 0, [f.message for f in result.findings]
    assert set(flags(result).values()) <= {"ok", "n/a"}


def test_accuracy_rising_with_eps_is_flagged() -> None:
    n = 100
    clean = np.ones(n, bool)
    ev = NormEvaluation(norm="linf", eps=[0.1, 0.2, 0.3], clean_correct=clean)
    for eps, fooled in ((0.1, 60), (0.2, 40), (0.3, 20)):  # a masked model: bigger eps, fewer successes
        success = np.arange(n) < fooled
        ev.runs[("pgd", eps)] = AttackOutput("pgd", "linf", eps, np.zeros((n, 1)), success, np.zeros(n), 0.0)
    assert check_monotone(ev, n).verdict == "likely masked"
    for eps, fooled in ((0.1, 20), (0.2, 40), (0.3, 60)):
        ev.runs[("pgd", eps)].success = np.arange(n) < fooled
    assert check_monotone(ev, n).verdict == "ok"


def test_single_step_stronger_than_iterative_is_flagged(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    from attacks.base import Domain

    ctx = make_context(digits_cnn, digits_test, limit=60)
    ok = ctx.clean_predictions() == ctx.data.y
    x, y = ctx.data.x[ok], ctx.data.y[ok]
    domain = Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)
    # an iterative attack that found nothing (as under masking) while FGSM at eps=0.2 fools most samples
    flag = check_single_step(ctx.model, x, y, np.ones(len(y), bool), domain, eps=0.2, batch_size=64)
    assert flag.verdict == "likely masked"
    honest = check_single_step(ctx.model, x, y, np.zeros(len(y), bool), domain, eps=0.2, batch_size=64)
    assert honest.verdict == "ok"


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown attacks"):
        RobustnessSection(attacks=["pgd", "magic"])
    with pytest.raises(ConfigError, match="eps values must be finite and > 0"):
        RobustnessSection(eps=[0.1, -1])
    with pytest.raises(ConfigError, match="unknown parameter"):
        RobustnessSection(epsilon=[0.1])
    section = RobustnessSection(norm=["l2", "linf"], eps={"linf": [0.1], "l2": [0.5, 1.0]})
    assert section.params.norms() == ["linf", "l2"]
    assert section.params.eps_for("l2") == [0.5, 1.0]


def test_l2_sweep_and_minimal_norm(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=80)
    result = RobustnessSection(norm="l2", eps=[0.5, 1.0], attacks=["pgd", "apgd_ce"], minimal_norm=["ddn"],
                               minimal_samples=30, minimal_steps=30, red_flags=False, steps=20)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    assert m["robustness.worst_case.l2.eps=1.robust_accuracy"] <= m["robustness.worst_case.l2.eps=0.5.robust_accuracy"]
    assert m["robustness.ddn.l2.success_rate"] > 0.9
    out = ctx.adversarial["l2:1.0"]
    sizes = np.linalg.norm((out.x_adv - ctx.data.x).reshape(len(out.x_adv), -1), axis=1)
    assert (sizes <= 1.0 + 1e-5).all()
