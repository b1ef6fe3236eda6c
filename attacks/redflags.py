"""Gradient-masking red flags (after Athalye et al. 2018, Carlini et al. 2019, Croce & Hein 2020).

Each check gives a verdict, ``ok`` / ``suspicious`` / ``likely masked`` (or ``n/a`` with the reason
it does not apply), the number it is based on and a one-line reason. The checks run on a small
subset of clean-correct samples so they cost seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from attacks.base import Domain, Norm, ce_loss, flat_norm
from attacks.evaluate import NormEvaluation
from attacks.gradient import FGSM, PGD
from attacks.square import Square

Verdict = Literal["ok", "suspicious", "likely masked", "n/a"]


@dataclass
class RedFlag:
    code: str
    title: str
    verdict: Verdict
    value: float | None
    reason: str

    @property
    def raised(self) -> bool:
        return self.verdict in ("suspicious", "likely masked")


def _grade(value: float, suspicious: float, masked: float) -> Verdict:
    return "likely masked" if value > masked else "suspicious" if value > suspicious else "ok"


def gradient_stats(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(share of samples whose CE input gradient is exactly zero, share with NaN/inf gradients)."""
    zero, bad = 0, 0
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i : i + batch_size], device=model.device).requires_grad_(True)
        yb = torch.as_tensor(y[i : i + batch_size], device=model.device)
        (grad,) = torch.autograd.grad(ce_loss(model.forward(xb), yb).sum(), xb)
        flat = grad.reshape(len(xb), -1)
        finite = torch.isfinite(flat).all(dim=1)
        bad += int((~finite).sum())
        zero += int((finite & (flat == 0).all(dim=1)).sum())
    n = max(len(x), 1)
    return zero / n, bad / n


def check_zero_gradients(share: float) -> RedFlag:
    verdict = _grade(share, 0.05, 0.5)
    return RedFlag("zero_gradients", "Zero input gradients", verdict, share,
                   f"{share:.0%} of clean-correct samples have an exactly zero cross-entropy input gradient"
                   + ("; gradient attacks cannot move them (saturated softmax, quantization or a "
                      "non-differentiable layer): trust DLR/margin and black-box numbers" if verdict != "ok" else ""))


def check_nonfinite_gradients(share: float) -> RedFlag:
    verdict: Verdict = "likely masked" if share > 0.05 else "suspicious" if share > 0 else "ok"
    return RedFlag("nonfinite_gradients", "NaN or infinite input gradients", verdict, share,
                   f"{share:.0%} of clean-correct samples have NaN or infinite input gradients"
                   + ("; gradient attacks are blind there" if verdict != "ok" else ""))


def check_randomized(model: Any, x: np.ndarray, batch_size: int) -> RedFlag:
    first = model.logits(x, batch_size=batch_size)
    second = model.logits(x, batch_size=batch_size)
    scale = float(first.abs().max().clamp_min(1e-6))
    diff = float((first - second).abs().max()) / scale
    flips = float((first.argmax(1) != second.argmax(1)).float().mean())
    verdict: Verdict = "likely masked" if flips > 0 or diff > 1e-2 else "suspicious" if diff > 1e-4 else "ok"
    return RedFlag("randomized_outputs", "Non-deterministic outputs", verdict, diff,
                   f"two passes on the same inputs differ by {diff:.2g} (relative), {flips:.0%} of predictions flip"
                   + ("; a randomized model needs expectation-over-transformation attacks, single-sample "
                      "numbers overstate robustness" if verdict != "ok" else ""))


def check_probability_outputs(model: Any, logits: torch.Tensor) -> RedFlag:
    if model.output_kind == "probabilities":
        return RedFlag("probability_outputs", "Softmax outputs used as logits", "suspicious", 1.0,
                       "the model emits probabilities; attacks use their logarithm, which saturates (zero "
                       "gradients below 1e-12): give the pre-softmax logits if you can")
    looks = bool(((logits >= 0) & (logits <= 1)).all()) and bool(
        torch.allclose(logits.sum(dim=1), torch.ones(len(logits)), atol=1e-3))
    return RedFlag("probability_outputs", "Softmax outputs used as logits", "likely masked" if looks else "ok",
                   1.0 if looks else 0.0,
                   "the outputs declared as logits lie in [0, 1] and sum to 1: they are probabilities; losses on "
                   "them are squashed (set model.output: probabilities)" if looks
                   else "outputs are logits (not in [0, 1] summing to 1)")


def check_monotone(ev: NormEvaluation, n: int) -> RedFlag:
    """Each attack's own accuracy (before the worst case merges them) must not rise with eps."""
    slack = max(0.01, 2.0 / max(n, 1))
    worst_rise, where = 0.0, ""
    attacks = sorted({a for a, _ in ev.runs})
    for attack in attacks:
        accs = [ev.robust_accuracy(attack, e) for e in ev.eps]
        for e0, e1, a0, a1 in zip(ev.eps, ev.eps[1:], accs, accs[1:], strict=False):
            if a1 - a0 > worst_rise:
                worst_rise, where = a1 - a0, f"{attack}: {a0:.3f} at eps={e0:g} -> {a1:.3f} at eps={e1:g}"
    if len(ev.eps) < 2:
        return RedFlag("accuracy_vs_eps", "Accuracy not decreasing with eps", "n/a", None, "needs two eps or more")
    verdict = _grade(worst_rise, slack, 0.05)
    return RedFlag("accuracy_vs_eps", "Accuracy not decreasing with eps", verdict, worst_rise,
                   f"largest rise of an attack's accuracy with eps: {worst_rise:.3f}"
                   + (f" ({where})" if where else ""))


