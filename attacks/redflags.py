"""Gradient-masking red flags (after Athalye et al. 2018, Carlini et al. 2019, Croce & Hein 2020).

Each check gives a verdict, ``ok`` / ``suspicious`` / ``likely masked`` (or ``n/a`` with the reason
it does not apply), the number it is based on and a one-line reason. Every threshold is a named
parameter (``RedFlagParams``, documented in docs/robustness.md).

The checks are judged against the run's own attacks, the ones behind the headline (random start,
DLR/margin losses), and reuse what those attacks already found wherever they can: a sample an
attack fooled stays fooled, so the checks that attack again (unbounded, convergence, restarts,
single step, black box) only attack the check samples the headline called robust, starting from
the headline attacks' own last candidates. On an undefended model few samples survive, so the
checks cost little; on a masked model the survivors are exactly the samples worth a second look.

Cross-entropy saturation is told apart from missing gradients: a sample whose cross-entropy input
gradient is exactly zero in float32 while its margin gradient is not (a very confident, correct
prediction) is out of reach for CE attacks only; margin and DLR attacks still move it. A check
that fires only because of such samples says so and is ``suspicious``, never ``likely masked``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from attacks.apgd import APGD
from attacks.base import Attack, AttackOutput, Domain, Norm, Progress, ce_loss, margin_loss
from attacks.evaluate import NormEvaluation
from attacks.gradient import FGSM, PGD
from attacks.square import Square
from audit.plugin import Params

Verdict = Literal["ok", "suspicious", "likely masked", "n/a"]
PAIRS = ("accuracy_rise", "unbounded", "blackbox", "convergence", "restart", "single_step", "zero_gradients",
         "nonfinite_gradients", "randomized")


class RedFlagParams(Params):
    """Thresholds of the red-flag checks and the effort of those that attack again.

    A check whose value is above ``<check>_suspicious`` is ``suspicious``; above ``<check>_masked``,
    ``likely masked``. Shares are of the check samples (clean-correct samples, ``check_samples``).
    """

    accuracy_rise_suspicious: float = Field(
        default=0.01, ge=0, le=1,
        description="rise of one attack's robust accuracy from one eps to the next (share of all samples; never "
        "below two samples' worth)")
    accuracy_rise_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    unbounded_suspicious: float = Field(
        default=0.02, ge=0, le=1, description="accuracy left by an attack allowed the whole input box")
    unbounded_masked: float = Field(default=0.10, ge=0, le=1, description="the same, likely masked above")
    blackbox_suspicious: float = Field(
        default=0.02, ge=0, le=1,
        description="share the score-based square attack fools that every white-box attack missed")
    blackbox_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    convergence_suspicious: float = Field(
        default=0.03, ge=0, le=1,
        description="share newly fooled when the strongest attack continues from its last iterate")
    convergence_masked: float = Field(default=0.10, ge=0, le=1, description="the same, likely masked above")
    restart_suspicious: float = Field(
        default=0.03, ge=0, le=1, description="share newly fooled by fresh random starts of the strongest attack")
    restart_masked: float = Field(default=0.08, ge=0, le=1, description="the same, likely masked above")
    single_step_suspicious: float = Field(
        default=0.02, ge=0, le=1, description="share FGSM fools that every iterative attack missed (L-inf)")
    single_step_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    zero_gradients_suspicious: float = Field(
        default=0.05, ge=0, le=1,
        description="share with exactly zero input gradients: margin gradient zero too, or cross-entropy only "
        "(saturation: never more than suspicious)")
    zero_gradients_masked: float = Field(
        default=0.5, ge=0, le=1,
        description="share whose cross-entropy and margin input gradients are both exactly zero")
    nonfinite_gradients_suspicious: float = Field(
        default=0.0, ge=0, le=1, description="share with NaN/inf input gradients")
    nonfinite_gradients_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    randomized_suspicious: float = Field(
        default=1e-4, ge=0,
        description="largest difference between two passes on the same inputs, relative to the largest score "
        "(any flipped prediction: likely masked)")
    randomized_masked: float = Field(default=1e-2, ge=0, description="the same, likely masked above")
    unbounded_steps: int = Field(
        default=20, ge=2, le=10_000, description="APGD-DLR iterations of the unbounded attack")
    convergence_steps: float = Field(
        default=0.5, gt=0, le=100,
        description="iterations of the continued attack, as a multiple of the section's steps")
    restart_checks: int = Field(
        default=1, ge=1, le=100, description="fresh random starts of the strongest attack")
    restart_steps: float = Field(
        default=0.5, gt=0, le=100,
        description="iterations of each fresh random start, as a multiple of the section's steps")
    attack_samples: int = Field(
        default=50, ge=4,
        description="check samples the re-attacking checks (no_convergence, restart_gain, blackbox_stronger) "
        "use, a seeded subset of check_samples; each attacks only those the headline called robust")

    @model_validator(mode="after")
    def _ordered(self) -> RedFlagParams:
        for name in PAIRS:
            low, high = getattr(self, f"{name}_suspicious"), getattr(self, f"{name}_masked")
            if low > high:
                raise ValueError(f"{name}_suspicious ({low:g}) must not exceed {name}_masked ({high:g})")
        return self


@dataclass
class RedFlag:
    code: str
    title: str
    verdict: Verdict
    value: float | None
    reason: str
    seconds: float = 0.0

    @property
    def raised(self) -> bool:
        return self.verdict in ("suspicious", "likely masked")


TITLES = {
    "probability_outputs": "Softmax outputs used as logits",
    "randomized_outputs": "Non-deterministic outputs",
    "accuracy_vs_eps": "Accuracy not decreasing with eps",
    "zero_gradients": "Zero input gradients",
    "nonfinite_gradients": "NaN or infinite input gradients",
    "unbounded_attack": "Unbounded attack does not reach 0%",
    "no_convergence": "More iterations still lower accuracy",
    "restart_gain": "Fresh random starts still lower accuracy",
    "single_step_stronger": "Single-step attack stronger than iterative",
    "blackbox_stronger": "Black-box attack stronger than white-box",
}


def not_applicable(code: str, reason: str) -> RedFlag:
    return RedFlag(code, TITLES[code], "n/a", None, reason)


def grade(value: float, suspicious: float, masked: float) -> Verdict:
    return "likely masked" if value > masked else "suspicious" if value > suspicious else "ok"


def _grade(params: RedFlagParams, name: str, value: float) -> Verdict:
    return grade(value, getattr(params, f"{name}_suspicious"), getattr(params, f"{name}_masked"))


@dataclass
class CheckData:
    """What the section's own attacks left for one norm, and the check samples (rows of ``x``)."""

    model: Any
    ev: NormEvaluation
    x: np.ndarray  # (N, ...) the evaluated inputs
    y: np.ndarray  # (N,)
    rows: np.ndarray  # check samples: clean-correct rows of x
    attack_rows: np.ndarray  # the subset of rows the re-attacking checks use
    domain: Domain
    eps: float  # the most informative eps (worst-case accuracy nearest half the clean accuracy)
    steps: int  # the section's steps
    batch_size: int
    params: RedFlagParams
    progress: Progress | None = None

    def __post_init__(self) -> None:
        self.nonfinite = np.zeros(len(self.y), bool)  # rows where a check's attack met NaN/inf outputs

    @property
    def n(self) -> int:
        return max(len(self.rows), 1)

    def attack(self, attack: Attack, rows: np.ndarray, *, eps: float, x: np.ndarray | None = None,
               start: np.ndarray | None = None) -> AttackOutput:
        """Run ``attack`` on ``rows`` (centred on ``x[rows]``, default the clean inputs) and note non-finite
        outputs."""
        centre = self.x if x is None else x
        out = attack(self.model, centre[rows], self.y[rows], eps=eps, domain=self.domain,
                     batch_size=self.batch_size, start=start, progress=self.progress)
        if out.nonfinite is not None:
            self.nonfinite[rows[out.nonfinite]] = True
        return out


