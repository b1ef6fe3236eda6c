"""What every red flag shares: the thresholds (``RedFlagParams``), the flag (``RedFlag``), its grading, and what
the section's own attacks left for the checks (``CheckData``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from attacks.base import Attack, AttackOutput, Domain, Progress
from attacks.evaluate import NormEvaluation
from audit.plugin import Params

Verdict = Literal["ok", "suspicious", "likely masked", "n/a"]
PAIRS = ("accuracy_rise", "unbounded", "blackbox", "convergence", "restart", "single_step", "zero_gradients",
         "nonfinite_gradients", "randomized")


class RedFlagParams(Params):
    """Thresholds of the red-flag checks and the effort of those that attack again.

    A check whose value is above ``<check>_suspicious`` is ``suspicious``; above ``<check>_masked``,
    ``likely masked``. Shares are of the check samples (clean-correct samples, ``check_samples``).
    """

    accuracy_rise_suspicious: float = Field(
        default=0.01, ge=0, le=1,
        description="rise of one attack's robust accuracy from one eps to the next (share of all samples; never "
        "below two samples' worth)")
    accuracy_rise_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    unbounded_suspicious: float = Field(
        default=0.02, ge=0, le=1, description="accuracy left by an attack allowed the whole input box")
    unbounded_masked: float = Field(default=0.10, ge=0, le=1, description="the same, likely masked above")
    blackbox_suspicious: float = Field(
        default=0.02, ge=0, le=1,
        description="share the score-based square attack fools that every white-box attack missed")
    blackbox_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    convergence_suspicious: float = Field(
        default=0.03, ge=0, le=1,
        description="share newly fooled when the strongest attack continues from its last iterate")
    convergence_masked: float = Field(default=0.10, ge=0, le=1, description="the same, likely masked above")
    restart_suspicious: float = Field(
        default=0.03, ge=0, le=1, description="share newly fooled by fresh random starts of the strongest attack")
    restart_masked: float = Field(default=0.08, ge=0, le=1, description="the same, likely masked above")
    single_step_suspicious: float = Field(
        default=0.02, ge=0, le=1, description="share FGSM fools that every iterative attack missed (L-inf)")
    single_step_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    zero_gradients_suspicious: float = Field(
        default=0.05, ge=0, le=1,
        description="share with exactly zero input gradients: margin gradient zero too, or cross-entropy only "
        "(saturation: never more than suspicious)")
    zero_gradients_masked: float = Field(
        default=0.5, ge=0, le=1,
        description="share whose cross-entropy and margin input gradients are both exactly zero")
    nonfinite_gradients_suspicious: float = Field(
        default=0.0, ge=0, le=1, description="share with NaN/inf input gradients")
    nonfinite_gradients_masked: float = Field(default=0.05, ge=0, le=1, description="the same, likely masked above")
    randomized_suspicious: float = Field(
        default=1e-4, ge=0,
        description="largest difference between two passes on the same inputs, relative to the largest score "
        "(any flipped prediction: likely masked)")
    randomized_masked: float = Field(default=1e-2, ge=0, description="the same, likely masked above")
    unbounded_steps: int = Field(
        default=20, ge=2, le=10_000, description="APGD-DLR iterations of the unbounded attack")
    convergence_steps: float = Field(
        default=0.5, gt=0, le=100,
        description="iterations of the continued attack, as a multiple of the section's steps")
    restart_checks: int = Field(
        default=1, ge=1, le=100, description="fresh random starts of the strongest attack")
    restart_steps: float = Field(
        default=0.5, gt=0, le=100,
        description="iterations of each fresh random start, as a multiple of the section's steps")
    attack_samples: int = Field(
        default=50, ge=4,
        description="check samples the re-attacking checks (no_convergence, restart_gain, blackbox_stronger) "
        "use, a seeded subset of check_samples; each attacks only those the headline called robust")

    @model_validator(mode="after")
    def _ordered(self) -> RedFlagParams:
        for name in PAIRS:
            low, high = getattr(self, f"{name}_suspicious"), getattr(self, f"{name}_masked")
            if low > high:
                raise ValueError(f"{name}_suspicious ({low:g}) must not exceed {name}_masked ({high:g})")
        return self


@dataclass
class RedFlag:
    code: str
    title: str
    verdict: Verdict
    value: float | None
    reason: str
    seconds: float = 0.0

    @property
    def raised(self) -> bool:
        return self.verdict in ("suspicious", "likely masked")


TITLES = {
    "probability_outputs": "Softmax outputs used as logits",
    "randomized_outputs": "Non-deterministic outputs",
    "accuracy_vs_eps": "Accuracy not decreasing with eps",
    "zero_gradients": "Zero input gradients",
    "nonfinite_gradients": "NaN or infinite input gradients",
    "unbounded_attack": "Unbounded attack does not reach 0%",
    "no_convergence": "More iterations still lower accuracy",
    "restart_gain": "Fresh random starts still lower accuracy",
    "single_step_stronger": "Single-step attack stronger than iterative",
    "blackbox_stronger": "Black-box attack stronger than white-box",
}


def not_applicable(code: str, reason: str) -> RedFlag:
    return RedFlag(code, TITLES[code], "n/a", None, reason)


def grade(value: float, suspicious: float, masked: float) -> Verdict:
    return "likely masked" if value > masked else "suspicious" if value > suspicious else "ok"


def grade_check(params: RedFlagParams, name: str, value: float) -> Verdict:
    return grade(value, getattr(params, f"{name}_suspicious"), getattr(params, f"{name}_masked"))


@dataclass
class CheckData:
    """What the section's own attacks left for one norm, and the check samples (rows of ``x``)."""

    model: Any
    ev: NormEvaluation
    x: np.ndarray  # (N, ...) the evaluated inputs
    y: np.ndarray  # (N,)
    rows: np.ndarray  # check samples: clean-correct rows of x
    attack_rows: np.ndarray  # the subset of rows the re-attacking checks use
    domain: Domain
    eps: float  # the most informative eps (worst-case accuracy nearest half the clean accuracy)
    steps: int  # the section's steps
    batch_size: int
    params: RedFlagParams
    progress: Progress | None = None

    def __post_init__(self) -> None:
        self.nonfinite = np.zeros(len(self.y), bool)  # rows where a check's attack met NaN/inf outputs

    @property
    def n(self) -> int:
        return max(len(self.rows), 1)

    def attack(self, attack: Attack, rows: np.ndarray, *, eps: float, x: np.ndarray | None = None,
               start: np.ndarray | None = None) -> AttackOutput:
        """Run ``attack`` on ``rows`` (centred on ``x[rows]``, default the clean inputs) and note non-finite
        outputs."""
        centre = self.x if x is None else x
        out = attack(self.model, centre[rows], self.y[rows], eps=eps, domain=self.domain,
                     batch_size=self.batch_size, start=start, progress=self.progress)
        if out.nonfinite is not None:
            self.nonfinite[rows[out.nonfinite]] = True
        return out