def check_unbounded(model: Any, x: np.ndarray, y: np.ndarray, domain: Domain, norm: Norm, *,
                    steps: int, batch_size: int) -> RedFlag:
    title = "Unbounded attack does not reach 0%"
    if domain.masked:
        return RedFlag("unbounded_attack", title, "n/a", None,
                       "only some features may change, so an unbounded attack need not reach 0%")
    span = float((domain.upper - domain.lower).max())
    if not np.isfinite(span):
        span = float(np.abs(x).max()) * 4 + 1.0
    eps = span if norm == "linf" else span * float(np.sqrt(np.prod(x.shape[1:])))
    out = PGD(norm=norm, steps=steps, random_start=False)(model, x, y, eps=eps, domain=domain,
                                                          batch_size=batch_size)
    acc = float(out.robust.mean())
    return RedFlag("unbounded_attack", title, _grade(acc, 0.02, 0.10), acc,
                   f"PGD ({steps} steps, no random start) at eps={eps:g} (the whole input range) leaves "
                   f"{acc:.1%} accuracy" + ("; gradients do not lead to the boundary" if acc > 0.02 else ""))


def check_blackbox(model: Any, x: np.ndarray, y: np.ndarray, white_robust: np.ndarray, domain: Domain, *,
                   eps: float, norm: Norm, queries: int, batch_size: int) -> tuple[RedFlag, float]:
    title = "Black-box attack stronger than white-box"
    if norm != "linf":
        return RedFlag("blackbox_stronger", title, "n/a", None, "the square attack here is L-inf only"), np.nan
    out = Square(queries=queries)(model, x, y, eps=eps, domain=domain, batch_size=batch_size)
    missed = float((out.success & white_robust).mean())
    gap = float(white_robust.mean() - out.robust.mean())
    verdict: Verdict = "likely masked" if gap > 0.05 else "suspicious" if missed > 0.02 else "ok"
    return RedFlag("blackbox_stronger", title, verdict, missed,
                   f"square ({queries} queries) at eps={eps:g}: {out.robust.mean():.1%} accuracy vs white-box "
                   f"{white_robust.mean():.1%}; it fools {missed:.1%} of samples the white-box attacks missed"), \
        float(out.robust.mean())


def check_convergence(model: Any, x: np.ndarray, y: np.ndarray, domain: Domain, *, eps: float, norm: Norm,
                      steps: int, batch_size: int) -> RedFlag:
    short = PGD(norm=norm, steps=steps)(model, x, y, eps=eps, domain=domain, batch_size=batch_size)
    long = PGD(norm=norm, steps=4 * steps)(model, x, y, eps=eps, domain=domain, batch_size=batch_size)
    drop = float(short.robust.mean() - long.robust.mean())
    return RedFlag("no_convergence", "More iterations still lower accuracy", _grade(drop, 0.03, 0.10), drop,
                   f"PGD at eps={eps:g}: {short.robust.mean():.1%} after {steps} steps, {long.robust.mean():.1%} "
                   f"after {4 * steps}" + ("; the attack has not converged, add steps" if drop > 0.03 else ""))


def check_restart_variance(model: Any, x: np.ndarray, y: np.ndarray, domain: Domain, *, eps: float, norm: Norm,
                           steps: int, restarts: int, batch_size: int) -> RedFlag:
    accs = []
    for _ in range(restarts):
        out = PGD(norm=norm, steps=steps)(model, x, y, eps=eps, domain=domain, batch_size=batch_size)
        accs.append(float(out.robust.mean()))
    spread = float(np.std(accs))
    return RedFlag("restart_variance", "Large variance across random restarts", _grade(spread, 0.03, 0.08), spread,
                   f"PGD at eps={eps:g} over {restarts} random starts: accuracy {min(accs):.1%}..{max(accs):.1%} "
                   f"(std {spread:.3f})" + ("; the loss surface is rugged, use many restarts" if spread > 0.03
                                            else ""))


def check_single_step(model: Any, x: np.ndarray, y: np.ndarray, iterative_robust: np.ndarray, domain: Domain,
                      *, eps: float, batch_size: int) -> RedFlag:
    out = FGSM()(model, x, y, eps=eps, domain=domain, batch_size=batch_size)
    gap = float(iterative_robust.mean() - out.robust.mean())
    return RedFlag("single_step_stronger", "Single-step attack stronger than iterative", _grade(gap, 0.02, 0.05),
                   gap, f"FGSM at eps={eps:g}: {out.robust.mean():.1%} accuracy vs iterative worst case "
                   f"{iterative_robust.mean():.1%}")


def perturbation_sanity(x: np.ndarray, x_adv: np.ndarray, eps: float, norm: Norm) -> float:
    """Largest perturbation norm (for the settings table: must be <= eps)."""
    return float(flat_norm(torch.as_tensor(x_adv - x), norm).max()) if len(x) else 0.0
