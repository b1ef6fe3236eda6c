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
from attacks.redflags import RedFlagParams, check_monotone, check_single_step
from attacks.section import RobustnessSection
from audit.errors import ConfigError
from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

FAST: dict[str, Any] = {"minimal_samples": 0, "check_samples": 40, "steps": 20}


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
    # artifacts: the gallery's tiles (NPZ) behind an image_grid figure; the curve as a line figure on [0, 1]
    figures = {f["name"]: f for f in result.figures}
    assert figures["robustness_curve_linf"]["kind"] == "line" and figures["robustness_curve_linf"]["ylim"] == [0, 1]
    gallery = figures["gallery_linf"]
    assert gallery["kind"] == "image_grid" and gallery["row_labels"] == ["original", "adversarial", "perturbation"]
    with np.load(Path(ctx.run_dir) / result.artifacts["gallery_linf"]) as archive:
        tiles = archive["tiles"]
    n = tiles.shape[1]
    assert tiles.shape[0] == 3 and tiles.shape[2:] == ctx.data.x.shape[1:] and len(gallery["tile_labels"][0]) == n
    np.testing.assert_allclose(tiles[2], tiles[1] - tiles[0], atol=1e-6)  # the perturbation row is adv - clean
    assert np.abs(tiles[2]).max() <= 0.1 + 1e-6
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


# --- honest verdicts: CE saturation is not masking, a quantizer is; non-finite outputs; thresholds; progress ----


def num(metrics: dict[str, float | None], key: str) -> float:
    value = metrics[key]
    assert value is not None, key
    return value


def saturating_factor(model: nn.Module, data: Any, share: float) -> float:
    """Logit scale at which about ``share`` of the clean-correct samples saturate cross-entropy in float32 (every
    other class's softmax term underflows, so the input gradient is exactly zero)."""
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    with torch.no_grad():
        z = model(x)
    ok = z.argmax(1) == y
    others = z.scatter(1, y[:, None], float("-inf")).amax(1)
    gap = (z.gather(1, y[:, None])[:, 0] - others)[ok]
    # exp(-d) rounds to zero in float32 once d > 103.97 (below half the smallest denormal, 1.4e-45 = e^-103.3)
    return float(104.0 / np.quantile(gap.numpy(), 1.0 - share))


def zero_ce_gradient_share(model: nn.Module, data: Any) -> float:
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    xr = x[ok].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xr), y[ok], reduction="sum"), xr)
    return float((grad.reshape(len(grad), -1) == 0).all(dim=1).float().mean())


@pytest.mark.parametrize(("norm", "eps"), [("linf", [0.05, 0.1, 0.2]), ("l2", [0.5, 1.0, 2.0])])
def test_cross_entropy_saturation_is_not_masking(norm: str, eps: list[float], digits_cnn: Any, digits_test: Any,
                                                 make_context: Any) -> None:
    """An undefended CNN whose logits are scaled until about a fifth of the clean samples have an exactly zero
    cross-entropy input gradient: the DLR attacks of the headline still move them, so nothing says masked."""
    ctx = make_context(digits_cnn, digits_test, limit=150)
    saturated = nn.Sequential(digits_cnn, Scale(saturating_factor(digits_cnn, ctx.data, 0.2)))
    assert 0.15 <= zero_ce_gradient_share(saturated, ctx.data) <= 0.25  # about a fifth (0.20 here)
    ctx = make_context(saturated, digits_test, limit=150)
    result = RobustnessSection(norm=norm, eps=eps, **FAST)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    assert m["robustness.red_flags.likely_masked"] == 0, [f.message for f in result.findings]
    assert m["robustness.reliable"] == 1
    table = next(t for t in result.tables if t.name == "red_flags")
    zero = next(row for row in table.rows if row[0] == "Zero input gradients")
    assert zero[2] == "suspicious" and "only saturate cross-entropy" in str(zero[4]), zero
    assert num(m, f"robustness.red_flags.zero_gradients.{norm}") >= 0.1
    # the headline is honest: the largest eps breaks the model
    assert num(m, f"robustness.worst_case.{norm}.eps={eps[-1]:g}.robust_accuracy") < 0.1


