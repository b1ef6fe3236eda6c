"""The attack base class: the shared work done once, so each attack writes only its step.

``Attack.__call__`` is final. It checks the inputs, moves batches to the model's device, hands
each batch to the attack's ``_attack_batch``, projects the result back into the threat model
(epsilon ball, input bounds, perturbable features) once more, and verifies success with one
forward pass. Attacks work in raw input space; normalization lives inside the model adapter.

A NaN or infinite model output, at an iterate or in the verification pass, counts as a success
(the sample is not robust) and is recorded in ``AttackOutput.nonfinite``: NaN scores would
otherwise argmax to one class and read as a correct prediction.

Only input gradients are ever computed (``torch.autograd.grad`` on the input; the adapter's
parameters are frozen), so no attack pays for weight gradients.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final

import numpy as np
import torch
import torch.nn.functional as F

from audit.device import free_cached_memory, is_out_of_memory
from audit.errors import NNAuditError

if TYPE_CHECKING:
    from audit.data import AuditData
    from audit.model import ModelAdapter

log = logging.getLogger("nnaudit")
Norm = Literal["linf", "l2"]
NORMS: tuple[Norm, ...] = ("linf", "l2")
Forward = Callable[[torch.Tensor], torch.Tensor]
# ``ctx.progress``: progress(iterable, desc=..., total=...) -> iterator over the same items
Progress = Callable[..., Iterator[Any]]
LossName = Literal["ce", "dlr", "margin"]


class AttackError(NNAuditError):
    """An attack cannot run with these inputs or settings. The message says what to change."""


class AttackNotApplicable(AttackError):
    """The attack does not apply to this model or data (e.g. needs gradients, or a norm it lacks)."""


@dataclass(frozen=True)
class Domain:
    """Where adversarial inputs may live: per-feature bounds and which features may change.

    ``lower``/``upper`` broadcast against a batch (1, *input_shape); ``mask`` is 1 where a feature
    may be perturbed and 0 where it must stay (None: every feature may change).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    mask: torch.Tensor | None = None

    @classmethod
    def build(cls, *, input_shape: tuple[int, ...], lower: Any = None, upper: Any = None,
              perturbable: Any = None, device: torch.device | str = "cpu") -> Domain:
        def as_bound(value: Any, fill: float) -> torch.Tensor:
            if value is None:
                return torch.full((1, *input_shape), fill, dtype=torch.float32, device=device)
            t = torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)
            return t.reshape(1, *input_shape) if t.numel() > 1 else t.reshape(1, *([1] * len(input_shape)))

        lo, hi = as_bound(lower, -math.inf), as_bound(upper, math.inf)
        if bool((lo > hi).any()):
            raise AttackError("a lower input bound is above its upper bound; check data.lower/upper or "
                              "model.input_bounds")
        mask = None
        if perturbable is not None:
            m = np.asarray(perturbable, dtype=bool)
            if m.size != int(np.prod(input_shape)):
                raise AttackError(f"the perturbable mask has {m.size} entries but inputs have shape "
                                  f"{list(input_shape)}; give one flag per feature")
            if not m.any():
                raise AttackNotApplicable("no feature may be perturbed (data.perturbable is all false); "
                                          "mark at least one feature perturbable")
            if not m.all():
                mask = torch.as_tensor(m.reshape(1, *input_shape), dtype=torch.float32, device=device)
        return cls(lo, hi, mask)

    @classmethod
    def from_model_data(cls, model: ModelAdapter, data: AuditData) -> Domain:
        """Data bounds where the data has them, else the model's input bounds, else unbounded."""
        lower: Any = data.lower
        upper: Any = data.upper
        if model.bounds is not None:
            lower = model.bounds.lower if lower is None else np.maximum(lower, model.bounds.lower)
            upper = model.bounds.upper if upper is None else np.minimum(upper, model.bounds.upper)
        return cls.build(input_shape=data.input_shape, lower=lower, upper=upper, perturbable=data.perturbable,
                         device=model.device)

    def to(self, device: torch.device | str) -> Domain:
        mask = self.mask.to(device) if self.mask is not None else None
        return Domain(self.lower.to(device), self.upper.to(device), mask)

    @property
    def masked(self) -> bool:
        return self.mask is not None

    @property
    def scalar_bounds(self) -> tuple[float, float]:
        """The loosest scalar box holding every feature's range (for libraries that take one pair)."""
        return float(self.lower.min()), float(self.upper.max())

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.upper), self.lower)

    def apply_mask(self, delta: torch.Tensor) -> torch.Tensor:
        return delta if self.mask is None else delta * self.mask

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor | None,
                norm: Norm) -> torch.Tensor:
        """Nearest point (per sample) in the eps-ball around ``x``, restricted to perturbable features
        and clipped into the bounds (clipping only shrinks the perturbation, so it stays in the ball)."""
        delta = self.apply_mask(x_adv - x)
        if eps is not None:
            if norm == "linf":
                e = eps if isinstance(eps, torch.Tensor) else torch.tensor(eps, device=x.device)
                e = e.reshape(-1, *([1] * (x.ndim - 1))) if e.ndim else e
                delta = torch.maximum(torch.minimum(delta, e), -e)
            else:
                size = flat_norm(delta, "l2").clamp_min(1e-12)
                e = eps if isinstance(eps, torch.Tensor) else torch.full_like(size, float(eps))
                delta = delta * (e / size).clamp(max=1.0).reshape(-1, *([1] * (x.ndim - 1)))
        return self.clip(x + delta)


