"""Training-time defenses that produce hardened weights.

- ``pgd_at``: PGD adversarial training (Madry et al. 2018): every batch is replaced by its PGD
  adversarial examples (random start, ``steps`` steps, no early stop) and the model trains on them.
- ``trades``: TRADES (Zhang et al. 2019): cross-entropy on the clean batch plus ``beta`` times the KL
  divergence between the predictions on the clean batch and on adversarial examples that maximize
  that KL divergence.
- ``fast_at``: fast adversarial training (Wong, Rice & Kolter 2020): one FGSM step of
  ``fast_step * eps`` from a uniform random start, then training on the result.
- ``distillation``: defensive distillation (Papernot et al. 2016): a teacher (the model, fine-tuned) is
  trained at softmax temperature ``temperature``, and a fresh copy of the architecture learns the
  teacher's soft labels at the same temperature; deployed at temperature 1, its logits are about
  ``temperature`` times larger, so softmax saturates and cross-entropy gradients vanish. That is
  gradient masking, not robustness: margin and DLR losses (APGD-DLR, C&W), which do not saturate, go
  through, and the robustness section's red flags say so. It is here to be shown for what it is.

The adversarial examples of ``pgd_at`` come from ``attacks.PGD`` itself (its batch step), the others
from the same building blocks (``Domain`` projection, ``random_start``, ``step_direction``), so the
threat model (eps ball, input bounds, perturbable features) is the robustness section's. They are
generated with the model in eval mode and the weights updated in train mode (as TRADES's reference
code does), with input gradients only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from attacks.base import Domain, Norm, Progress, random_start, step_direction
from attacks.gradient import PGD
from audit.plugin import Params

Method = Literal["pgd_at", "trades", "fast_at", "distillation"]
METHODS: tuple[str, ...] = ("pgd_at", "trades", "fast_at", "distillation")


class TrainingParams(Params):
    """Settings of a training-time defense (``nnaudit harden`` flags, or a config block)."""

    method: Method = Field("pgd_at", description="pgd_at, trades, fast_at or distillation")
    epochs: int = Field(5, ge=1, le=10_000, description="passes over the training data (distillation: per network)")
    eps: float = Field(0.1, gt=0, description="training perturbation budget in raw input units")
    norm: Norm = Field("linf", description="threat model of the training attack: linf or l2")
    steps: int = Field(10, ge=1, le=1000, description="attack steps per batch (pgd_at, trades)")
    rel_step_size: float | None = Field(
        None, gt=0, description="attack step as a multiple of eps (default 2.5 / steps for pgd_at, 0.25 for trades)")
    fast_step: float = Field(1.25, gt=0, description="fast_at: the FGSM step as a multiple of eps (Wong et al.)")
    beta: float = Field(6.0, ge=0, description="trades: weight of the robustness (KL) term")
    temperature: float = Field(100.0, gt=0, description="distillation: the softmax temperature T")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    batch_size: int = Field(128, ge=1, description="training batch size")
    seed: int = Field(0, description="shuffling, random starts and (distillation) the student's initial weights")

    @model_validator(mode="after")
    def _finite(self) -> TrainingParams:
        if not math.isfinite(self.eps):
            raise ValueError("eps must be finite")
        return self


@dataclass
class EpochStats:
    epoch: int
    phase: str  # "train", or for distillation "teacher" / "student"
    loss: float
    clean_accuracy: float | None  # on the training batches (trades, distillation; None: not computed)
    adversarial_accuracy: float | None  # on the training batches' adversarial examples (None: not made)
    seconds: float


@dataclass
class TrainingHistory:
    params: TrainingParams
    epochs: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[list[Any]]:
        return [[e.phase, e.epoch, round(e.loss, 5), None if e.clean_accuracy is None else round(e.clean_accuracy, 4),
                 None if e.adversarial_accuracy is None else round(e.adversarial_accuracy, 4), round(e.seconds, 2)]
                for e in self.epochs]


def _set_trainable(network: nn.Module, flag: bool) -> None:
    for param in network.parameters():
        param.requires_grad_(flag)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


# -- the adversarial examples of each method ------------------------------------------------------


def pgd_examples(network: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: PGD, eps: float,
                 domain: Domain) -> torch.Tensor:
    """PGD adversarial examples for a training batch (``attacks.PGD``'s batch step, model in eval mode)."""
    return attack._attack_batch(network, x, y, eps=eps, domain=domain, target=None).detach()


def fast_examples(network: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm, step: float,
                  domain: Domain) -> torch.Tensor:
    """Wong et al. 2020: uniform random start in the ball, one gradient step of ``step``, projected."""
    start = random_start(x, eps, norm, domain).requires_grad_(True)
    loss = F.cross_entropy(network(start), y)
    (grad,) = torch.autograd.grad(loss, start)
    return domain.project(start.detach() + step * step_direction(grad, norm, domain), x, eps, norm)


def trades_examples(network: nn.Module, x: torch.Tensor, *, eps: float, norm: Norm, steps: int, step: float,
                    domain: Domain) -> torch.Tensor:
    """Zhang et al. 2019: maximize KL(f(x) || f(x')) from x + 0.001 N(0, I), ``steps`` projected steps."""
    with torch.no_grad():
        clean = F.softmax(network(x), dim=1)
    adv = domain.project(x + 0.001 * torch.randn_like(x), x, eps, norm)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        kl = F.kl_div(F.log_softmax(network(adv), dim=1), clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, adv)
        adv = domain.project(adv.detach() + step * step_direction(grad, norm, domain), x, eps, norm)
    return adv.detach()


# -- training ---------------------------------------------------------------------------------------


def train_defense(network: nn.Module, x: np.ndarray, y: np.ndarray, *, params: TrainingParams, domain: Domain,
                  device: torch.device | str = "cpu", progress: Progress | None = None) -> TrainingHistory:
    """Train ``network`` (logits out; normalization inside it) in place with the chosen defense on (x, y).

    ``domain``: the threat model's input bounds and perturbable features (``Domain.from_model_data``).
    ``progress`` (``ctx.progress`` / ``audit.context.progress``) gets the epochs. Returns per-epoch
    loss and accuracies. The network is left in eval mode with frozen parameters."""
    device = torch.device(device)
    start = time.perf_counter()
    history = TrainingHistory(params=params)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    domain = domain.to(device)
    network.to(device)
    torch.manual_seed(params.seed)
    if params.method == "distillation":
        _distill(network, xt, yt, params, device, progress, history)
    else:
        _adversarial(network, xt, yt, params, domain, device, progress, history)
    network.eval()
    _set_trainable(network, False)
    history.seconds = time.perf_counter() - start
    return history


def _epochs(params: TrainingParams, progress: Progress | None, desc: str) -> Iterable[int]:
    epochs = range(1, params.epochs + 1)
    return progress(epochs, desc=desc, total=params.epochs, unit="epoch") if progress is not None else epochs


def _adversarial(network: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainingParams, domain: Domain,
                 device: torch.device, progress: Progress | None, history: TrainingHistory) -> None:
    p = params
    gen = torch.Generator().manual_seed(p.seed)
    _set_trainable(network, True)
    opt = torch.optim.Adam(network.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    default_rel = 2.5 / p.steps if p.method == "pgd_at" else 0.25
    step = (p.rel_step_size if p.rel_step_size is not None else default_rel) * p.eps
    pgd = PGD(norm=p.norm, steps=p.steps, abs_step_size=step, random_start=True, early_stop=False)
    for epoch in _epochs(p, progress, f"{p.method} epochs"):
        tic = time.perf_counter()
        total_loss, clean_hits, adv_hits, seen = 0.0, 0, 0, 0
        for idx in _batches(len(x), p.batch_size, gen):
            xb, yb = x[idx].to(device), y[idx].to(device)
            network.eval()
            if p.method == "pgd_at":
                adv = pgd_examples(network, xb, yb, attack=pgd, eps=p.eps, domain=domain)
            elif p.method == "fast_at":
                adv = fast_examples(network, xb, yb, eps=p.eps, norm=p.norm, step=p.fast_step * p.eps, domain=domain)
            else:
                adv = trades_examples(network, xb, eps=p.eps, norm=p.norm, steps=p.steps, step=step, domain=domain)
            network.train()
            opt.zero_grad(set_to_none=True)
            if p.method == "trades":
                clean_logits = network(xb)
                adv_logits = network(adv)
                kl = F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="batchmean")
                loss = F.cross_entropy(clean_logits, yb) + p.beta * kl
                clean_hits += int((clean_logits.argmax(1) == yb).sum())
            else:  # no clean forward pass here: it would cost time and, in train mode, move batch-norm statistics
                adv_logits = network(adv)
                loss = F.cross_entropy(adv_logits, yb)
            loss.backward()
            opt.step()
            adv_hits += int((adv_logits.argmax(1) == yb).sum())
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        clean = clean_hits / seen if p.method == "trades" else None
        history.epochs.append(EpochStats(epoch, "train", total_loss / seen, clean, adv_hits / seen,
                                         time.perf_counter() - tic))


def _reinitialize(network: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for module in network.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def _distill(network: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainingParams, device: torch.device,
             progress: Progress | None, history: TrainingHistory) -> None:
    """Teacher: the network fine-tuned at temperature T on the labels. Student: the same architecture,
    re-initialized, trained at T on the teacher's soft labels; its weights end up in ``network``."""
    p = params
    t = p.temperature
    teacher = network
    _fit(teacher, x, y, None, p, device, progress, history, "teacher")
    with torch.no_grad():
        teacher.eval()
        soft = torch.cat([F.softmax(teacher(x[i : i + 1024].to(device)).div(t), dim=1)
                          for i in range(0, len(x), 1024)])
    student = copy.deepcopy(teacher)
    _reinitialize(student, p.seed + 1)
    _fit(student, x, y, soft, p, device, progress, history, "student")
    network.load_state_dict(student.state_dict())


def _fit(network: nn.Module, x: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, params: TrainingParams,
         device: torch.device, progress: Progress | None, history: TrainingHistory, phase: str) -> None:
    """Train at temperature T: hard labels (``soft`` None) or soft labels (distillation's student)."""
    p = params
    gen = torch.Generator().manual_seed(p.seed + (0 if soft is None else 1))
    _set_trainable(network, True)
    opt = torch.optim.Adam(network.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    for epoch in _epochs(p, progress, f"distillation {phase} epochs (T={p.temperature:g})"):
        tic = time.perf_counter()
        network.train()
        total_loss, hits, seen = 0.0, 0, 0
        for idx in _batches(len(x), p.batch_size, gen):
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            logits = network(xb)
            scaled = F.log_softmax(logits / p.temperature, dim=1)
            # hard labels (the teacher) or the teacher's soft labels (the student), both at temperature T
            loss = F.nll_loss(scaled, yb) if soft is None else -(soft[idx].to(device) * scaled).sum(dim=1).mean()
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == yb).sum())
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.epochs.append(EpochStats(epoch, phase, total_loss / seen, hits / seen, None,
                                         time.perf_counter() - tic))
    network.eval()


__all__ = ["METHODS", "EpochStats", "TrainingHistory", "TrainingParams", "fast_examples", "pgd_examples",
           "trades_examples", "train_defense"]