# --- outputs -------------------------------------------------------------------------------------


def check_randomized(model: Any, x: np.ndarray, first: torch.Tensor, batch_size: int,
                     params: RedFlagParams) -> RedFlag:
    """One more pass on inputs whose logits (``first``) the run already holds."""
    second = model.logits(x, batch_size=batch_size)
    first = first.float()
    finite = torch.isfinite(first).all(dim=1) & torch.isfinite(second).all(dim=1)
    if not bool(finite.any()):
        return not_applicable("randomized_outputs", "no finite outputs to compare")
    first, second = first[finite], second[finite]
    scale = float(first.abs().max().clamp_min(1e-6))
    diff = float((first - second).abs().max()) / scale
    flips = float((first.argmax(1) != second.argmax(1)).float().mean())
    verdict: Verdict = "likely masked" if flips > 0 else _grade(params, "randomized", diff)
    return RedFlag("randomized_outputs", TITLES["randomized_outputs"], verdict, diff,
                   f"two passes on the same inputs differ by {diff:.2g} (relative), {flips:.0%} of predictions flip"
                   + ("; a randomized model needs expectation-over-transformation attacks, single-sample "
                      "numbers overstate robustness" if verdict != "ok" else ""))


def check_probability_outputs(model: Any, logits: torch.Tensor) -> RedFlag:
    title = TITLES["probability_outputs"]
    if model.output_kind == "probabilities":
        return RedFlag("probability_outputs", title, "suspicious", 1.0,
                       "the model emits probabilities; attacks use their logarithm, which saturates (zero "
                       "gradients below 1e-12): give the pre-softmax logits if you can")
    looks = bool(((logits >= 0) & (logits <= 1)).all()) and bool(
        torch.allclose(logits.sum(dim=1), torch.ones(len(logits)), atol=1e-3))
    return RedFlag("probability_outputs", title, "likely masked" if looks else "ok", 1.0 if looks else 0.0,
                   "the outputs declared as logits lie in [0, 1] and sum to 1: they are probabilities; losses on "
                   "them are squashed (set model.output: probabilities)" if looks
                   else "outputs are logits (not in [0, 1] summing to 1)")