def test_cross_entropy_only_attacks_on_a_saturated_model_downgrade_the_blackbox_flag(
        digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    """Logits scaled 1e4: nearly every clean-correct sample saturates cross-entropy (zero CE gradient, a margin
    gradient). With APGD-CE the only white-box attack, Square fools many samples the white-box attack missed, which
    alone would read likely masked; the check says they saturate CE (not masking), caps it at suspicious and names
    the fix, so nothing escalates, and the numbers are marked unreliable for that reason."""
    ctx = make_context(nn.Sequential(digits_cnn, Scale(1e4)), digits_test, limit=100)
    result = RobustnessSection(eps=[0.2], attacks=["apgd_ce"], **FAST)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    table = next(t for t in result.tables if t.name == "red_flags")
    blackbox = next(row for row in table.rows if row[0] == "Black-box attack stronger than white-box")
    share = float(blackbox[3])
    assert share > RedFlagParams().blackbox_masked, blackbox  # without the downgrade: likely masked
    assert blackbox[2] == "suspicious", blackbox
    assert "saturate cross-entropy, the only loss of the white-box attacks: add apgd_dlr" in str(blackbox[4])
    zero = next(row for row in table.rows if row[0] == "Zero input gradients")
    assert zero[2] == "suspicious" and "the headline attacks all use cross-entropy" in str(zero[4]), zero
    assert m["robustness.red_flags.likely_masked"] == 0
    assert not any(k.startswith("robustness.escalation") for k in m)  # nothing said masked: no adaptive attacks
    assert m["robustness.reliable"] == 0
    reason = next(f for f in result.findings if f.code == "robustness.reliable").message
    assert "saturate cross-entropy (exactly zero gradient) and every white-box attack of the headline uses " \
        "cross-entropy: add apgd_dlr" in reason


def test_quantized_input_is_likely_masked_and_unreliable(digits_cnn: Any, digits_test: Any,
                                                         make_context: Any) -> None:
    ctx = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test, limit=100)
    # the flags alone, without the adaptive attacks that escalate after them (tests/test_adaptive.py)
    result = RobustnessSection(escalation={"enabled": False}, **FAST)(ctx)
    m = result.metrics
    verdicts = flags(result)
    assert verdicts["Zero input gradients"] == "likely masked"  # the margin gradient is zero too
    assert verdicts["Unbounded attack does not reach 0%"] == "likely masked"
    assert num(m, "robustness.red_flags.likely_masked") >= 2
    assert m["robustness.reliable"] == 0
    unreliable = next(f for f in result.findings if f.code == "robustness.reliable")
    assert unreliable.severity == "high" and "zero_gradients.linf says likely masked" in unreliable.message


def test_blackbox_check_compares_with_the_white_box_attacks_only(digits_cnn: Any, digits_test: Any,
                                                                 make_context: Any) -> None:
    """With square in the headline, the headline's worst case already holds its successes: the check compares
    square with the white-box attacks alone, reusing the headline's square run."""
    ctx = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test, limit=100)
    result = RobustnessSection(eps=[0.2], square="always", square_queries=150, **FAST)(ctx)
    row = next(r for r in next(t for t in result.tables if t.name == "red_flags").rows
               if r[0] == "Black-box attack stronger than white-box")
    assert row[2] == "likely masked" and "the headline's square attack" in str(row[4]), row
    assert num(result.metrics, "robustness.worst_case.linf.eps=0.2.robust_accuracy") < 0.5  # square counts there


