"""One transform defense evaluated the naive way and the adaptive way on the same samples (the computing behind the
``defenses`` section; it records what ``DefenseEvaluator.evaluate`` returns).

- naive: APGD-CE and APGD-DLR through the defended model's own gradients;
- adaptive: BPDA (a deterministic defense: its approximation in the backward pass) or EOT (a randomized one: the
  gradient averaged over draws, with BPDA inside when not differentiable), and the transfer of the robustness
  section's adversarial inputs (crafted on the undefended model); the adaptive robust accuracy is the per-sample
  worst case of all of them and of the naive attacks.

A randomized defense predicts by majority over ``eval_draws`` draws, everywhere, so a worst case over several attacks
does not count the defense's own noise as the attacker's success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.adaptive import AdaptiveSpec, CraftingAdapter, bpda, eot
from attacks.apgd import APGD
from attacks.base import Domain, LossName, Norm
from attacks.defenses.base import DefendedAdapter, Defense
from audit.model import ModelAdapter

VERDICT_CODES = {"broken": 0, "partial": 1, "holds": 2}
LOSSES: tuple[LossName, ...] = ("ce", "dlr")


@dataclass
class Evaluated:
    """One defense at one (norm, eps): per-sample outcomes on the evaluated rows."""

    norm: str
    eps: float
    clean_ok: np.ndarray
    undefended_robust: np.ndarray
    naive_fooled: np.ndarray
    adaptive_fooled: dict[str, np.ndarray] = field(default_factory=dict)  # kind (bpda, eot, transfer) -> fooled

    def accuracy(self, fooled: np.ndarray) -> float:
        return float((self.clean_ok & ~fooled).mean()) if len(fooled) else math.nan

    @property
    def naive(self) -> float:
        return self.accuracy(self.naive_fooled)

    @property
    def worst_fooled(self) -> np.ndarray:
        out = self.naive_fooled.copy()
        for fooled in self.adaptive_fooled.values():
            out |= fooled
        return out

    @property
    def adaptive(self) -> float:
        return self.accuracy(self.worst_fooled)

    @property
    def undefended(self) -> float:
        return float(self.undefended_robust.mean()) if len(self.undefended_robust) else math.nan


def verdict(ev: Evaluated, *, holds_margin: float, broken_margin: float) -> str:
    if ev.adaptive - ev.undefended <= broken_margin:
        return "broken"
    return "holds" if ev.naive - ev.adaptive <= holds_margin else "partial"


@dataclass
class DefenseEvaluator:
    """Attacks one defense in front of ``model`` (the undefended model), naively and adaptively."""

    model: ModelAdapter
    defense: Defense
    domain: Domain
    steps: int
    eot_samples: int
    eval_draws: int
    batch_size: int
    defended: DefendedAdapter = field(init=False)

    def __post_init__(self) -> None:
        self.defended = DefendedAdapter(self.model, self.defense)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The defended model's prediction; a randomized defense votes over ``eval_draws`` draws."""
        if not self.defense.randomized or self.eval_draws == 1:
            return self.defended.predict(x)
        votes = np.stack([self.defended.predict(x) for _ in range(self.eval_draws)])
        counts = np.apply_along_axis(np.bincount, 0, votes, minlength=self.defended.num_classes)
        return counts.argmax(axis=0)

    def fooled(self, x_adv: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ~(self.predict(x_adv) == y)

    def crafting(self) -> tuple[Any, CraftingAdapter]:
        """BPDA for a deterministic defense (its approximation in the backward pass); EOT over draws for a
        randomized one (with BPDA inside when its transform is not differentiable)."""
        defense, model = self.defense, self.model
        through = (lambda t: defense.transform(t)) if defense.differentiable else bpda(defense.transform,
                                                                                       defense.approximation)

        def forward(t: torch.Tensor) -> torch.Tensor:
            return model.forward(through(t))

        if defense.randomized:
            return "eot", CraftingAdapter(model, eot(forward, self.eot_samples), kind="eot",
                                          description=f"EOT over {self.eot_samples} draws of {defense.name}")
        own = type(defense).approximation is not Defense.approximation
        return "bpda", CraftingAdapter(model, forward, kind="bpda", description=f"BPDA through {defense.name} "
                                       f"(approximation: {'its own' if own else 'identity'})")

    def evaluate(self, x: np.ndarray, y: np.ndarray, clean_ok: np.ndarray, *, norm: Norm, eps: float,
                 undefended_robust: np.ndarray, x_transfer: np.ndarray) -> Evaluated:
        """Naive and adaptive attacks on the clean-correct rows of ``x`` (``clean_ok``: correct under the defense);
        ``x_transfer``: the robustness section's adversarial inputs for the same rows, replayed."""
        ev = Evaluated(norm, eps, clean_ok, undefended_robust, np.zeros(len(y), bool))
        attacked = np.flatnonzero(clean_ok)
        if self.model.has_gradients and len(attacked):
            for loss in LOSSES:
                out = APGD(norm=norm, steps=self.steps, loss=loss)(self.defended, x[attacked], y[attacked], eps=eps,
                                                                   domain=self.domain, batch_size=self.batch_size)
                ev.naive_fooled[attacked] |= self.fooled(out.x_adv, y[attacked])
            kind, crafting = self.crafting()
            fooled = np.zeros(len(y), bool)
            for loss in LOSSES:
                spec = AdaptiveSpec(f"{kind}_apgd_{loss}", kind, APGD(norm=norm, steps=self.steps, loss=loss),
                                    crafting, crafting.description)
                out = spec.attack(spec.crafting, x[attacked], y[attacked], eps=eps, domain=self.domain,
                                  batch_size=self.batch_size)
                fooled[attacked] |= self.fooled(out.x_adv, y[attacked])
            ev.adaptive_fooled[kind] = fooled
        # transfer: the robustness section's adversarial inputs, crafted on the undefended model, replayed
        transfer = np.zeros(len(y), bool)
        if len(attacked):
            transfer[attacked] = self.fooled(x_transfer[attacked], y[attacked])
        ev.adaptive_fooled["transfer"] = transfer
        return ev
