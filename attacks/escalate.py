"""Escalation: when a red flag says the robustness headline is likely masked, attack the way an adaptive attacker
would, fold the successes into the per-sample worst case, and say whether the result can now be trusted.

What runs (each at every eps, on every clean-correct sample, so each attack's own robust accuracy is exact):

- Square (score-based, L-inf), unless the headline already ran it: it needs no gradient at all;
- BPDA: APGD-CE and APGD-DLR on the model with every detected non-differentiable op made straight-through
  (its value, the identity's gradient), replayed on the model (``attacks.adaptive.straight_through``);
- transfer: APGD-DLR crafted on a surrogate and replayed on the model: the surrogate named in
  ``escalation.surrogate``, or by default the model with those ops replaced by the identity;
- EOT: when the model's outputs are randomized, every gradient attack above averages ``eot_samples`` draws.

After folding, the headline is trusted again only when an adaptive white-box attack applied and two sanity
checks pass on it: Square finds no more than ``blackbox_masked`` of the samples the adaptive attacks miss, and
the adaptive APGD-DLR allowed the whole input box leaves at most ``unbounded_masked`` accuracy (the thresholds of
``red_flag_params``). Otherwise ``robustness.reliable`` stays 0 with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from attacks.adaptive import AdaptiveSpec, CraftingAdapter, eot, run_adaptive, straight_through
from attacks.apgd import APGD
from attacks.base import AttackOutput, Domain
from attacks.evaluate import NormEvaluation, _expand
from attacks.redflags import RedFlag, RedFlagParams, box_span
from attacks.square import Square
from audit.errors import ConfigError
from audit.keys import metric_key
from audit.plugin import Params
from audit.results import SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.model import ModelAdapter


class EscalationParams(Params):
    enabled: bool = Field(default=True, description="escalate when a red flag says likely masked (docs/defenses.md)")
    square: bool = Field(default=True, description="run the Square attack (L-inf) when the headline did not")
    eot_samples: int = Field(default=8, ge=1, le=1000,
                             description="draws averaged per gradient on a randomized model (EOT)")
    surrogate: str | None = Field(
        default=None, description="'package.module:factory' returning a trained torch module on raw inputs to craft "
        "transfer attacks on (default: the model without its detected non-differentiable ops)")
    surrogate_weights: str | None = Field(default=None, description="state_dict file for the surrogate (torch.save)")


@dataclass
class Escalation:
    """What the escalation did for one norm."""

    norm: str
    ran: list[str] = field(default_factory=list)
    before: dict[float, float] = field(default_factory=dict)  # eps -> worst-case accuracy before escalating
    resolved: set[str] = field(default_factory=set)  # red-flag codes the adaptive attacks answer
    reasons: list[str] = field(default_factory=list)  # why the headline still cannot be trusted
    notes: list[str] = field(default_factory=list)

    @property
    def happened(self) -> bool:
        return bool(self.before)


def masked_flags(flags: list[RedFlag], norm: str) -> list[RedFlag]:
    return [f for f in flags if f.verdict == "likely masked" and f.code.endswith(f".{norm}")]


def escalate(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, domain: Domain,
             flags: list[RedFlag], check_rows: np.ndarray, *, params: EscalationParams, steps: int,
             square_queries: int, red_flag_params: RedFlagParams, section: str = "robustness") -> Escalation:
    """Run the adaptive attacks when a flag of this norm says likely masked; fold them into ``ev`` in place."""
    esc = Escalation(ev.norm)
    masked = masked_flags(flags, ev.norm)
    if not masked or not params.enabled:
        return esc
    esc.before = {e: ev.worst_accuracy(e) for e in ev.eps}
    model, bs = ctx.model, ctx.batch_size
    randomized = any(f.code.startswith("randomized_outputs") and f.raised for f in flags)
    specs = _specs(ctx, ev, x, params, steps=steps, randomized=randomized, section=section, esc=esc)
    rows = np.flatnonzero(ev.clean_correct)  # every attack on every clean-correct sample: its own number is exact
    runs: list[AttackOutput] = []
    if params.square and ev.norm == "linf" and not any(name == "square" for name, _ in ev.runs):
        square = Square(norm="linf", queries=square_queries)
        for e in ev.eps:
            out = square(model, x[rows], y[rows], eps=e, domain=domain, batch_size=bs, progress=ctx.progress) \
                if len(rows) else None
            runs.append(_full(out, rows, x, ev, square.name, e, square.settings()))
        ev.attacks[square.name] = square
        esc.ran.append(square.name)
    for spec in specs:
        for e in ev.eps:
            out = run_adaptive(spec, model, x[rows], y[rows], eps=e, domain=domain, batch_size=bs,
                               progress=ctx.progress) if len(rows) else None
            runs.append(_full(out, rows, x, ev, spec.name, e, {**spec.attack.settings(), "attack": spec.name}))
        ev.attacks[spec.name] = spec.attack
        esc.ran.append(spec.name)
    fold(ev, runs, x)
    white = [s for s in specs if s.kind in ("bpda", "eot")]
    if not white:
        advice = "it comes from black-box and transfer attacks only" if params.surrogate is not None else \
            f"name a surrogate model in sections.{section}.escalation.surrogate"
        esc.reasons.append(f"the {ev.norm} gradients are likely masked and no adaptive white-box attack applies (no "
                           "non-differentiable op detected, outputs not randomized): the headline holds "
                           f"{', '.join(esc.ran) or 'no other attack'}'s successes but may still overstate robustness;"
                           f" {advice}")
        return esc
    esc.reasons += _sanity(ctx, ev, x, y, domain, white, check_rows, red_flag_params)
    if not esc.reasons:
        esc.resolved = {f.code for f in masked}
    return esc


def _specs(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, params: EscalationParams, *, steps: int,
           randomized: bool, section: str, esc: Escalation) -> list[AdaptiveSpec]:
    model = ctx.model
    probe = x[ev.clean_correct][:8]
    specs: list[AdaptiveSpec] = []
    if model.has_gradients:
        bpda, ops = straight_through(model, mode="bpda", probe=probe)
        base: ModelAdapter | None = bpda
        if bpda is None and randomized:
            base = CraftingAdapter(model, model.forward, kind="model", description="the model")
        if base is not None:
            crafting: ModelAdapter = base
            kind: Any = "bpda" if bpda is not None else "eot"
            if randomized:
                crafting = CraftingAdapter(model, eot(base.forward, params.eot_samples), kind="eot",
                                           description=f"EOT over {params.eot_samples} draws of "
                                           f"{getattr(base, 'description', 'the model')}")
            prefix = "bpda" if bpda is not None else "eot"
            description = getattr(crafting, "description", prefix)
            for loss in ("ce", "dlr"):
                specs.append(AdaptiveSpec(f"{prefix}_apgd_{loss}", kind, APGD(norm=ev.norm, steps=steps, loss=loss),
                                          crafting, description))
        if not ops:
            esc.notes.append(f"{ev.norm}: no non-differentiable op (round, floor, ceil, trunc, sign, detach) detected "
                             "in the model's forward: no straight-through BPDA")
        if params.surrogate is None and bpda is not None:
            smooth, _ = straight_through(model, mode="identity", probe=probe)
            if smooth is not None:
                specs.append(AdaptiveSpec("transfer_apgd_dlr", "transfer", APGD(norm=ev.norm, steps=steps, loss="dlr"),
                                          smooth, smooth.description))
    if params.surrogate is not None:
        surrogate = load_surrogate(ctx, params, section=section)
        specs.append(AdaptiveSpec("transfer_apgd_dlr", "transfer", APGD(norm=ev.norm, steps=steps, loss="dlr"),
                                  surrogate, f"surrogate {params.surrogate}"))
    return specs


def load_surrogate(ctx: AuditContext, params: EscalationParams, *, section: str) -> ModelAdapter:
    """The user's surrogate as an adapter on the model's device, with the model's classes and bounds."""
    import torch
    from torch import nn

    from audit.model import import_object

    key = f"sections.{section}.escalation.surrogate"
    factory = import_object(str(params.surrogate), key)
    if not callable(factory):
        raise ConfigError(key, f"'{params.surrogate}' is not callable; give a factory returning a torch module")
    module = factory()
    if not isinstance(module, nn.Module):
        raise ConfigError(key, f"'{params.surrogate}' returned {type(module).__name__}, not a torch nn.Module")
    if params.surrogate_weights is not None:
        wkey = f"sections.{section}.escalation.surrogate_weights"
        if not Path(params.surrogate_weights).is_file():
            raise ConfigError(wkey, f"{params.surrogate_weights} is not a file")
        try:
            module.load_state_dict(torch.load(params.surrogate_weights, map_location="cpu", weights_only=True))
        except Exception as err:
            raise ConfigError(wkey, f"cannot load the surrogate's weights: {err}") from err
    module = module.to(ctx.model.device).eval()
    probe = torch.as_tensor(ctx.data.x[:2], dtype=torch.float32, device=ctx.model.device)
    try:
        with torch.no_grad():
            width = module(probe).shape[-1]
    except Exception as err:
        raise ConfigError(key, f"the surrogate fails on the data's inputs: {type(err).__name__}: {err}") from err
    if width != ctx.model.num_classes:
        raise ConfigError(key, f"the surrogate returns {width} scores per sample; the model has "
                          f"{ctx.model.num_classes} classes")
    for p in module.parameters():
        p.requires_grad_(False)
    return CraftingAdapter(ctx.model, module, kind="surrogate", description=f"surrogate {params.surrogate}")


