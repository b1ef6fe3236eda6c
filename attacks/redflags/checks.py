"""The checks: on the outputs, on the input gradients, and attacking again from where the headline attacks stopped
(see the package docstring, ``attacks.redflags``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attacks.apgd import APGD
from attacks.base import Attack, Domain, Norm, Progress, ce_loss, margin_loss
from attacks.evaluate import NormEvaluation
from attacks.gradient import FGSM, PGD
from attacks.redflags.base import (
    TITLES,
    CheckData,
    RedFlag,
    RedFlagParams,
    Verdict,
    grade,
    grade_check,
    not_applicable,
)
from attacks.square import Square

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
    verdict: Verdict = "likely masked" if flips > 0 else grade_check(params, "randomized", diff)
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
    verdict = grade_check(params, "zero_gradients", none)
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
    verdict = grade_check(params, "nonfinite_gradients", share)
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
    verdict = grade_check(d.params, "unbounded", acc)
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
    verdict = grade_check(d.params, "convergence", drop)
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
    verdict = grade_check(d.params, "restart", gain)
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
    return RedFlag(code, TITLES[code], grade_check(params, "single_step", share), share,
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
    verdict = grade_check(params, "blackbox", share)
    reason = (f"{how} at eps={eps:g} fools {int(fooled.sum())} of the {len(survivors)} samples every white-box "
              f"attack missed ({share:.1%} of {len(y)})")
    if verdict == "likely masked" and ce_only and saturated is not None:
        rest = float((fooled & ~saturated).sum() / max(len(y), 1))
        if grade_check(params, "blackbox", rest) != "likely masked":
            verdict = "suspicious"
            reason += (f"; only because {int((fooled & saturated).sum())} of them saturate cross-entropy, the only "
                       "loss of the white-box attacks: add apgd_dlr")
    return RedFlag(code, TITLES[code], verdict, share, reason)

