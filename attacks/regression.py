"""Robustness of a regression model: how far can an eps-bounded perturbation move its prediction, and how much
worse can it make its error?

Two PGD attacks per norm (L-inf, L2) and eps, each with a random start, ``steps`` steps of 2.5 * eps / steps
(Madry et al. 2018) and ``restarts``, keeping per sample the best iterate of every restart:

- output change: maximize |f(x + d) - f(x)| (the prediction's sensitivity, no target needed);
- error: maximize |f(x + d) - y| (the loss, here the absolute error: squared error has the same maximizer).

Per (norm, eps) the section records ``robustness.<norm>.eps=<e>.mean_output_change``, ``.max_output_change``,
``.adversarial_mae``, ``.adversarial_rmse`` and ``.error_increase`` (adversarial MAE - clean MAE), two curves over
eps and a headline finding; perturbations stay within the data's bounds and its perturbable features
(``attacks.base.Domain``). Every reported value comes from a forward pass on the kept adversarial input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from attacks.base import Domain, Norm, random_start, step_direction
from audit.engine.chunks import chunk_seed, seed_all
from audit.keys import metric_key

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import Direction, SectionResult

Forward = Any  # x -> (N, 1) differentiable outputs


class Settings(Protocol):
    """What this module reads of the robustness section's parameters (``RobustnessParams``)."""

    steps: int
    restarts: int
    max_samples: int | None

    def norms(self) -> list[Norm]: ...

    def eps_for(self, norm: Norm) -> list[float] | None: ...


DIRECTIONS: dict[str, Direction] = {
    "clean_mae": "lower", "clean_rmse": "lower", "*.mean_output_change": "lower", "*.max_output_change": "lower",
    "*.adversarial_mae": "lower", "*.adversarial_rmse": "lower", "*.error_increase": "lower"}


@dataclass(frozen=True)
class RegressionAttack:
    """What one (norm, eps) did, per attacked sample."""

    norm: Norm
    eps: float
    output_change: np.ndarray  # (n,) |f(x_adv) - f(x)| under the output-change attack
    adversarial_error: np.ndarray  # (n,) |f(x_adv) - y| under the error attack
    max_perturbation: float  # largest norm of a kept perturbation (<= eps)