def check_monotone(ev: NormEvaluation, n: int, params: RedFlagParams | None = None) -> RedFlag:
    """Each attack's own accuracy (before the worst case merges them) must not rise with eps."""
    params = params or RedFlagParams()
    if len(ev.eps) < 2:
        return not_applicable("accuracy_vs_eps", "needs two eps or more")
    slack = max(params.accuracy_rise_suspicious, 2.0 / max(n, 1))
    worst_rise, where = 0.0, ""
    for attack in sorted({a for a, _ in ev.runs}):
        accs = [ev.robust_accuracy(attack, e) for e in ev.eps]
        for e0, e1, a0, a1 in zip(ev.eps, ev.eps[1:], accs, accs[1:], strict=False):
            if a1 - a0 > worst_rise:
                worst_rise, where = a1 - a0, f"{attack}: {a0:.3f} at eps={e0:g} -> {a1:.3f} at eps={e1:g}"
    verdict = grade(worst_rise, slack, max(slack, params.accuracy_rise_masked))
    return RedFlag("accuracy_vs_eps", TITLES["accuracy_vs_eps"], verdict, worst_rise,
                   f"largest rise of an attack's accuracy with eps: {worst_rise:.3f}"
                   + (f" ({where})" if where else ""))


# --- gradients -----------------------------------------------------------------------------------


@dataclass
class GradientStats:
    """Per sample, at the clean input: which input gradients are exactly zero or not finite."""

    ce_zero: np.ndarray  # cross-entropy input gradient exactly zero
    margin_zero: np.ndarray  # margin (best other logit - true logit) input gradient exactly zero
    nonfinite: np.ndarray  # NaN/inf in either gradient

    @property
    def saturated(self) -> np.ndarray:
        """Zero cross-entropy gradient only: softmax saturation, which margin/DLR attacks do not suffer."""
        return self.ce_zero & ~self.margin_zero & ~self.nonfinite

    @property
    def no_signal(self) -> np.ndarray:
        """Both gradients exactly zero: nothing for any gradient attack to follow."""
        return self.margin_zero & ~self.nonfinite