def _full(out: AttackOutput | None, rows: np.ndarray, x: np.ndarray, ev: NormEvaluation, name: str, eps: float,
          settings: dict[str, Any]) -> AttackOutput:
    """An attack run on some rows as rows for every sample (the others: clean, not successful)."""
    if out is None:
        out = AttackOutput(name, ev.norm, eps, x[:0], np.zeros(0, bool), np.zeros(0, np.float32), 0.0, settings)
    out.attack, out.eps = name, eps
    return _expand(out, rows, x, len(x))


def fold(ev: NormEvaluation, runs: list[AttackOutput], x: np.ndarray) -> None:
    """Add ``runs`` (rows: every sample) to ``ev`` and to its per-sample worst case, as if they had run with the
    headline attacks: a success at an eps counts at every larger eps; the first run to fool a sample names it."""
    for run in runs:
        assert run.eps is not None
        ev.runs[(run.attack, run.eps)] = run
    min_eps = ev.min_eps if ev.min_eps is not None else np.where(ev.clean_correct, np.inf, 0.0)
    hit = np.zeros(len(ev.clean_correct), bool)
    x_hit: np.ndarray | None = None
    name_hit = np.full(len(hit), "", dtype=object)
    for e in ev.eps:
        for run in runs:
            if run.eps != e:
                continue
            new = run.success & ev.clean_correct & ~hit
            if x_hit is None:
                x_hit = np.array(run.x_adv)
            x_hit[new] = run.x_adv[new]
            name_hit[new] = run.attack
            hit |= new
        if x_hit is None:
            continue
        newly = ev.fold_worst(e, hit, x_hit, name_hit, x)  # also the example file and the worst-case sizes
        min_eps = np.where(newly & (min_eps > e), e, min_eps)
    ev.min_eps = min_eps