def pgd_regression(forward: Forward, x: torch.Tensor, reference: torch.Tensor, *, eps: float, norm: Norm,
                   domain: Domain, steps: int, restarts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD maximizing |f(x + d) - reference| per sample; returns (the best input, its |f - reference|), the value
    from the forward pass on that input."""
    step = 2.5 * eps / steps
    best_x, best = x.clone(), (forward(x)[:, 0] - reference).abs().detach()
    for _ in range(restarts):
        x_adv = random_start(x, eps, norm, domain)
        for i in range(steps + 1):
            x_adv = x_adv.detach().requires_grad_(True)
            value = (forward(x_adv)[:, 0] - reference).abs()
            better = value.detach() > best
            best = torch.where(better, value.detach(), best)
            best_x[better] = x_adv.detach()[better]
            if i == steps:
                break
            (grad,) = torch.autograd.grad(value.sum(), x_adv)
            x_adv = domain.project(x_adv.detach() + step * step_direction(grad, norm, domain), x, eps, norm)
    return best_x, best


def attack_regression(ctx: AuditContext, x: np.ndarray, y: np.ndarray, *, norm: Norm, eps: float, domain: Domain,
                      steps: int, restarts: int, section: str) -> RegressionAttack:
    """Both attacks on every sample, batched on the model's device."""
    from attacks.base import flat_norm

    model, device = ctx.model, ctx.device
    changes: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    largest = 0.0
    seed_all(chunk_seed(ctx.seed, section, norm, f"regression eps={eps:g}"))
    for start in range(0, len(x), ctx.batch_size):
        xb = torch.as_tensor(x[start : start + ctx.batch_size], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[start : start + ctx.batch_size], dtype=torch.float32, device=device)
        with torch.no_grad():
            clean = model.forward(xb)[:, 0]
        for reference, out in ((clean, changes), (yb, errors)):
            x_adv, value = pgd_regression(model.forward, xb, reference, eps=eps, norm=norm, domain=domain,
                                          steps=steps, restarts=restarts)
            with torch.no_grad():  # the reported value: one forward pass on the kept input
                value = (model.forward(x_adv)[:, 0] - reference).abs()
            out.append(value.double().cpu().numpy())
            largest = max(largest, float(flat_norm(x_adv - xb, norm).max()))
    return RegressionAttack(norm, eps, np.concatenate(changes), np.concatenate(errors), largest)


def run_regression(ctx: AuditContext, result: SectionResult, params: Settings, section: str, domain: Domain,
                   index: np.ndarray) -> None:
    """The robustness section for a regression model on the rows ``index`` (``attacks.tasks`` sets them up)."""
    data = ctx.data
    x, y = data.x[index], data.y[index]
    clean_error = np.abs(ctx.clean_values()[index] - y)
    clean_mae, clean_rmse = float(clean_error.mean()), float(np.sqrt((clean_error ** 2).mean()))
    result.metric("clean_mae", clean_mae)
    result.metric("clean_rmse", clean_rmse)
    result.metric("n_samples", len(y))
    runs: list[RegressionAttack] = []
    pairs = [(norm, eps) for norm in params.norms() for eps in params.eps_for(norm) or []]
    for norm, eps in ctx.progress(pairs, desc="regression attacks", total=len(pairs)):
        runs.append(attack_regression(ctx, x, y, norm=norm, eps=eps, domain=domain, steps=params.steps,
                                      restarts=params.restarts, section=section))
    _record(ctx, result, runs, clean_mae, index, section)
    result.notes.append(f"PGD with a random start, {params.steps} steps of 2.5 * eps / steps, {params.restarts} "
                        "restart(s), maximizing |f(x + d) - f(x)| (output change) and |f(x + d) - y| (error); "
                        "values from a forward pass on the kept input; a lower bound on the true worst case")


def _record(ctx: AuditContext, result: SectionResult, runs: list[RegressionAttack], clean_mae: float,
            index: np.ndarray, section: str) -> None:
    rows: list[list[Any]] = []
    outcomes: dict[str, np.ndarray] = {}
    for run in runs:
        key = (run.norm, ("eps", run.eps))
        adv_mae = float(run.adversarial_error.mean())
        values = {"mean_output_change": float(run.output_change.mean()),
                  "max_output_change": float(run.output_change.max()), "adversarial_mae": adv_mae,
                  "adversarial_rmse": float(np.sqrt((run.adversarial_error ** 2).mean())),
                  "error_increase": adv_mae - clean_mae}
        for name, value in values.items():
            result.metric(metric_key(*key, name), value)
        outcomes[metric_key(*key, "adversarial_mae")] = run.adversarial_error
        rows.append([run.norm, run.eps, *values.values(), run.max_perturbation])
    result.table("regression_robustness", "Worst-case output change and error under eps-bounded perturbations",
                 ["norm", "eps", "mean_output_change", "max_output_change", "adversarial_mae", "adversarial_rmse",
                  "error_increase", "max_perturbation"], rows,
                 description="output change: |f(x + d) - f(x)| under the attack that maximizes it; adversarial "
                             "MAE/RMSE: the error under the attack that maximizes |f(x + d) - y|; target units")
    norms = list(dict.fromkeys(r.norm for r in runs))
    per = {n: [r for r in runs if r.norm == n] for n in norms}
    result.figure({"name": "output_change_curve", "title": "Worst-case output change vs. eps", "kind": "line",
                   "xlabel": "eps", "ylabel": "|f(x + d) - f(x)| (target units)",
                   "series": [s for n in norms for s in (
                       {"label": f"mean ({n})", "x": [0.0, *[r.eps for r in per[n]]],
                        "y": [0.0, *[float(r.output_change.mean()) for r in per[n]]]},
                       {"label": f"max ({n})", "x": [0.0, *[r.eps for r in per[n]]],
                        "y": [0.0, *[float(r.output_change.max()) for r in per[n]]], "style": "--"})]})
    result.figure({"name": "error_curve", "title": "Adversarial MAE vs. eps (eps 0: clean)", "kind": "line",
                   "xlabel": "eps", "ylabel": "MAE (target units)",
                   "series": [{"label": n, "x": [0.0, *[r.eps for r in per[n]]],
                               "y": [clean_mae, *[float(r.adversarial_error.mean()) for r in per[n]]]}
                              for n in norms]})
    for n in norms:
        top = max(per[n], key=lambda r: r.eps)
        adv = float(top.adversarial_error.mean())
        result.finding("info", f"{n} eps {top.eps:g}: the prediction moves by up to {top.output_change.max():.4g} "
                       f"(mean {top.output_change.mean():.4g}) and the MAE rises from {clean_mae:.4g} to {adv:.4g} "
                       f"({(adv - clean_mae) / max(clean_mae, 1e-12):+.0%})", code="robustness.regression_headline",
                       metric=metric_key(section, n, ("eps", top.eps), "adversarial_mae"), value=adv)
    from audit.outcomes import save_outcomes

    save_outcomes(ctx, result, sample_id=index, values=outcomes,
                  meta={k: {"kind": "absolute_error"} for k in outcomes})

