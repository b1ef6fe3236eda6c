"""Robustness of a multi-label model: can an eps-bounded perturbation flip any of its labels, and which?

Per norm (L-inf, L2) and eps, PGD with a random start, ``steps`` steps of 2.5 * eps / steps and ``restarts``:

- any label: maximize max_j (-s_j * z_j), where z_j is label j's logit and s_j = +1 if the model predicts the label
  on the clean input, -1 if not (positive once some label flipped); success: some label's prediction differs
  from the clean prediction, under this attack or one of the per-label ones (the worst case over the attacks);
- per label: maximize -s_j * z_j for one label j; success: label j flipped.

Recorded per (norm, eps): ``robustness.<norm>.eps=<e>.any_label_flip_rate``, ``.robust_subset_accuracy`` (exact
match on the clean input and no label flipped), ``.label=<name>.flip_rate`` and ``.worst_label_flip_rate``; a
curve and a headline finding. Success is verified by a forward pass on the kept input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attacks.base import Domain, Norm, random_start, step_direction
from attacks.regression import Settings
from audit.engine.chunks import chunk_seed, seed_all
from audit.keys import metric_key

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import Direction, SectionResult

DIRECTIONS: dict[str, Direction] = {"*.any_label_flip_rate": "lower", "*.flip_rate": "lower",
                                    "*.worst_label_flip_rate": "lower", "*.robust_subset_accuracy": "higher",
                                    "clean_subset_accuracy": "higher"}
Objective = Callable[[torch.Tensor], torch.Tensor]  # logits (n, L) -> (n,) to maximize; > 0: the attack succeeded


def pgd_flip(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, objective: Objective, *, eps: float,
             norm: Norm, domain: Domain, steps: int, restarts: int) -> torch.Tensor:
    """PGD maximizing ``objective``; per sample the first iterate that succeeds, else the best one."""
    step = 2.5 * eps / steps
    best_x = x.clone()
    with torch.no_grad():
        best = objective(forward(x))
    for _ in range(restarts):
        x_adv = random_start(x, eps, norm, domain)
        for i in range(steps + 1):
            x_adv = x_adv.detach().requires_grad_(True)
            value = objective(forward(x_adv))
            better = (value.detach() > best) & (best <= 0)  # a success is kept, not traded for a larger one
            best = torch.where(better, value.detach(), best)
            best_x[better] = x_adv.detach()[better]
            if i == steps or bool((best > 0).all()):
                break
            (grad,) = torch.autograd.grad(value.sum(), x_adv)
            x_adv = domain.project(x_adv.detach() + step * step_direction(grad, norm, domain), x, eps, norm)
    return best_x


def any_label(sign: torch.Tensor) -> Objective:
    """The largest margin toward flipping over the labels."""
    return lambda z: (-sign * z).amax(dim=1)


def one_label(sign: torch.Tensor, j: int) -> Objective:
    """Label j's margin toward flipping."""
    return lambda z: -sign[:, j] * z[:, j]


def flipped(forward: Callable[[torch.Tensor], torch.Tensor], x_adv: torch.Tensor, clean: torch.Tensor,
            ) -> torch.Tensor:
    """(n, L) bool: the label's prediction on ``x_adv`` differs from ``clean`` (one forward pass on it)."""
    with torch.no_grad():
        return (forward(x_adv) >= 0).long() != clean


@dataclass(frozen=True)
class FlipOutcome:
    norm: Norm
    eps: float
    any_flipped: np.ndarray  # (n,) bool: some label flipped under the any-label attack
    label_flipped: np.ndarray  # (n, L) bool: label j flipped under the attack on label j


def attack_labels(ctx: AuditContext, x: np.ndarray, clean: np.ndarray, *, norm: Norm, eps: float, domain: Domain,
                  steps: int, restarts: int, section: str) -> FlipOutcome:
    model, device = ctx.model, ctx.device
    n_labels = clean.shape[1]
    seed_all(chunk_seed(ctx.seed, section, norm, f"multilabel eps={eps:g}"))
    any_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for start in range(0, len(x), ctx.batch_size):
        xb = torch.as_tensor(x[start : start + ctx.batch_size], dtype=torch.float32, device=device)
        pb = torch.as_tensor(clean[start : start + ctx.batch_size], device=device)
        sign = 2.0 * pb.float() - 1.0
        x_any = pgd_flip(model.forward, xb, any_label(sign), eps=eps, norm=norm, domain=domain, steps=steps,
                         restarts=restarts)
        per = []
        for j in range(n_labels):
            x_j = pgd_flip(model.forward, xb, one_label(sign, j), eps=eps, norm=norm, domain=domain, steps=steps,
                           restarts=restarts)
            per.append(flipped(model.forward, x_j, pb)[:, j].cpu().numpy())
        label_parts.append(np.stack(per, axis=1))
        # the worst case over the attacks: the any-label attack or one of the per-label ones
        any_parts.append(flipped(model.forward, x_any, pb).any(dim=1).cpu().numpy() | label_parts[-1].any(axis=1))
    return FlipOutcome(norm, eps, np.concatenate(any_parts), np.concatenate(label_parts))


