"""Gradient attacks with a fixed step: FGSM (one step, L-inf) and PGD (L-inf / L2, random start, restarts).

PGD keeps, per sample, the first iterate that fools the model (checked on the logits of each
step's own forward pass, so it costs nothing) and stops attacking that sample; across restarts
only the samples still robust are attacked again, so the result is the per-sample worst case.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from attacks.base import (
    ActiveSet,
    Attack,
    AttackError,
    Domain,
    Forward,
    LossName,
    Norm,
    fooled,
    input_gradient,
    random_start,
    step_direction,
)


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): x + eps * sign(grad), projected."""

    name = "fgsm"
    norms: ClassVar[tuple[Norm, ...]] = ("linf",)

    def __init__(self, *, norm: Norm = "linf", loss: LossName = "ce") -> None:
        super().__init__(norm=norm)
        self.loss = loss

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": 1, "loss": self.loss, "random_start": False, "restarts": 1,
                "step_size": "eps"}

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None) -> torch.Tensor:
        assert eps is not None  # checked by Attack.__call__
        _, _, grad = input_gradient(forward, x, y, target, self.loss)
        return domain.project(x + eps * step_direction(grad, "linf", domain), x, eps, "linf")


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) with random start and restarts.

    ``step_size`` is relative to eps (``rel_step_size * eps``, default 2.5 * eps / steps as in
    Madry et al.) unless ``abs_step_size`` is given.
    """

    name = "pgd"
    supports_start = True

    def __init__(self, *, norm: Norm = "linf", steps: int = 40, rel_step_size: float | None = None,
                 abs_step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 loss: LossName = "ce", early_stop: bool = True) -> None:
        super().__init__(norm=norm)
        if steps < 1 or restarts < 1:
            raise AttackError(f"pgd needs steps >= 1 and restarts >= 1, got steps={steps}, restarts={restarts}")
        self.steps = steps
        self.rel_step_size = rel_step_size if rel_step_size is not None else 2.5 / steps
        self.abs_step_size = abs_step_size
        self.restarts = restarts
        self.random_start = random_start
        self.loss = loss
        self.early_stop = early_stop

    def settings(self) -> dict[str, Any]:
        size = (f"{self.abs_step_size:g}" if self.abs_step_size is not None
                else f"{self.rel_step_size:.4g} * eps")
        return {**super().settings(), "steps": self.steps, "step_size": size, "restarts": self.restarts,
                "random_start": self.random_start, "loss": self.loss}

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None, start: torch.Tensor | None = None
                      ) -> torch.Tensor:
        assert eps is not None  # checked by Attack.__call__
        alpha = self.abs_step_size if self.abs_step_size is not None else self.rel_step_size * eps
        best = x.clone()
        todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for restart in range(self.restarts):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            first = start[idx] if start is not None and restart == 0 else None
            adv = self._one_run(forward, x[idx], y[idx], None if target is None else target[idx], eps, alpha,
                                domain, first)
            if self.restarts == 1:
                return adv  # Attack.__call__ verifies success: no extra forward pass here
            best[idx] = adv
            with torch.no_grad():
                todo[idx[fooled(forward(adv), y[idx], None if target is None else target[idx])]] = False
        return best

    def _one_run(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 eps: float, alpha: float, domain: Domain, start: torch.Tensor | None = None) -> torch.Tensor:
        norm = self.norm
        if start is not None:
            adv = start.clone()
        else:
            adv = random_start(x, eps, norm, domain) if self.random_start else x.clone()
        active = ActiveSet(x)
        x0, y0, t0 = x, y, target
        for _ in range(self.steps):
            logits, _, grad = input_gradient(forward, adv, y0, t0, self.loss)
            if self.early_stop:
                keep = active.record(adv, fooled(logits, y0, t0))
                if keep is not None:
                    if active.empty:
                        break
                    adv, grad, x0, y0 = adv[keep], grad[keep], x0[keep], y0[keep]
                    t0 = t0[keep] if t0 is not None else None
            adv = domain.project(adv + alpha * step_direction(grad, norm, domain), x0, eps, norm)
        return active.finish(adv)