def gradient_stats(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> GradientStats:
    """Cross-entropy and margin input gradients of each sample (one forward, two backward passes)."""
    ce_zero, margin_zero, bad = [], [], []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i : i + batch_size], device=model.device).requires_grad_(True)
        yb = torch.as_tensor(y[i : i + batch_size], device=model.device)
        logits = model.forward(xb)
        (g_ce,) = torch.autograd.grad(ce_loss(logits, yb).sum(), xb, retain_graph=True)
        (g_margin,) = torch.autograd.grad(margin_loss(logits, yb).sum(), xb)
        flat_ce, flat_m = g_ce.reshape(len(xb), -1), g_margin.reshape(len(xb), -1)
        finite = torch.isfinite(flat_ce).all(dim=1) & torch.isfinite(flat_m).all(dim=1)
        bad.append((~finite).cpu().numpy())
        ce_zero.append(((flat_ce == 0).all(dim=1)).cpu().numpy())
        margin_zero.append(((flat_m == 0).all(dim=1)).cpu().numpy())
    empty = np.zeros(0, bool)
    return GradientStats(np.concatenate(ce_zero) if ce_zero else empty,
                         np.concatenate(margin_zero) if margin_zero else empty,
                         np.concatenate(bad) if bad else empty)


def check_zero_gradients(stats: GradientStats, params: RedFlagParams, *, ce_only: bool = False) -> RedFlag:
    """Grades the samples with no gradient signal at all; cross-entropy saturation alone is at most
    suspicious (and says so)."""
    n = max(len(stats.ce_zero), 1)
    zero_ce = float((stats.ce_zero & ~stats.nonfinite).sum() / n)
    none = float(stats.no_signal.sum() / n)
    saturated = float(stats.saturated.sum() / n)
    verdict = _grade(params, "zero_gradients", none)
    reason = (f"{zero_ce:.0%} of clean-correct samples have an exactly zero cross-entropy input gradient; "
              f"{none:.0%} a zero margin gradient too")
    if verdict != "ok":
        reason += ": nothing for a gradient attack to follow (quantization, a non-differentiable layer): trust " \
            "only black-box and adaptive (BPDA) numbers"
    if saturated > params.zero_gradients_suspicious:
        reason += (f"; {saturated:.0%} only saturate cross-entropy in float32 (very confident predictions): "
                   + ("the headline attacks all use cross-entropy and cannot move them; add apgd_dlr" if ce_only
                      else "the DLR/margin attacks of the headline still move them"))
        if verdict == "ok":
            verdict = "suspicious"
    return RedFlag("zero_gradients", TITLES["zero_gradients"], verdict, zero_ce, reason)


def check_nonfinite_gradients(stats: GradientStats, params: RedFlagParams) -> RedFlag:
    share = float(stats.nonfinite.mean()) if len(stats.nonfinite) else 0.0
    verdict = _grade(params, "nonfinite_gradients", share)
    return RedFlag("nonfinite_gradients", TITLES["nonfinite_gradients"], verdict, share,
                   f"{share:.0%} of clean-correct samples have NaN or infinite input gradients"
                   + ("; gradient attacks are blind there" if verdict != "ok" else ""))


# --- attacks again, from where the headline attacks stopped ------------------------------------------


def strongest_iterative(ev: NormEvaluation, eps: float, rows: np.ndarray) -> Attack | None:
    """The headline's iterative gradient attack (PGD / APGD) that fooled most check samples at ``eps``;
    on a tie the one with a margin/DLR loss (it does not saturate)."""
    best: tuple[int, int, str] | None = None
    for (name, e), run in ev.runs.items():
        attack = ev.attacks.get(name)
        if e != eps or not isinstance(attack, (PGD, APGD)):
            continue
        key = (int(run.success[rows].sum()), int(attack.loss != "ce"), name)
        best = key if best is None or key > best else best
    return ev.attacks[best[2]] if best is not None else None


