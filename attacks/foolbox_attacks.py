"""Attacks through foolbox 3: minimal-norm (FMN, DDN, Carlini-Wagner L2, DeepFool) and decision-based
(HopSkipJump, Boundary). Each returns, per sample, the smallest perturbation it found (its norm
is the sample's minimal adversarial epsilon), so one pass gives the whole robustness curve.

foolbox takes one scalar (lower, upper) box and cannot keep features fixed: these attacks refuse
data whose perturbable mask leaves features fixed, and their results are clipped into the
per-feature bounds and verified again by ``Attack.__call__``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.base import Attack, AttackNotApplicable, Domain, Forward, Norm

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which probes for git

FOOLBOX_NAMES: dict[tuple[str, str], str] = {
    ("fmn", "linf"): "LInfFMNAttack", ("fmn", "l2"): "L2FMNAttack", ("ddn", "l2"): "DDNAttack",
    ("cw", "l2"): "L2CarliniWagnerAttack", ("deepfool", "linf"): "LinfDeepFoolAttack",
    ("deepfool", "l2"): "L2DeepFoolAttack", ("hsj", "linf"): "HopSkipJumpAttack", ("hsj", "l2"): "HopSkipJumpAttack",
    ("boundary", "l2"): "BoundaryAttack",
}


class _Scores(nn.Module):
    """Wraps a forward function (the adapter's network, or a black box's no-grad scores) for foolbox."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self.fn = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class FoolboxAttack(Attack):
    """A foolbox minimal-norm or decision-based attack, run with ``epsilons=None`` (unbounded)."""

    minimal = True
    supports_mask = False
    library = "foolbox"
    family: ClassVar[str] = ""

    def __init__(self, *, norm: Norm = "linf", steps: int | None = None, **options: Any) -> None:
        key = (self.family, norm)
        if key not in FOOLBOX_NAMES:
            norms = [n for (f, n) in FOOLBOX_NAMES if f == self.family]
            raise AttackNotApplicable(f"foolbox attack '{self.family}' supports norms {norms}, not '{norm}'")
        self.norms = tuple(n for (f, n) in FOOLBOX_NAMES if f == self.family)  # type: ignore[misc]
        super().__init__(norm=norm)
        self.steps = steps
        self.options = options

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        return {"steps": minimal_steps}

    def build(self) -> Any:
        import foolbox

        cls = getattr(foolbox.attacks, FOOLBOX_NAMES[(self.family, self.norm)])
        kwargs = dict(self.options)
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.family == "hsj":
            kwargs["constraint"] = self.norm
        return cls(**kwargs)

    def settings(self) -> dict[str, Any]:
        fb_name = FOOLBOX_NAMES[(self.family, self.norm)]
        return {**super().settings(), "steps": self.steps if self.steps is not None else "foolbox default",
                "step_size": "foolbox default", "restarts": 1, "random_start": False, "loss": fb_name,
                **{k: v for k, v in self.options.items() if isinstance(v, (int, float, str, bool))}}

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None) -> torch.Tensor:
        import foolbox

        fmodel = foolbox.PyTorchModel(_Scores(forward).eval(), bounds=domain.scalar_bounds, device=x.device)
        criterion = foolbox.criteria.Misclassification(y) if target is None else \
            foolbox.criteria.TargetedMisclassification(target)
        _, clipped, _ = self.build()(fmodel, x, criterion, epsilons=None)
        return domain.clip(clipped.detach())


class FMN(FoolboxAttack):
    """Fast minimum-norm attack (Pintor et al. 2021)."""

    name = "fmn"
    family = "fmn"


class DDN(FoolboxAttack):
    """Decoupled direction and norm (Rony et al. 2019), L2."""

    name = "ddn"
    family = "ddn"


class CarliniWagner(FoolboxAttack):
    """Carlini-Wagner L2 (2017), binary search over the trade-off constant."""

    name = "cw"
    family = "cw"

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        return {"steps": minimal_steps, "binary_search_steps": 5}


class DeepFool(FoolboxAttack):
    """DeepFool (Moosavi-Dezfooli et al. 2016): linearize and step to the nearest boundary."""

    name = "deepfool"
    family = "deepfool"

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        return {"steps": min(minimal_steps, 50)}


class HopSkipJump(FoolboxAttack):
    """HopSkipJump (Chen et al. 2020): decision-based, needs only the predicted labels."""

    name = "hsj"
    family = "hsj"
    needs_gradients = False

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        return {"steps": max(1, minimal_steps // 10)}


class Boundary(FoolboxAttack):
    """Boundary attack (Brendel et al. 2018): decision-based random walk along the boundary, L2."""

    name = "boundary"
    family = "boundary"
    needs_gradients = False

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        return {"steps": minimal_steps * 10}
