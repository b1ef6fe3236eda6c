"""Robustness evaluation, following the AutoAttack conventions.

- Only clean-correct samples are attacked; a clean-wrong sample counts as non-robust.
- Robust accuracy at eps = fraction of samples correct under every attack at eps (the per-sample
  worst case over the configured attacks). An adversarial found at a smaller eps also counts at
  every larger eps, so the worst-case curve never rises.
- Minimal-norm attacks give each sample's smallest adversarial eps, hence the whole curve in one
  pass; they are folded into the worst case wherever their perturbation fits in eps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.base import Attack, AttackError, AttackOutput, Domain, Norm, Progress

ATTACKS_GROUP = "nnaudit.attacks"
# the built-in attacks, in the order tables list them; every attack (these too) loads from its entry point
BOUNDED_ATTACKS = ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "square")
MINIMAL_ATTACKS = ("fmn", "ddn", "cw", "deepfool", "hsj", "boundary")


def attack_class(name: str, *, key: str = "sections.robustness.attacks") -> type[Attack]:
    """The attack class registered as ``name`` in the ``nnaudit.attacks`` entry-point group (built-in or not)."""
    from audit.plugin import plugin_class

    cls: type[Attack] = plugin_class(name, ATTACKS_GROUP, Attack, key=key)
    return cls


def make_attack(name: str, *, norm: Norm, steps: int = 50, restarts: int = 1, queries: int = 1000,
                minimal_steps: int = 100, params: dict[str, Any] | None = None,
                key: str = "sections.robustness.attack_params") -> Attack:
    """Build any registered attack the same way: the section's shared settings the class takes
    (``Attack.section_defaults``: steps, restarts, queries), then the config's own ``params`` for it, which win."""
    from audit.plugin import construct

    if name not in registered_attacks():
        raise AttackError(f"unknown attack '{name}'; choose from {sorted(registered_attacks())}")
    cls = attack_class(name)
    defaults = cls.section_defaults(steps=steps, restarts=restarts, queries=queries, minimal_steps=minimal_steps)
    attack: Attack = construct(cls, name, key=f"{key}.{name}", defaults=defaults, params=params or {},
                               fixed={"norm": norm})
    return attack


def registered_attacks() -> dict[str, str]:
    """Every attack in the ``nnaudit.attacks`` entry-point group: name -> 'module:object' (nothing imported)."""
    from audit.plugin import available

    return available(ATTACKS_GROUP)