def run_multilabel(ctx: AuditContext, result: SectionResult, params: Settings, section: str, domain: Domain,
                   index: np.ndarray) -> None:
    """The robustness section for a multi-label model on the rows ``index`` (``attacks.tasks`` sets them up)."""
    data = ctx.data
    clean = ctx.clean_label_predictions()[index]
    exact = (clean == data.y[index]).all(axis=1)
    result.metric("clean_subset_accuracy", float(exact.mean()))
    result.metric("n_samples", len(index))
    pairs = [(norm, eps) for norm in params.norms() for eps in params.eps_for(norm) or []]
    outcomes = [attack_labels(ctx, data.x[index], clean, norm=norm, eps=eps, domain=domain, steps=params.steps,
                              restarts=params.restarts, section=section)
                for norm, eps in ctx.progress(pairs, desc="multi-label attacks", total=len(pairs))]
    _record(result, outcomes, exact, list(data.class_names), section)
    result.notes.append(f"PGD with a random start, {params.steps} steps, {params.restarts} restart(s): one attack "
                        "on any label (the largest margin toward flipping) and one per label; a flip is a label "
                        "whose prediction (sigmoid >= 0.5) differs from the clean input's")


def _record(result: SectionResult, outcomes: list[FlipOutcome], exact: np.ndarray, names: list[str],
            section: str) -> None:
    rows: list[list[Any]] = []
    for o in outcomes:
        key = (o.norm, ("eps", o.eps))
        rates = o.label_flipped.mean(axis=0)
        result.metric(metric_key(*key, "any_label_flip_rate"), float(o.any_flipped.mean()))
        result.metric(metric_key(*key, "robust_subset_accuracy"), float((exact & ~o.any_flipped).mean()))
        result.metric(metric_key(*key, "worst_label_flip_rate"), float(rates.max()))
        for name, rate in zip(names, rates, strict=True):
            result.metric(metric_key(*key, ("label", _safe(name)), "flip_rate"), float(rate))
        rows.append([o.norm, o.eps, float(o.any_flipped.mean()), float((exact & ~o.any_flipped).mean()),
                     *map(float, rates)])
    result.table("multilabel_robustness", "Label flips under eps-bounded perturbations",
                 ["norm", "eps", "any_label_flip_rate", "robust_subset_accuracy", *[f"{n}_flip_rate" for n in names]],
                 rows, description="any label: the attack on the largest margin toward flipping; <label>_flip_rate: "
                                   "the attack on that label alone")
    norms = list(dict.fromkeys(o.norm for o in outcomes))
    result.figure({"name": "flip_curve", "title": "Share of samples with a flipped label vs. eps", "kind": "line",
                   "xlabel": "eps", "ylabel": "flip rate", "ylim": [0.0, 1.0],
                   "series": [{"label": f"any label ({n})", "x": [0.0, *[o.eps for o in outcomes if o.norm == n]],
                               "y": [0.0, *[float(o.any_flipped.mean()) for o in outcomes if o.norm == n]]}
                              for n in norms]})
    for n in norms:
        top = max((o for o in outcomes if o.norm == n), key=lambda o: o.eps)
        rates = top.label_flipped.mean(axis=0)
        worst = names[int(np.argmax(rates))]
        result.finding("info", f"{n} eps {top.eps:g}: {top.any_flipped.mean():.1%} of samples have a label flipped; "
                       f"the most fragile label is '{worst}' ({rates.max():.1%})",
                       code="robustness.multilabel_headline",
                       metric=metric_key(section, n, ("eps", top.eps), "any_label_flip_rate"),
                       value=float(top.any_flipped.mean()))


def _safe(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return out or "label"