class NaNOffClassZero(nn.Module):
    """Finite logits on the clean points it was given; NaN on any input farther than 1e-6 from a clean point whose
    label is 0 (a model that breaks numerically on perturbed class-0 inputs). NaN logits argmax to class 0."""

    def __init__(self, network: nn.Module, points: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("points", torch.as_tensor(points).reshape(len(points), -1))
        self.register_buffer("labels", torch.as_tensor(labels))

    points: torch.Tensor
    labels: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        dist = torch.cdist(x.detach().reshape(len(x), -1), self.points)
        nearest, which = dist.min(dim=1)
        broken = (nearest > 1e-6) & (self.labels[which] == 0)
        return torch.where(broken[:, None], torch.full_like(out, float("nan")), out)


def test_nan_outputs_under_attack_count_as_not_robust(digits_cnn: Any, digits_test: Any,
                                                      make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=120)
    data = ctx.data
    ctx = make_context(NaNOffClassZero(digits_cnn, data.x, data.y), data)
    result = RobustnessSection(eps=[0.05, 0.1], **FAST)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    correct0 = int(((ctx.clean_predictions() == data.y) & (data.y == 0)).sum())
    assert correct0 > 0
    assert m["robustness.nonfinite_outputs.linf"] == correct0  # every attacked class-0 sample met NaN outputs
    per_class = next(t for t in result.tables if t.name == "per_class_linf")
    assert per_class.rows[0][0] == "0" and per_class.rows[0][3] == 0.0 and per_class.rows[0][4] == 0.0
    for e in ("0.05", "0.1"):  # counted as fooled: the worst case is at most the other classes' share
        assert num(m, f"robustness.worst_case.linf.eps={e}.robust_accuracy") <= 1 - correct0 / len(data.y) + 1e-9
        assert num(m, f"robustness.apgd_ce.linf.eps={e}.robust_accuracy") <= 1 - correct0 / len(data.y) + 1e-9
    finding = next(f for f in result.findings if f.code == "robustness.nonfinite_outputs.linf")
    assert finding.severity == "high" and finding.message.startswith(f"{correct0} of {len(data.y)} samples")
    assert m["robustness.reliable"] == 0
    assert "NaN or infinite scores" in next(f for f in result.findings if f.code == "robustness.reliable").message
    out = ctx.adversarial["linf:0.1"]
    assert np.isfinite(out.x_adv).all()  # no NaN input is handed to later sections
    validate_section(result, ctx)


def test_red_flag_thresholds_are_named_parameters(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    with pytest.raises(ConfigError, match=r"unbounded_suspicious \(0.5\) must not exceed unbounded_masked") as err:
        RobustnessSection(red_flag_params={"unbounded_suspicious": 0.5, "unbounded_masked": 0.1})
    assert err.value.key == "sections.robustness.red_flag_params"
    with pytest.raises(ConfigError, match="unknown parameter") as err:
        RobustnessSection(red_flag_params={"unbounded_masekd": 0.1})
    assert err.value.key == "sections.robustness.red_flag_params.unbounded_masekd"
    # a threshold moves the verdict: all-zero gradients are only suspicious when the masked bar is 100%
    ctx = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test, limit=60)
    lenient = RobustnessSection(eps=[0.1], red_flag_params={"zero_gradients_masked": 1.0}, **FAST)(ctx)
    assert flags(lenient)["Zero input gradients"] == "suspicious"


def test_progress_inside_the_section(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=100, batch_size=32)
    seen: list[tuple[str, int | None]] = []

    def progress(iterable: Any, *, desc: str, total: int | None = None) -> Any:
        seen.append((desc, total))
        yield from iterable

    ctx.progress = progress
    RobustnessSection(eps=[0.1], **FAST)(ctx)
    descs: dict[str, int | None] = {}
    for desc, total in seen:
        descs.setdefault(desc, total)  # the headline's runs come first
    assert descs["attacks (linf)"] == 2  # apgd_ce and apgd_dlr at one eps
    assert descs["apgd_ce (linf eps=0.1)"] == descs["apgd_dlr (linf eps=0.1)"] == 4  # 100 samples in batches of 32
    assert descs["red flags (linf)"] == 10
    assert any(d.startswith("square (linf eps=0.1)") for d in descs)  # the black-box check's batches


def test_no_convergence_continues_the_headline_attack(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    """A headline PGD whose steps are far too small to reach the boundary: continuing that same attack from its
    own last iterates (same step size) fools many more samples; with a sound step size it finds none."""
    from attacks.base import Domain
    from attacks.evaluate import evaluate_norm
    from attacks.gradient import PGD
    from attacks.redflags import CheckData, RedFlagParams, check_convergence, strongest_iterative

    ctx = make_context(digits_cnn, digits_test, limit=100)
    x, y = ctx.data.x, ctx.data.y
    domain = Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)
    rows = np.flatnonzero(ctx.clean_predictions() == y)
    verdicts = {}
    for label, step in (("tiny steps", 0.1 / 100), ("sound steps", None)):
        torch.manual_seed(0)
        attack = PGD(steps=5, abs_step_size=step, rel_step_size=None if step else 0.5)
        ev = evaluate_norm(ctx.model, x, y, norm="linf", eps=[0.1], attacks=[attack], minimal_attacks=[],
                           minimal_index=np.arange(0), domain=domain, clean_pred=ctx.clean_predictions())
        strongest = strongest_iterative(ev, 0.1, rows)
        assert strongest is attack
        d = CheckData(model=ctx.model, ev=ev, x=x, y=y, rows=rows, attack_rows=rows, domain=domain, eps=0.1, steps=5,
                      batch_size=256, params=RedFlagParams(convergence_steps=20))
        flag = check_convergence(d, strongest)
        verdicts[label] = flag.verdict
        assert "pgd continued 100 more steps" in flag.reason
    assert verdicts == {"tiny steps": "likely masked", "sound steps": "ok"}