@dataclass
class NormEvaluation:
    """Everything the evaluation of one norm found, per sample (rows of the evaluated data)."""

    norm: Norm
    eps: list[float]
    clean_correct: np.ndarray  # (N,) bool
    runs: dict[tuple[str, float], AttackOutput] = field(default_factory=dict)  # rows: all N samples
    worst_robust: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (N,) bool
    worst_x_adv: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (N, *shape)
    fooled_by: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (N,) name of first attack or ""
    minimal: dict[str, tuple[np.ndarray, AttackOutput]] = field(default_factory=dict)  # name -> (index, output)
    min_eps: np.ndarray | None = None  # (N,) smallest adversarial eps found: 0 clean-wrong, inf none
    attacks: dict[str, Attack] = field(default_factory=dict)  # name -> the attack object (bounded and minimal)
    nonfinite: np.ndarray | None = None  # (N,) True where some attack met NaN/inf model outputs
    worst_size: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (N,) norm of worst_x_adv - x
    # rows whose runs[...].x_adv were kept (reduced from chunks: the red-flag check samples); None: all N rows
    kept_rows: np.ndarray | None = None

    def run_x_adv(self, name: str, eps: float, rows: np.ndarray) -> np.ndarray:
        """``runs[(name, eps)].x_adv`` at ``rows`` (rows of the evaluated data), also when only some were kept."""
        x_adv = self.runs[(name, eps)].x_adv
        if self.kept_rows is None or len(x_adv) == len(self.clean_correct):  # every row (e.g. a run added later)
            return x_adv[rows]
        pos = np.searchsorted(self.kept_rows, rows)
        if len(rows) and (pos.max() >= len(self.kept_rows) or (self.kept_rows[pos] != rows).any()):
            raise KeyError(f"the adversarial inputs of {name} at eps={eps:g} were kept only for the check samples")
        return x_adv[pos]

    def fold_worst(self, eps: float, fooled: np.ndarray, x_adv: np.ndarray, names: np.ndarray | str,
                   x: np.ndarray) -> np.ndarray:
        """Fold another attack's successes into the worst case at ``eps``: the samples it fooled (``fooled``,
        (N,) bool) that every attack so far missed take its adversarial input (``x_adv``, rows of all N) and its
        name; ``worst_size`` follows. Returns those newly fooled rows as a mask (``min_eps`` is the caller's)."""
        newly = fooled & self.worst_robust[eps]
        rows = np.flatnonzero(newly)
        self.worst_robust[eps] = self.worst_robust[eps] & ~fooled
        if len(rows):
            self.worst_x_adv[eps][rows] = x_adv[rows]
            self.fooled_by[eps][rows] = names if isinstance(names, str) else names[rows]
            if eps in self.worst_size:
                self.worst_size[eps][rows] = perturbation_size(x_adv[rows], x[rows], self.norm)
        return newly

    def white_box(self, name: str) -> bool:
        """Whether an attack uses the model's gradients (white-box) rather than only its scores."""
        attack = self.attacks.get(name)
        return attack is not None and attack.needs_gradients

    def fooled_under(self, eps: float, names: Iterable[str]) -> np.ndarray:
        """(N,) samples wrong clean or fooled at ``eps`` (or a smaller eps) by one of these attacks, bounded or
        minimal-norm (a minimal perturbation that fits in eps counts)."""
        wanted = set(names)
        out = ~self.clean_correct
        for (name, e), run in self.runs.items():
            if name in wanted and e <= eps:
                out = out | run.success
        for name, (index, run) in self.minimal.items():
            if name in wanted:
                out[index[run.success & (run.perturbation <= eps)]] = True
        return out

    def robust_accuracy(self, attack: str, eps: float) -> float:
        """Share of all samples correct under this attack alone (clean-wrong samples count as wrong)."""
        return float((self.clean_correct & self.runs[(attack, eps)].robust).mean())

    def worst_accuracy(self, eps: float) -> float:
        return float(self.worst_robust[eps].mean())

    def middle_eps(self) -> float:
        """The eps whose worst-case accuracy is nearest half the clean accuracy (most informative)."""
        clean = float(self.clean_correct.mean())
        return min(self.eps, key=lambda e: abs(self.worst_accuracy(e) - clean / 2))

    def minimal_curve(self, name: str, grid: Iterable[float]) -> list[float]:
        """Robust accuracy vs eps on the minimal attack's subset, from its per-sample norms."""
        index, out = self.minimal[name]
        norms = np.where(out.success, out.perturbation, np.inf)
        ok = self.clean_correct[index]
        return [float((ok & (norms > e)).mean()) for e in grid]


def _expand(out: AttackOutput, index: np.ndarray, x: np.ndarray, n: int) -> AttackOutput:
    """Attack output on ``x[index]`` -> rows for all n samples (others: clean, not successful)."""
    x_adv = x.copy()
    x_adv[index] = out.x_adv
    success = np.zeros(n, bool)
    success[index] = out.success
    size = np.zeros(n, np.float32)
    size[index] = out.perturbation
    margin = None
    if out.margin is not None:
        margin = np.full(n, np.nan, np.float32)
        margin[index] = out.margin
    nonfinite = np.zeros(n, bool)
    if out.nonfinite is not None:
        nonfinite[index] = out.nonfinite
    success_query = None
    if out.success_query is not None:
        success_query = np.full(n, np.inf)
        success_query[index] = out.success_query
    return AttackOutput(attack=out.attack, norm=out.norm, eps=out.eps, x_adv=x_adv, success=success,
                        perturbation=size, seconds=out.seconds, settings=out.settings, queries=out.queries,
                        margin=margin, nonfinite=nonfinite, success_query=success_query)


