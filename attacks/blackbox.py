"""An honest headline for models without gradients (a ``predict_fn``, an ONNX graph that did not convert).

Score- and decision-based attacks only find an upper bound on robust accuracy. For each norm this module

- draws the **per-query success curve** of every score-based attack (share of the attacked samples fooled within
  q queries; ``AttackOutput.success_query``) as a report figure, and measures its rise over the last fifth of the
  budget (``converged``: at most ``black_box.converged_gain``);
- runs a **transfer attack** (black boxes only): a surrogate, the user's ``escalation.surrogate`` or one distilled
  from the black box's own scores on the audit data and seeded noisy copies of it (``black_box.augment`` copies per
  sample, noise inside the largest eps), attacked white-box with APGD (CE and DLR), its adversarial examples
  replayed on the black box and folded into the per-sample worst case; the surrogate's agreement with the black
  box's predictions is recorded;
- says why the headline is not reliable: "black-box only" unless every score-based attack converged and a transfer
  attack ran. The metric ``black_box_only`` (1) makes the report's headline card say "upper bound".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from attacks.base import AttackOutput, Domain
from attacks.evaluate import NormEvaluation
from audit.keys import metric_key
from audit.plugin import Params
from audit.results import SectionResult

if TYPE_CHECKING:
    from torch import nn

    from attacks.escalate import EscalationParams
    from audit.context import AuditContext
    from audit.model import ModelAdapter

CURVE_POINTS = 41


class BlackBoxParams(Params):
    converged_gain: float = Field(
        default=0.005, ge=0, le=1, description="a score-based attack converged when its success rate rose by at most "
        "this over the last fifth of its query budget")
    transfer: Literal["auto", "never"] = Field(
        default="auto", description="auto: a transfer attack from a surrogate when the model has no gradients")
    augment: int = Field(default=4, ge=0, le=100, description="noisy copies per audit sample the surrogate is "
                         "distilled on (each costs one query of the black box)")
    epochs: int = Field(default=40, ge=1, le=1000, description="epochs of the surrogate's distillation")
    width: int = Field(default=32, ge=4, le=512, description="channels (images) or hidden units (tabular) of the "
                       "surrogate")


@dataclass
class BlackBoxRun:
    norm: str
    curves: dict[tuple[str, float], tuple[list[float], list[float], float]] = field(default_factory=dict)
    transfer: list[str] = field(default_factory=list)  # the transfer attacks that ran
    agreement: float | None = None
    reasons: list[str] = field(default_factory=list)


def success_curve(run: AttackOutput, clean_correct: np.ndarray) -> tuple[list[float], list[float], float]:
    """(queries, success rate over the attacked samples, rise over the last fifth of the budget)."""
    budget = max(run.queries, 1)
    attacked = max(int(clean_correct.sum()), 1)
    assert run.success_query is not None
    found = np.where(run.success & clean_correct, run.success_query, np.inf)
    grid = np.unique(np.linspace(0, budget, CURVE_POINTS).round())
    rates = [float((found <= q).sum() / attacked) for q in grid]
    gain = float((found <= budget).sum() - (found <= math.floor(0.8 * budget)).sum()) / attacked
    return [float(q) for q in grid], rates, gain


def black_box(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, domain: Domain, *,
              params: BlackBoxParams, escalation: EscalationParams, steps: int, section: str) -> BlackBoxRun:
    """The curves of every score-based run; for a model without gradients the transfer attack (folded into ``ev``)
    and the reasons the headline is only an upper bound."""
    out = BlackBoxRun(ev.norm)
    for (name, e), run in ev.runs.items():
        if run.success_query is not None:
            out.curves[(name, e)] = success_curve(run, ev.clean_correct)
    if ctx.model.has_gradients:
        return out
    if params.transfer == "auto":
        _transfer(ctx, ev, x, y, domain, params, escalation, steps=steps, section=section, out=out)
    slow = {k: c[2] for k, c in out.curves.items() if c[2] > params.converged_gain}
    missing = []
    if not out.curves:
        missing.append("no score-based attack recorded a per-query success curve (square is off)")
    if slow:
        (name, e), gain = max(slow.items(), key=lambda kv: kv[1])
        missing.append(f"{name} at eps={e:g} had not converged: its success rate still rose by {gain:.1%} over the "
                       f"last fifth of its queries (more than black_box.converged_gain {params.converged_gain:g}; "
                       f"raise sections.{section}.square_queries)")
    if not out.transfer:
        missing.append(f"no transfer attack ran (sections.{section}.black_box.transfer)")
    if missing:
        out.reasons.append(f"black-box only: the model ({ctx.model.kind}) has no gradients, so the {ev.norm} worst "
                           "case comes from score/decision-based and transfer attacks and is an upper bound on "
                           "robust accuracy; " + "; ".join(missing))
    return out


def _transfer(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, domain: Domain,
              params: BlackBoxParams, escalation: EscalationParams, *, steps: int, section: str,
              out: BlackBoxRun) -> None:
    from attacks.adaptive import AdaptiveSpec, CraftingAdapter, run_adaptive
    from attacks.apgd import APGD
    from attacks.escalate import _full, fold, load_surrogate

    if escalation.surrogate is not None:
        crafting = load_surrogate(ctx, escalation, section=section)
        description = f"surrogate {escalation.surrogate}"
    else:
        module = distill(ctx.model, x, domain, params, eps=max(ev.eps), norm=ev.norm, seed=ctx.seed)
        description = (f"a surrogate distilled on the black box's scores for {len(x)} audit samples and "
                       f"{params.augment} noisy copies of each ({params.epochs} epochs)")
        crafting = CraftingAdapter(ctx.model, module, kind="surrogate", description=description)
    black = ctx.model.predict(x)
    out.agreement = float((crafting.predict(x) == black).mean()) if len(x) else None
    rows = np.flatnonzero(ev.clean_correct)
    runs: list[AttackOutput] = []
    for loss in ("ce", "dlr"):
        spec = AdaptiveSpec(f"transfer_apgd_{loss}", "transfer", APGD(norm=ev.norm, steps=steps, loss=loss),
                            crafting, description)
        for e in ev.eps:
            got = run_adaptive(spec, ctx.model, x[rows], y[rows], eps=e, domain=domain, batch_size=ctx.batch_size,
                               progress=ctx.progress) if len(rows) else None
            runs.append(_full(got, rows, x, ev, spec.name, e, {**spec.attack.settings(), "attack": spec.name,
                                                                   "crafted_on": description}))
        ev.attacks[spec.name] = spec.attack
        out.transfer.append(spec.name)
    fold(ev, runs, x)


def _surrogate_module(shape: tuple[int, ...], classes: int, width: int) -> nn.Module:
    from torch import nn

    if len(shape) == 3:
        c, h, w = shape
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU()]
        if min(h, w) >= 8:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                   nn.Linear(2 * width * 16, 4 * width), nn.ReLU(), nn.Linear(4 * width, classes)]
        return nn.Sequential(*layers)
    d = int(np.prod(shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 8 * width), nn.ReLU(), nn.Linear(8 * width, 8 * width), nn.ReLU(),
                         nn.Linear(8 * width, classes))


def distill(model: ModelAdapter, x: np.ndarray, domain: Domain, params: BlackBoxParams, *, eps: float, norm: str,
            seed: int) -> nn.Module:
    """A torch network trained to match the black box's probabilities on ``x`` and ``params.augment`` seeded noisy
    copies of each sample (noise inside ``eps``: uniform for linf, Gaussian scaled to eps for l2, clipped to the
    domain)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    copies = [xt]
    for _ in range(params.augment):
        if norm == "linf":
            noise = (torch.rand(xt.shape, generator=gen) * 2 - 1) * eps
        else:
            noise = torch.randn(xt.shape, generator=gen)
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (xt.ndim - 1)) * eps
        copies.append(domain.to(torch.device("cpu")).project(xt + noise, xt, eps, norm))  # type: ignore[arg-type]
    inputs = torch.cat(copies)
    teacher = model.probabilities(inputs).float()
    module = _surrogate_module(tuple(x.shape[1:]), model.num_classes, params.width)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    for _ in range(params.epochs):
        order = torch.randperm(len(inputs), generator=gen)
        for start in range(0, len(inputs), 128):
            batch = order[start : start + 128]
            log_p = torch.log_softmax(module(inputs[batch]), dim=1)
            loss = -(teacher[batch] * log_p).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module = module.eval().to(model.device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def record(result: SectionResult, run: BlackBoxRun, *, section: str) -> list[str]:
    """The per-query success figure, each curve's rise over its last fifth, the transfer attack's agreement."""
    for (name, e), (_, _, gain) in run.curves.items():
        result.metric(metric_key("query_curve", name, run.norm, ("eps", e), "last_fifth_gain"), gain)
    if run.curves:
        series = [{"label": f"{name} eps={e:g}", "x": qs, "y": rates}
                  for (name, e), (qs, rates, _) in run.curves.items()]
        result.figure({"name": f"query_success_{run.norm}", "title": f"Success rate vs queries ({run.norm})",
                       "kind": "line", "series": series, "xlabel": "queries per sample",
                       "ylabel": "share of attacked samples fooled", "ylim": [0.0, 1.0]})
    if run.agreement is not None:
        result.metric(metric_key("transfer", run.norm, "surrogate_agreement"), run.agreement)
        result.notes.append(f"{run.norm}: transfer attacks ({', '.join(run.transfer)}) crafted on a surrogate that "
                            f"agrees with the black box on {run.agreement:.1%} of the audit samples")
    return run.reasons


def budget_note(queries: int, gradients: bool, key: str) -> str:
    """The note saying which default budget Square got (``key`` sets another)."""
    where = "beside gradient attacks" if gradients else "without gradients (AutoAttack's)"
    return f"square: {queries:,} queries per sample, the default {where} ({key})"