def _sanity(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, domain: Domain,
            white: list[AdaptiveSpec], check_rows: np.ndarray, fp: RedFlagParams) -> list[str]:
    """Reasons the escalated headline still cannot be trusted (empty: it can)."""
    reasons: list[str] = []
    n_ok = max(int(ev.clean_correct.sum()), 1)
    names = [s.name for s in white]
    if any(name == "square" for name, _ in ev.runs):
        worst_gap, worst_e = 0.0, ev.eps[0]
        for e in ev.eps:
            gap = float((ev.runs[("square", e)].success & ev.clean_correct & ~ev.fooled_under(e, names)).sum()) / n_ok
            if gap > worst_gap:
                worst_gap, worst_e = gap, e
        if worst_gap > fp.blackbox_masked:
            reasons.append(f"after escalating, Square still fools {worst_gap:.1%} of the {ev.norm} samples at "
                           f"eps={worst_e:g} that the adaptive attacks ({', '.join(names)}) miss (threshold "
                           f"blackbox_masked {fp.blackbox_masked:g})")
    top = max(ev.eps)
    survivors = check_rows[ev.worst_robust[top][check_rows]] if len(check_rows) else check_rows
    if len(check_rows) and not domain.masked:
        left = 0
        spec = next((s for s in white if getattr(s.attack, "loss", "") == "dlr"), white[0])
        if len(survivors):
            unbounded = AdaptiveSpec(spec.name, spec.kind, APGD(norm="linf", steps=fp.unbounded_steps, loss="dlr"),
                                     spec.crafting, spec.description)
            out = run_adaptive(unbounded, ctx.model, x[survivors], y[survivors], eps=box_span(domain, x),
                               domain=domain, batch_size=ctx.batch_size, progress=ctx.progress)
            left = int(out.robust.sum())
        share = left / len(check_rows)
        if share > fp.unbounded_masked:
            reasons.append(f"after escalating, {spec.name} allowed the "
                           f"whole input box still leaves {share:.1%} of the {ev.norm} check samples correct "
                           f"(threshold unbounded_masked {fp.unbounded_masked:g}): the adaptive gradients do not "
                           "lead to the boundary either")
    return reasons


def record(result: SectionResult, esc: Escalation, ev: NormEvaluation, *, section: str = "robustness") -> None:
    """The escalation's table, metrics and finding for one norm (nothing when it did not run)."""
    if not esc.happened:
        return
    for e, before in esc.before.items():
        result.metric(metric_key("escalation", esc.norm, ("eps", float(e)), "robust_accuracy_before"), before)
    result.metric(metric_key("escalation", esc.norm, "attacks"), len(esc.ran))
    rows = [[esc.norm, e, before, ev.worst_accuracy(e), ", ".join(esc.ran)] for e, before in esc.before.items()]
    result.table(f"escalation_{esc.norm}", f"Escalation after a likely-masked red flag ({esc.norm})",
                 ["norm", "eps", "worst case before", "worst case after", "adaptive attacks added"], rows,
                 description="a red flag said likely masked, so Square and the adaptive attacks that apply (BPDA, "
                 "transfer, EOT; docs/defenses.md) ran and their successes are in the worst case")
    drop = max((before - ev.worst_accuracy(e) for e, before in esc.before.items()), default=0.0)
    message = (f"{esc.norm} gradients likely masked: escalated with {', '.join(esc.ran) or 'nothing that applies'}; "
               f"the worst-case robust accuracy fell by up to {drop:.1%}")
    if esc.resolved:
        message += "; the adaptive attacks pass the masking sanity checks, so the headline now comes from them"
    result.finding("high" if esc.reasons or drop > 0.05 else "medium", message,
                   code=f"robustness.escalation.{esc.norm}",
                   metric=metric_key(section, "escalation", esc.norm, "attacks"), value=float(len(esc.ran)))
    result.notes.extend(esc.notes)