def evaluate_norm(model: Any, x: np.ndarray, y: np.ndarray, *, norm: Norm, eps: list[float],
                  attacks: list[Attack], minimal_attacks: list[Attack], minimal_index: np.ndarray,
                  domain: Domain, clean_pred: np.ndarray, batch_size: int = 256,
                  progress: Progress | None = None) -> NormEvaluation:
    """Run every attack at every eps (on clean-correct samples) and the minimal-norm attacks once.

    ``progress`` (``ctx.progress``) reports the (attack, eps) jobs and, inside each, the batches."""
    n = len(y)
    clean_correct = clean_pred == y
    attacked = np.flatnonzero(clean_correct)
    ev = NormEvaluation(norm=norm, eps=sorted(eps), clean_correct=clean_correct,
                        attacks={a.name: a for a in [*attacks, *minimal_attacks]})
    nonfinite = np.zeros(n, bool)
    jobs = [(a, e) for e in ev.eps for a in attacks] + [(a, None) for a in minimal_attacks]
    steps: Iterable[Any] = progress(jobs, desc=f"attacks ({norm})", total=len(jobs)) if progress else jobs
    min_eps = np.where(clean_correct, np.inf, 0.0)
    for attack, e in steps:
        if e is None:  # a minimal-norm attack: once, on its subset
            index = minimal_index[clean_correct[minimal_index]]
            if len(index) == 0:
                continue
            out = attack(model, x[index], y[index], eps=None, domain=domain, batch_size=batch_size,
                         progress=progress)
            ev.minimal[attack.name] = (index, out)
            if out.nonfinite is not None:
                nonfinite[index[out.nonfinite]] = True
            found = np.where(out.success, out.perturbation, np.inf)
            min_eps[index] = np.minimum(min_eps[index], found)
            continue
        if len(attacked) == 0:
            out = AttackOutput(attack.name, norm, e, x[:0], np.zeros(0, bool), np.zeros(0, np.float32), 0.0,
                               attack.settings())
        else:
            out = attack(model, x[attacked], y[attacked], eps=e, domain=domain, batch_size=batch_size,
                         progress=progress)
        ev.runs[(attack.name, e)] = run = _expand(out, attacked, x, n)
        if run.nonfinite is not None:
            nonfinite |= run.nonfinite
    ev.nonfinite = nonfinite
    worst_fooled = ~clean_correct
    worst_x = x.copy()
    names = np.where(clean_correct, "", "clean").astype(object)
    for e in ev.eps:
        for attack in attacks:
            run = ev.runs[(attack.name, e)]
            new = run.success & ~worst_fooled
            worst_x[new] = run.x_adv[new]
            names[new] = attack.name
            worst_fooled = worst_fooled | run.success
        for name, (index, out) in ev.minimal.items():
            fits = out.success & (out.perturbation <= e)
            new = np.zeros(n, bool)
            new[index[fits]] = True
            new &= ~worst_fooled
            rows = np.flatnonzero(new)
            worst_x[rows] = out.x_adv[np.searchsorted(index, rows)]
            names[rows] = name
            worst_fooled = worst_fooled | new
        min_eps = np.where(worst_fooled & clean_correct, np.minimum(min_eps, e), min_eps)
        ev.worst_robust[e] = ~worst_fooled
        ev.worst_x_adv[e] = worst_x.copy()
        resisted = np.flatnonzero(clean_correct & ~worst_fooled)
        if len(resisted) and attacks:
            ev.worst_x_adv[e][resisted] = closest_candidate([ev.runs[(a.name, e)] for a in attacks], resisted)
        ev.fooled_by[e] = names.copy()
        ev.worst_size[e] = perturbation_size(ev.worst_x_adv[e], x, norm)
    ev.min_eps = min_eps
    return ev


def perturbation_size(x_adv: np.ndarray, x: np.ndarray, norm: Norm) -> np.ndarray:
    """(N,) L-inf or L2 norm of each row of ``x_adv - x`` (float32, as the attacks measure it)."""
    width = int(np.prod(np.shape(x)[1:]))
    sizes = np.abs((np.asarray(x_adv, np.float32) - np.asarray(x, np.float32)).reshape(len(x), width))
    return sizes.max(axis=1) if norm == "linf" else np.sqrt((sizes**2).sum(axis=1))


def closest_candidate(runs: list[AttackOutput], rows: np.ndarray) -> np.ndarray:
    """For samples no attack fooled: the candidate (within eps) that came closest, the one with the largest
    margin loss (best other logit minus the true one) in the attacks' own verification passes. Later sections
    see how the model and its explanations move under the strongest perturbation that did not change the
    prediction. Runs without margins are passed over."""
    best = runs[0].x_adv[rows].copy()
    best_margin = np.full(len(rows), -np.inf)
    for run in runs:
        if run.margin is None:
            continue
        margin = run.margin[rows]
        closer = margin > best_margin
        best[closer] = run.x_adv[rows][closer]
        best_margin = np.where(closer, margin, best_margin)
    return best


def per_class_accuracy(y: np.ndarray, correct: np.ndarray, k: int) -> np.ndarray:
    """(k,) accuracy per true class (NaN for an absent class)."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    hits = np.bincount(y, weights=correct.astype(np.float64), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
