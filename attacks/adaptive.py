"""Adaptive attacks: the attacks that break gradient masking (Athalye, Carlini & Wagner 2018; Tramer et al. 2020).

Each builds a *crafting* model, runs an ordinary attack (APGD) on it, and replays the adversarial inputs on the
*target* (the model or the defended model as deployed): only the target's own prediction counts as a success.

- BPDA (backward pass differentiable approximation): the forward pass goes through the non-differentiable part
  unchanged; the backward pass goes through a differentiable approximation of it (identity by default, a defense
  may supply its own). ``bpda(transform, approx)`` builds it for one transform; ``straight_through(adapter)``
  does it for every non-differentiable op it can detect inside a model (round, floor, ceil, trunc, sign, detach:
  value of the op, gradient of the identity).
- EOT (expectation over transformation): the gradient averaged over ``samples`` draws of a randomized model or
  defense, as the gradient of the logits averaged over the draws (``eot``).
- Transfer: adversarial inputs crafted on a surrogate and replayed on the target. For a defense the surrogate is
  the undefended model (its adversarial inputs come from the robustness section); for a plain audit a surrogate
  the user names, or by default the model with every detected non-differentiable op replaced by the identity in
  the forward pass too (the smooth model the quantizer approximates).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from attacks.base import Attack, AttackOutput, Domain, Forward, Progress, fooled, margin_loss, nonfinite_rows
from audit.model import ModelAdapter

Transform = Callable[[torch.Tensor], torch.Tensor]

# ops whose gradient is zero almost everywhere (or cut): replaced by the identity's gradient
NON_DIFFERENTIABLE: dict[Any, str] = {
    torch.round: "round", torch.Tensor.round: "round",
    torch.floor: "floor", torch.Tensor.floor: "floor",
    torch.ceil: "ceil", torch.Tensor.ceil: "ceil",
    torch.trunc: "trunc", torch.Tensor.trunc: "trunc",
    torch.sign: "sign", torch.Tensor.sign: "sign",
    torch.Tensor.detach: "detach",
}


class _StraightThrough(TorchFunctionMode):
    """While active, each detected non-differentiable op becomes: ``bpda``: its own value with the identity's
    gradient (on tensors that need a gradient); ``identity``: the identity (value and gradient, with or without
    gradients: a smooth surrogate model). Counts what it replaced."""

    def __init__(self, mode: Literal["bpda", "identity"]) -> None:
        super().__init__()
        self.mode = mode
        self.replaced: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = NON_DIFFERENTIABLE.get(func)
        out = func(*args, **kwargs)
        x = args[0] if args else None
        if name is None or not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) \
                or out.shape != x.shape or not out.is_floating_point():
            return out
        if self.mode == "bpda" and not x.requires_grad:
            return out  # nothing to differentiate: the op's value is what BPDA keeps anyway
        self.replaced[name] += 1
        if self.mode == "identity" or name == "detach":
            return x
        return out.detach() + (x - x.detach())  # the op's value, exactly; the identity's gradient


class CraftingAdapter(ModelAdapter):
    """A model to craft adversarial inputs on: another adapter's classes, bounds and device with its own
    differentiable ``forward`` (BPDA, EOT, a surrogate). Its ``logits`` go through that forward too."""

    has_gradients = True

    def __init__(self, base: ModelAdapter, forward: Forward, *, kind: str, description: str = "") -> None:
        super().__init__(num_classes=base.num_classes, output_kind=base.output_kind, bounds=base.bounds,
                         device=base.device, batch_size=base.batch_size, source=f"{kind} of {base.source}",
                         sha256=base.sha256)
        self._forward_fn = forward
        self.kind = kind
        self.description = description or kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fn(x)

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fn(x.to(self.device))


def straight_through(model: ModelAdapter, *, mode: Literal["bpda", "identity"] = "bpda",
                     probe: np.ndarray | None = None) -> tuple[CraftingAdapter | None, Counter[str]]:
    """The model with every detectable non-differentiable op replaced (``bpda``: straight-through gradient;
    ``identity``: the op removed, a smooth surrogate for transfer). Returns (adapter, ops replaced on ``probe``);
    the adapter is None when the model has no gradients or nothing was detected on the probe."""
    if not model.has_gradients:
        return None, Counter()
    found: Counter[str] = Counter()
    if probe is not None and len(probe):
        mode_obj = _StraightThrough(mode)
        x = torch.as_tensor(probe[:8], dtype=torch.float32, device=model.device).requires_grad_(True)
        with mode_obj:
            model.forward(x)
        found = mode_obj.replaced
        if not found:
            return None, found

    def forward(x: torch.Tensor) -> torch.Tensor:
        with _StraightThrough(mode):
            return model.forward(x)

    ops = ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
    what = "straight-through (forward through the op, identity gradient)" if mode == "bpda" else \
        "surrogate with the op replaced by the identity"
    return CraftingAdapter(model, forward, kind=f"straight_through_{mode}",
                           description=f"{what}: {ops}" if ops else what), found


def bpda(transform: Transform, approx: Transform | None = None) -> Transform:
    """BPDA for one transform: forward ``transform(x)``, backward through ``approx`` (identity by default)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            value = transform(x)
        smooth = x if approx is None else approx(x)
        return value.detach() + (smooth - smooth.detach())

    return forward


def eot(forward: Forward, samples: int) -> Forward:
    """EOT: logits averaged over ``samples`` draws of a randomized forward (so the gradient is the average of the
    draws' gradients)."""
    if samples < 1:
        raise ValueError(f"EOT needs at least one sample, got {samples}")

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = forward(x)
        for _ in range(samples - 1):
            total = total + forward(x)
        return total / samples

    return averaged


# --- crafting and replaying ------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveSpec:
    """One adaptive attack: an attack run on a crafting model, replayed on the target."""

    name: str  # e.g. "bpda_apgd_dlr", "transfer_apgd_ce", "eot_apgd_ce"
    kind: Literal["bpda", "eot", "transfer"]
    attack: Attack
    crafting: ModelAdapter
    description: str


def replay(target: ModelAdapter, x: np.ndarray, y: np.ndarray, x_adv: np.ndarray, *,
           batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target's verdict on given adversarial inputs: (success, margin, nonfinite) per row. A NaN/inf output
    counts as success (the sample is not robust), as in every attack."""
    logits = target.logits(x_adv, batch_size=batch_size)
    yt = torch.as_tensor(y, dtype=torch.long)
    bad = nonfinite_rows(logits)
    success = (fooled(logits, yt, None) | bad).numpy()
    return success, margin_loss(logits, yt).numpy(), bad.numpy()


def run_adaptive(spec: AdaptiveSpec, target: ModelAdapter, x: np.ndarray, y: np.ndarray, *, eps: float,
                 domain: Domain, batch_size: int = 256, progress: Progress | None = None) -> AttackOutput:
    """Craft on ``spec.crafting``, replay on ``target``: the output's success is the target's."""
    start = time.perf_counter()
    crafted = spec.attack(spec.crafting, x, y, eps=eps, domain=domain, batch_size=batch_size, progress=progress)
    success, margin, bad = replay(target, x, y, crafted.x_adv, batch_size=batch_size)
    settings = {**crafted.settings, "attack": spec.name, "adaptive": spec.kind, "crafted_on": spec.description}
    return replace(crafted, attack=spec.name, success=success, margin=margin, nonfinite=bad,
                   seconds=time.perf_counter() - start, settings=settings)