def _variant(attack: Attack, *, steps: int, random_start: bool, restarts: int = 1) -> Attack:
    """The same attack (class, norm, loss, step size) with other steps, start or restarts."""
    if isinstance(attack, APGD):
        return APGD(norm=attack.norm, steps=max(2, steps), loss=attack.loss, restarts=restarts,
                    random_start=random_start)
    if isinstance(attack, PGD):
        return PGD(norm=attack.norm, steps=steps, rel_step_size=attack.rel_step_size,
                   abs_step_size=attack.abs_step_size, restarts=restarts, random_start=random_start, loss=attack.loss)
    raise TypeError(f"no variant of {type(attack).__name__}")


def box_span(domain: Domain, x: np.ndarray) -> float:
    """Largest range of a perturbable feature (the L-inf radius that holds the whole input box)."""
    span = domain.upper - domain.lower
    if domain.mask is not None:
        span = span * domain.mask
    value = float(span.max())
    return value if np.isfinite(value) else float(np.abs(x).max()) * 4 + 1.0


def check_unbounded(d: CheckData) -> RedFlag:
    """The samples still robust at the largest eps, attacked with APGD-DLR allowed the whole input box,
    starting from the headline attacks' closest candidates. Any perturbation is allowed, so an honest
    model's accuracy goes to about 0; survivors mean the gradients do not lead to the boundary."""
    code = "unbounded_attack"
    if d.domain.masked:
        return not_applicable(code, "only some features may change, so an unbounded attack need not reach 0%")
    top = max(d.ev.eps)
    survivors = d.rows[d.ev.worst_robust[top][d.rows]]
    span = box_span(d.domain, d.x)
    steps = d.params.unbounded_steps
    left = 0
    if len(survivors):
        # L-inf steps at radius `span` around the candidate: the feasible set is the input box itself (also for
        # L2, whose ball of the box's diameter holds the same box; L2 steps stall on its faces)
        attack = APGD(norm="linf", steps=steps, loss="dlr", random_start=False)
        out = d.attack(attack, survivors, eps=span, x=d.ev.worst_x_adv[top])
        left = int(out.robust.sum())
    acc = left / d.n
    verdict = _grade(d.params, "unbounded", acc)
    return RedFlag(code, TITLES[code], verdict, acc,
                   f"APGD-DLR ({steps} steps) over the whole input box (L-inf radius {span:g}), from the closest "
                   f"candidates of the {len(survivors)} check samples still robust at eps={top:g}, leaves "
                   f"{acc:.1%} accuracy" + ("; gradients do not lead to the boundary" if verdict != "ok" else ""))


def check_convergence(d: CheckData, attack: Attack | None) -> RedFlag:
    """The strongest headline attack continued from its own last iterate, on the samples still robust."""
    code = "no_convergence"
    if attack is None:
        return not_applicable(code, "no iterative gradient attack (pgd, apgd_ce, apgd_dlr) in the headline")
    steps = max(2, round(d.params.convergence_steps * d.steps))
    survivors = d.attack_rows[d.ev.worst_robust[d.eps][d.attack_rows]]
    newly = 0
    if len(survivors):
        start = d.ev.run_x_adv(attack.name, d.eps, survivors)
        out = d.attack(_variant(attack, steps=steps, random_start=False), survivors, eps=d.eps, start=start)
        newly = int(out.success.sum())
    drop = newly / max(len(d.attack_rows), 1)
    verdict = _grade(d.params, "convergence", drop)
    return RedFlag(code, TITLES[code], verdict, drop,
                   f"{attack.name} continued {steps} more steps from its last iterate at eps={d.eps:g} fools "
                   f"{newly} of the {len(survivors)} check samples the headline called robust ({drop:.1%} of "
                   f"{len(d.attack_rows)})" + ("; the attack has not converged: raise steps" if verdict != "ok"
                                               else ""))