def flat_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = delta.reshape(delta.shape[0], -1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def batch_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, ...) to broadcast against a batch shaped like ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


# --- losses (per sample, larger = more adversarial for an untargeted attack) -------------------


def other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.scatter(1, y[:, None], -math.inf).amax(dim=1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best other logit minus the true one (> 0 means misclassified)."""
    return other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): the margin over (z_pi1 - z_pi3), invariant to
    shifts and scaling of the logits, so it does not saturate. Falls back to the margin below 3 classes."""
    if logits.shape[1] < 3:
        return margin_loss(logits, y)
    top = logits.sort(dim=1, descending=True).values
    return margin_loss(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss,
}


def attack_loss(name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample objective to maximize: the untargeted loss on ``y``, or minus the loss toward ``target``."""
    if target is None:
        return LOSSES[name](logits, y)
    toward = ce_loss if name == "ce" else margin_loss  # DLR has no targeted form here: use the margin
    return -toward(logits, target)


def nonfinite_rows(logits: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows holding a NaN or infinite score."""
    return ~torch.isfinite(logits).all(dim=1)


def fooled(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Success criterion: misclassified (untargeted) or classified as the target (targeted).

    A row with a NaN or infinite score has no valid prediction (NaN would argmax to some class and
    read as correct for it): it counts as a success, so the sample is never reported robust."""
    pred = logits.argmax(dim=1)
    hit = pred != y if target is None else pred == target
    return hit | nonfinite_rows(logits)


def input_gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                   loss: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-sample loss, d loss / d x): one forward and one backward, on the input only."""
    x = x.detach().requires_grad_(True)
    logits = forward(x)
    values = attack_loss(loss, logits, y, target)
    (grad,) = torch.autograd.grad(values.sum(), x)
    return logits.detach(), values.detach(), grad


def random_start(x: torch.Tensor, eps: float, norm: Norm, domain: Domain) -> torch.Tensor:
    if norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        delta = domain.apply_mask(torch.randn_like(x))
        size = flat_norm(delta, "l2").clamp_min(1e-12)
        radius = eps * torch.rand(x.shape[0], device=x.device)
        delta = delta * batch_view(radius / size, x)
    return domain.project(x + delta, x, eps, norm)


def step_direction(grad: torch.Tensor, norm: Norm, domain: Domain) -> torch.Tensor:
    """Steepest ascent direction for the norm: sign (linf) or unit-L2 gradient, on perturbable features.
    NaN or infinite gradient entries give no direction (0), so an iterate never becomes NaN."""
    grad = domain.apply_mask(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0))
    if norm == "linf":
        return grad.sign()
    return grad / batch_view(flat_norm(grad, "l2").clamp_min(1e-12), grad)


# --- the base class ------------------------------------------------------------------------------


@dataclass
class AttackOutput:
    """What one attack run returns (CPU numpy arrays, one row per input)."""

    attack: str
    norm: Norm
    eps: float | None
    x_adv: np.ndarray  # adversarial where success, else the attack's last candidate
    success: np.ndarray  # (N,) bool, verified by a forward pass on x_adv
    perturbation: np.ndarray  # (N,) norm of x_adv - x
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    queries: int = 0  # model forward passes per sample (score/decision-based attacks)
    # (N,) margin_loss of x_adv from the verification pass: best other logit minus the true one (> 0: fooled);
    # NaN where the model's scores were not finite
    margin: np.ndarray | None = None
    # (N,) True where the model returned NaN/inf scores at x_adv (counted as success: never robust)
    nonfinite: np.ndarray | None = None
    # (N,) score-based attacks: the query that fooled each sample (inf: none did); the per-query success curve
    success_query: np.ndarray | None = None

    @property
    def robust(self) -> np.ndarray:
        return ~self.success


class Attack(ABC):
    """An attack. Subclasses set the class attributes and write ``_attack_batch`` only."""

    name: str  # subclasses set it; APGD names itself after its loss (apgd_ce, apgd_dlr)
    norms: ClassVar[tuple[Norm, ...]] = NORMS
    needs_gradients: ClassVar[bool] = True
    minimal: ClassVar[bool] = False  # minimal-norm attacks ignore eps and report each sample's norm
    supports_mask: ClassVar[bool] = True
    supports_start: ClassVar[bool] = False  # _attack_batch takes ``start`` (per-sample starting points)
    library: ClassVar[str] = "nnaudit"

    def __init__(self, *, norm: Norm = "linf") -> None:
        if norm not in self.norms:
            raise AttackNotApplicable(f"attack '{self.name}' supports norms {list(self.norms)}, not '{norm}'")
        self.norm: Norm = norm

    @classmethod
    def section_defaults(cls, *, steps: int, restarts: int, queries: int, minimal_steps: int) -> dict[str, Any]:
        """The robustness section's shared settings as this attack's constructor arguments (a third-party attack
        gets those its ``__init__`` names); the config's ``attack_params.<name>`` override them."""
        return {"steps": minimal_steps if cls.minimal else steps, "restarts": restarts, "queries": queries}

    def settings(self) -> dict[str, Any]:
        """The exact settings that produce this attack's numbers (for the settings table)."""
        return {"attack": self.name, "norm": self.norm, "library": self.library}

    @abstractmethod
    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None) -> torch.Tensor:
        """Return candidate adversarial inputs for one batch on the model's device."""

    def _forward(self, model: ModelAdapter) -> Forward:
        if self.needs_gradients:
            if not model.has_gradients:
                raise AttackNotApplicable(f"attack '{self.name}' needs input gradients but the model "
                                          f"({model.kind}) has none; remove it from sections.robustness.attacks "
                                          "and use 'square' (score-based) or 'hsj'/'boundary' (decision-based, "
                                          "under minimal_norm)")
            return model.forward
        if model.has_gradients:
            return model.forward
        return lambda t: model.logits(t).to(t.device)

    @final
    def __call__(self, model: ModelAdapter, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
                 eps: float | None, domain: Domain, target: np.ndarray | torch.Tensor | None = None,
                 batch_size: int = 256, start: np.ndarray | torch.Tensor | None = None,
                 progress: Progress | None = None) -> AttackOutput:
        """Attack ``x`` (true labels ``y``) within ``eps``. ``start``: per-sample starting points instead of
        the attack's own (random) start, for attacks with ``supports_start`` (continuing an earlier run);
        ``progress``: a reporter (``ctx.progress``) given the batches."""
        if not self.minimal and (eps is None or not math.isfinite(eps) or eps < 0):
            raise AttackError(f"attack '{self.name}' needs a finite eps >= 0, got {eps}")
        if domain.masked and not self.supports_mask:
            raise AttackNotApplicable(f"attack '{self.name}' cannot keep some features fixed; the data marks "
                                      "only some features perturbable")
        if start is not None and not self.supports_start:
            raise AttackError(f"attack '{self.name}' cannot start from given points")
        forward = self._forward(model)
        device = model.device
        domain = domain.to(device)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        tt = torch.as_tensor(target, dtype=torch.long) if target is not None else None
        st = torch.as_tensor(start, dtype=torch.float32) if start is not None else None
        if tt is not None and bool((tt == yt).any()):
            raise AttackError("a target class equals the true label; pick targets different from the labels")
        start_time = time.perf_counter()
        outs, wins, sizes, margins, bad, counts = [], [], [], [], [], []
        batches: Iterable[int] = range(0, len(xt), batch_size)
        if progress is not None:
            where = f" eps={eps:g}" if eps is not None else ""
            batches = progress(batches, desc=f"{self.name} ({self.norm}{where})",
                               total=-(-len(xt) // batch_size))
        size = max(1, batch_size)  # halved on out-of-memory, and kept smaller for the rest of the run
        halvings: list[int] = []
        for i in batches:
            end, j = min(i + batch_size, len(xt)), i
            while j < end:
                try:
                    adv, win, invalid, margin, count = self._one_batch(forward, xt[j : j + min(size, end - j)], yt, tt,
                                                                st, j, eps, domain, device,
                                                                verify=model.decision_logits)
                except Exception as err:
                    if not is_out_of_memory(err) or size == 1:
                        raise
                    free_cached_memory(device)
                    halvings.append(size)
                    size = max(1, min(size, end - j) // 2)
                    log.warning("attack '%s' ran out of memory; retrying with batches of %d", self.name, size)
                    continue
                adv_cpu = adv.cpu()  # one copy per batch, after the attack's loop
                outs.append(adv_cpu)
                wins.append(win.cpu())
                bad.append(invalid.cpu())
                margins.append(margin.cpu())
                counts.append(count)
                sizes.append(flat_norm(adv_cpu - xt[j : j + len(adv)], self.norm))
                j += len(adv)
        seconds = time.perf_counter() - start_time
        empty = torch.empty(0)
        settings = {**self.settings(), "batch_size": size}
        if halvings:
            settings["out_of_memory_backoff"] = " -> ".join(str(b) for b in [*halvings, size])
        return AttackOutput(
            attack=self.name, norm=self.norm, eps=eps,
            x_adv=torch.cat(outs).numpy() if outs else np.empty((0, *xt.shape[1:]), np.float32),
            success=torch.cat(wins).numpy().astype(bool) if wins else np.zeros(0, bool),
            perturbation=torch.cat(sizes).numpy() if sizes else empty.numpy(),
            seconds=seconds, settings=settings, queries=self.queries_per_sample(),
            margin=torch.cat(margins).numpy() if margins else np.zeros(0, np.float32),
            nonfinite=torch.cat(bad).numpy().astype(bool) if bad else np.zeros(0, bool),
            success_query=torch.cat([c.cpu() for c in counts]).numpy() if counts and all(c is not None for c in counts)
            else None)

    def _one_batch(self, forward: Forward, x_cpu: torch.Tensor, yt: torch.Tensor, tt: torch.Tensor | None,
                   st: torch.Tensor | None, j: int, eps: float | None, domain: Domain,
                   device: torch.device, verify: Forward | None = None) -> tuple[Any, ...]:
        """Attack rows j.. of the inputs (as many as ``x_cpu`` holds) on ``device`` and verify with one pass of
        ``verify`` (the model's ``decision_logits``; default ``forward``): (x_adv, success, invalid, margin), on the
        device; and the per-sample query counts of a score-based attack (``query_counts``) or None."""
        n = len(x_cpu)
        xb = x_cpu.to(device, non_blocking=True)
        yb = yt[j : j + n].to(device, non_blocking=True)
        tb = tt[j : j + n].to(device, non_blocking=True) if tt is not None else None
        if eps == 0:
            adv = xb.clone()
        else:
            extra = {"start": domain.project(st[j : j + n].to(device), xb, eps, self.norm)} \
                if st is not None else {}
            adv = self._attack_batch(forward, xb, yb, eps=eps, domain=domain, target=tb, **extra).detach()
            adv = domain.project(adv, xb, eps, self.norm)
        count = self.query_counts() if eps != 0 else None
        broken = nonfinite_rows(adv.reshape(len(adv), -1))  # never hand on a NaN input
        adv = torch.where(batch_view(broken, adv), xb, adv)
        with torch.no_grad():
            logits = (verify or forward)(adv)
            invalid = nonfinite_rows(logits) | broken
            win = fooled(logits, yb, tb) | invalid
            margin = margin_loss(logits, yb).float()
        return adv, win, invalid, margin, count

    def queries_per_sample(self) -> int:
        return 0

    def query_counts(self) -> torch.Tensor | None:
        """Score-based attacks: per sample of the batch just attacked, the query that fooled it (inf: none)."""
        return None


class ActiveSet:
    """Samples still being attacked in a batch: those found adversarial leave the set, so later
    steps cost less (a found adversarial stays adversarial, robust accuracy does not change)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.best = x.clone()  # adversarial once found, else the latest candidate
        self.index = torch.arange(x.shape[0], device=x.device)

    def record(self, candidates: torch.Tensor, found: torch.Tensor) -> torch.Tensor | None:
        """Store the ``found`` rows of ``candidates`` (rows of the active set); return the keep mask
        when some were found (the caller shrinks its own state with it), else None."""
        if not bool(found.any()):
            return None
        self.best[self.index[found]] = candidates[found].detach()
        keep = ~found
        self.index = self.index[keep]
        return keep

    def finish(self, candidates: torch.Tensor) -> torch.Tensor:
        """Store the last candidates of the samples never found adversarial; return every row."""
        if self.index.numel():
            self.best[self.index] = candidates.detach()
        return self.best

    @property
    def empty(self) -> bool:
        return self.index.numel() == 0
