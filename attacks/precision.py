"""The mixed-precision check: does ``precision: bf16|fp16`` move the audit's headline number?

Before any section runs, an eps-bounded attack runs twice on a separate seeded, stratified check subset, in
float32 and under autocast, with the same random draws. If robust accuracy differs by 0.5 points or more, the
run falls back to float32 and says so (``manifest.model.precision_check``). The threat is the robustness
section's first norm, its middle eps and its first gradient attack; without a robustness section, L-inf PGD at
1/32 of the input range.

The engine reaches this through the section plugins' ``check_precision`` hook (``RobustnessSection`` implements
it here), never by importing it (``audit.engine.execution``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from attacks.base import Domain
from attacks.evaluate import make_attack
from audit.data import stratified_subset
from audit.model import ModelAdapter, TorchModelAdapter

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.data import AuditData

MAX_POINTS = 0.5  # largest accepted change of robust accuracy, in percentage points
CHECK_SAMPLES = 400  # at 400 samples one net flip is 0.25 points
CHECK_STEPS = 20
CHECK_SEED_OFFSET = 7919  # the check subset is drawn with its own seed, apart from the sections' draws
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd_ce", "apgd_dlr")


class Threats(Protocol):
    """What the check reads of the robustness section's parameters."""

    attacks: list[str]

    def norms(self) -> list[Any]: ...

    def eps_for(self, norm: Any) -> list[float] | None: ...


def precision_check(ctx: AuditContext, precision: str, params: Threats | None) -> dict[str, Any] | None:
    """The check of ``precision`` on ``ctx.model``, at the threat ``params`` names (None: the default threat);
    None for a model outside torch (the engine refuses ``precision`` for those before asking)."""
    if not isinstance(ctx.model, TorchModelAdapter):
        return None
    norm, eps, attack = threat_for_check(params, ctx.data, ctx.model)
    return check_precision(ctx.model, ctx.data, precision=precision, norm=norm, eps=eps, attack=attack,
                           seed=ctx.seed, batch_size=ctx.batch_size)


def threat_for_check(params: Threats | None, data: AuditData, adapter: ModelAdapter) -> tuple[str, float, str]:
    """(norm, eps, attack) of the check: the robustness section's first norm, its middle eps and first
    gradient attack; without one (or without an eps for that norm), L-inf PGD at 1/32 of the input range."""
    if params is not None:
        norm = params.norms()[0]
        eps_list = params.eps_for(norm) or []
        if eps_list:
            attacks = [a for a in params.attacks if a in GRADIENT_ATTACKS] or ["pgd"]
            return norm, float(eps_list[len(eps_list) // 2]), attacks[0]
    lower = adapter.bounds.lower if adapter.bounds is not None else float(data.x.min())
    upper = adapter.bounds.upper if adapter.bounds is not None else float(data.x.max())
    return "linf", (upper - lower) / 32.0, "pgd"


def check_precision(adapter: TorchModelAdapter, data: AuditData, *, precision: str, norm: str, eps: float,
                    attack: str, seed: int, batch_size: int, samples: int = CHECK_SAMPLES,
                    steps: int = CHECK_STEPS) -> dict[str, Any]:
    """Robust accuracy under ``attack`` at ``eps`` in float32 and in ``precision``, same samples and draws."""
    index = stratified_subset(data.y, min(samples, data.n_samples), seed + CHECK_SEED_OFFSET)
    x, y = data.x[index], data.y[index]
    domain = Domain.from_model_data(adapter, data)
    before = adapter.precision
    robust: dict[str, np.ndarray] = {}
    used_steps: Any = steps
    try:
        for mode in ("fp32", precision):
            adapter.set_precision(mode)
            torch.manual_seed(seed)  # the same random starts in both runs
            out = make_attack(attack, norm=norm, steps=steps)(adapter, x, y, eps=eps, domain=domain,  # type: ignore[arg-type]
                                                             batch_size=batch_size)
            robust[mode] = out.robust
            used_steps = out.settings.get("steps", steps)  # fgsm: one step whatever was asked
    finally:
        adapter.set_precision(before)
    acc = {mode: float(r.mean()) for mode, r in robust.items()}
    diff = 100.0 * abs(acc[precision] - acc["fp32"])
    accepted = diff < MAX_POINTS and all(math.isfinite(a) for a in acc.values())
    flips = int((robust[precision] != robust["fp32"]).sum())
    what = (f"{attack} {norm} eps={eps:g}, {used_steps} steps, {len(index)} check samples: robust accuracy "
            f"{100 * acc['fp32']:.2f}% in fp32, {100 * acc[precision]:.2f}% in {precision} ({diff:.2f} points; "
            f"{flips} samples changed)")
    note = (f"precision {precision} kept: {what}" if accepted else
            f"precision {precision} refused, the run uses fp32: {what}; the limit is {MAX_POINTS} points")
    return {"requested": precision, "accepted": accepted, "attack": attack, "norm": norm, "eps": eps,
            "steps": used_steps, "samples": len(index), "robust_accuracy_fp32": acc["fp32"],
            f"robust_accuracy_{precision}": acc[precision], "difference_points": diff, "changed_samples": flips,
            "limit_points": MAX_POINTS, "note": note}