def check_restart_gain(d: CheckData, attack: Attack | None) -> RedFlag:
    """Fresh random starts of the strongest headline attack on the samples still robust."""
    code = "restart_gain"
    if attack is None:
        return not_applicable(code, "no iterative gradient attack (pgd, apgd_ce, apgd_dlr) in the headline")
    restarts = d.params.restart_checks
    steps = max(2, round(d.params.restart_steps * d.steps))
    survivors = d.attack_rows[d.ev.worst_robust[d.eps][d.attack_rows]]
    newly = 0
    if len(survivors):
        out = d.attack(_variant(attack, steps=steps, random_start=True, restarts=restarts), survivors, eps=d.eps)
        newly = int(out.success.sum())
    gain = newly / max(len(d.attack_rows), 1)
    verdict = _grade(d.params, "restart", gain)
    return RedFlag(code, TITLES[code], verdict, gain,
                   f"{restarts} fresh random start(s) of {attack.name} ({steps} steps) at eps={d.eps:g} fool "
                   f"{newly} of the {len(survivors)} check samples the headline called robust ({gain:.1%} of "
                   f"{len(d.attack_rows)})" + ("; the loss surface is rugged: raise restarts" if verdict != "ok"
                                               else ""))


def check_single_step(model: Any, x: np.ndarray, y: np.ndarray, iterative_robust: np.ndarray, domain: Domain,
                      *, eps: float, batch_size: int, params: RedFlagParams | None = None,
                      fgsm_success: np.ndarray | None = None, progress: Progress | None = None) -> RedFlag:
    """Share of the samples FGSM fools that every iterative attack missed (FGSM is attacked only on those;
    ``fgsm_success``: the headline's own FGSM outcome on ``x``, reused)."""
    params = params or RedFlagParams()
    code = "single_step_stronger"
    survivors = np.flatnonzero(iterative_robust)
    if fgsm_success is not None:
        beaten = int((fgsm_success & iterative_robust).sum())
    elif len(survivors):
        out = FGSM()(model, x[survivors], y[survivors], eps=eps, domain=domain, batch_size=batch_size,
                     progress=progress)
        beaten = int(out.success.sum())
    else:
        beaten = 0
    share = beaten / max(len(y), 1)
    return RedFlag(code, TITLES[code], _grade(params, "single_step", share), share,
                   f"FGSM at eps={eps:g} fools {beaten} of the {len(survivors)} samples every iterative attack "
                   f"missed ({share:.1%} of {len(y)}); iterative accuracy {iterative_robust.mean():.1%}")


def check_blackbox(model: Any, x: np.ndarray, y: np.ndarray, white_robust: np.ndarray, domain: Domain, *,
                   eps: float, norm: Norm, queries: int, batch_size: int, params: RedFlagParams | None = None,
                   square_success: np.ndarray | None = None, saturated: np.ndarray | None = None,
                   ce_only: bool = False, progress: Progress | None = None) -> RedFlag:
    """Share of the samples the score-based square attack fools that every white-box attack missed (square runs
    only on those; ``square_success``: the headline's own square outcome, reused). Samples that fire only
    because they saturate cross-entropy (``saturated``, with CE-only white-box attacks) cap it at suspicious."""
    params = params or RedFlagParams()
    code = "blackbox_stronger"
    if norm != "linf":
        return not_applicable(code, "the square attack here is L-inf only")
    survivors = np.flatnonzero(white_robust)
    fooled = np.zeros(len(y), bool)
    if square_success is not None:
        fooled = square_success & white_robust
        how = "the headline's square attack"
    else:
        how = f"square ({queries} queries)"
        if len(survivors):
            out = Square(queries=queries)(model, x[survivors], y[survivors], eps=eps, domain=domain,
                                          batch_size=batch_size, progress=progress)
            fooled[survivors] = out.success
    share = float(fooled.sum() / max(len(y), 1))
    verdict = _grade(params, "blackbox", share)
    reason = (f"{how} at eps={eps:g} fools {int(fooled.sum())} of the {len(survivors)} samples every white-box "
              f"attack missed ({share:.1%} of {len(y)})")
    if verdict == "likely masked" and ce_only and saturated is not None:
        rest = float((fooled & ~saturated).sum() / max(len(y), 1))
        if _grade(params, "blackbox", rest) != "likely masked":
            verdict = "suspicious"
            reason += (f"; only because {int((fooled & saturated).sum())} of them saturate cross-entropy, the only "
                       "loss of the white-box attacks: add apgd_dlr")
    return RedFlag(code, TITLES[code], verdict, share, reason)

