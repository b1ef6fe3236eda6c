"""APGD: the step-size-free PGD of Croce & Hein (ICML 2020), with cross-entropy or DLR loss.

Per sample, the step size starts at 2 * eps and is halved at checkpoints when progress stalls
(too few loss increases since the last checkpoint, or no new best loss with an unchanged step);
the iterate then restarts from the best point found. A momentum term (alpha = 0.75) smooths the
updates. Samples leave the batch as soon as they are misclassified.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attacks.base import (
    ActiveSet,
    Attack,
    AttackError,
    Domain,
    Forward,
    LossName,
    Norm,
    batch_view,
    fooled,
    input_gradient,
    random_start,
    step_direction,
)

MOMENTUM = 0.75
RHO = 0.75  # fraction of the steps since the last checkpoint that must have raised the loss


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step size: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), scaled by the number of steps."""
    points = [0.0, 0.22]
    while points[-1] < 1.0:
        points.append(points[-1] + max(points[-1] - points[-2] - 0.03, 0.06))
    marks = sorted({math.ceil(round(p * steps, 6)) for p in points if p < 1.0})
    return [m for m in marks if 0 < m < steps]


class APGD(Attack):
    """Auto-PGD with the CE or DLR loss; ``restarts`` random restarts keep the per-sample worst case."""

    name = "apgd"
    supports_start = True

    def __init__(self, *, norm: Norm = "linf", steps: int = 100, loss: LossName = "ce", restarts: int = 1,
                 random_start: bool = True) -> None:
        super().__init__(norm=norm)
        if steps < 2 or restarts < 1:
            raise AttackError(f"apgd needs steps >= 2 and restarts >= 1, got steps={steps}, restarts={restarts}")
        self.steps = steps
        self.loss = loss
        self.restarts = restarts
        self.random_start = random_start
        self.name = f"apgd_{loss}"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.steps, "step_size": "adaptive (2 * eps, halved on stall)",
                "restarts": self.restarts, "random_start": self.random_start, "loss": self.loss}

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None, start: torch.Tensor | None = None
                      ) -> torch.Tensor:
        assert eps is not None  # checked by Attack.__call__
        best = x.clone()
        todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for restart in range(self.restarts):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            tgt = None if target is None else target[idx]
            first = start[idx] if start is not None and restart == 0 else None
            adv = self._one_run(forward, x[idx], y[idx], tgt, eps, domain, first)
            if self.restarts == 1:
                return adv
            best[idx] = adv
            with torch.no_grad():
                todo[idx[fooled(forward(adv), y[idx], tgt)]] = False
        return best

    def _one_run(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 eps: float, domain: Domain, start: torch.Tensor | None = None) -> torch.Tensor:
        norm, n = self.norm, x.shape[0]
        marks = set(checkpoints(self.steps))
        active = ActiveSet(x)
        if start is not None:
            adv = start.clone()
        else:
            adv = random_start(x, eps, norm, domain) if self.random_start else x.clone()
        s: dict[str, torch.Tensor] = {"x": x, "y": y, "adv": adv, "prev": adv.clone()}
        if target is not None:
            s["t"] = target
        s["eta"] = torch.full((n,), 2.0 * eps, device=x.device)
        s["loss_best"] = torch.full((n,), -math.inf, device=x.device)
        s["loss_prev"] = torch.full((n,), -math.inf, device=x.device)
        s["x_best"] = adv.clone()
        s["grad_best"] = torch.zeros_like(x)
        s["raised"] = torch.zeros(n, device=x.device)
        s["eta_mark"] = s["eta"].clone()
        s["best_mark"] = s["loss_best"].clone()
        last_mark = 0
        for k in range(self.steps):
            logits, loss, grad = input_gradient(forward, s["adv"], s["y"], s.get("t"), self.loss)
            keep = active.record(s["adv"], fooled(logits, s["y"], s.get("t")))
            if keep is not None:
                if active.empty:
                    break
                s = {key: value[keep] for key, value in s.items()}
                loss, grad = loss[keep], grad[keep]
            if k > 0:
                s["raised"] += (loss > s["loss_prev"]).float()
            improved = loss > s["loss_best"]
            s["x_best"] = torch.where(batch_view(improved, s["adv"]), s["adv"], s["x_best"])
            s["grad_best"] = torch.where(batch_view(improved, grad), grad, s["grad_best"])
            s["loss_best"] = torch.where(improved, loss, s["loss_best"])
            s["loss_prev"] = loss
            current, adv_grad = s["adv"], grad
            if k in marks:
                stalled = (s["raised"] < RHO * (k - last_mark)) | (
                    (s["eta_mark"] == s["eta"]) & (s["best_mark"] == s["loss_best"]))
                s["eta"] = torch.where(stalled, s["eta"] / 2.0, s["eta"])
                back = batch_view(stalled, current)
                current = torch.where(back, s["x_best"], current)
                adv_grad = torch.where(back, s["grad_best"], adv_grad)
                s["prev"] = torch.where(back, s["x_best"], s["prev"])
                s["raised"] = torch.zeros_like(s["raised"])
                s["eta_mark"], s["best_mark"] = s["eta"].clone(), s["loss_best"].clone()
                last_mark = k
            eta = batch_view(s["eta"], current)
            z = domain.project(current + eta * step_direction(adv_grad, norm, domain), s["x"], eps, norm)
            momentum = 1.0 if k == 0 else MOMENTUM
            step = current + momentum * (z - current) + (1.0 - momentum) * (current - s["prev"])
            s["prev"] = current
            s["adv"] = domain.project(step, s["x"], eps, norm)
        return active.finish(s["x_best"] if "x_best" in s else s["adv"])


class APGDDLR(APGD):
    """Auto-PGD on the difference-of-logits-ratio loss (shift- and scale-invariant: does not saturate)."""

    def __init__(self, *, norm: Norm = "linf", steps: int = 100, restarts: int = 1, random_start: bool = True) -> None:
        super().__init__(norm=norm, steps=steps, loss="dlr", restarts=restarts, random_start=random_start)
