"""Explanation stability under attack: do the attributions move when the input is attacked?

The robustness section leaves per-sample adversarial inputs in ``ctx.adversarial``: the adversarial
example where an attack succeeded, and where all failed the candidate that came closest (still within
eps). The same explainer explains the clean input (for its predicted class) and the attacked input, and
the two are compared by top-k overlap and Spearman rank correlation of |attribution|:

- where the attack did not change the prediction, for that one class;
- where it did (fooled samples), twice and reported separately: for the clean class (only the input
  changed) and for the adversarial class (the explanation of the new decision), so the two effects do
  not mix.

The reference is random noise of each sample's own attack perturbation size in the threat model's norm,
explained for the clean class: an explanation that moves as much under noise as under attack is fragile
on its own. The adversarial and noisy inputs keep the sample's id, so a method that samples at random
draws the same for all three.

``stability_under_attack`` does all of it and returns a ``Stability``; it raises ``NotMeasured`` (its message is
the note the section records) when there is nothing to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.context import AdversarialOutcome
from audit.model import ModelAdapter
from explain.base import Explainer
from explain.quality import rank_correlation, topk_overlap
from explain.seeds import sample_rng

GROUPS = ("unflipped", "flipped_clean_class", "flipped_adversarial_class")


class NotMeasured(Exception):
    """Stability under attack cannot be measured here; the message says why (the section records it as a note)."""


@dataclass
class StabilitySample:
    index: np.ndarray  # rows of ctx.data compared (the samples' ids)
    position: np.ndarray  # the same samples' rows in the adversarial outcome's arrays
    flipped: np.ndarray  # (n,) bool: the attack changed the prediction
    attacked: int  # samples the outcome covers (the robustness section may attack a subset)
    perturbed: int  # of those, the ones whose adversarial input differs from the clean one


def pick_key(adversarial: dict[str, AdversarialOutcome], key: str | None) -> str:
    """The outcome to use: the one asked for, else the L-inf eps (else any norm's) where the attack changed
    and did not change the prediction on the most even split of the attacked samples, so that both cases are
    measured; ties go to the larger eps."""
    if key is not None:
        return key
    linf = [k for k, o in adversarial.items() if o.norm == "linf"]
    pool = linf or list(adversarial)

    def balance(k: str) -> tuple[int, float]:
        outcome = adversarial[k]
        fooled = int((outcome.clean_correct & ~outcome.robust_correct).sum())
        resisted = int(outcome.robust_correct.sum())
        return min(fooled, resisted), outcome.eps

    return max(pool, key=balance)


def outcome_rows(outcome: AdversarialOutcome, n_rows: int) -> np.ndarray:
    """The rows of ctx.data the outcome's arrays describe, in their order (all rows where ``index`` is None)."""
    rows = np.arange(n_rows) if outcome.index is None else np.asarray(outcome.index, np.int64).reshape(-1)
    if len(rows) != len(outcome.x_adv) or (len(rows) and (rows.min() < 0 or rows.max() >= n_rows)):
        raise ValueError(f"the adversarial outcome holds {len(outcome.x_adv)} inputs for {len(rows)} row ids "
                         f"(data rows 0..{n_rows - 1})")
    return rows


def select_samples(outcome: AdversarialOutcome, x: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray,
                   n: int, seed: int, chunk: int = 4096) -> StabilitySample:
    """Up to n attacked samples whose adversarial input differs from the clean one, half with a changed
    prediction when there are enough.

    ``x`` and ``clean_pred`` cover every row of the data; ``outcome`` and ``adv_pred`` (the model's prediction
    on ``outcome.x_adv``) only the rows it attacked (``outcome.index``), so only those can be chosen.
    """
    rows = outcome_rows(outcome, len(x))
    moved = np.zeros(len(rows), bool)
    for start in range(0, len(rows), chunk):  # x_adv may be a memmap as large as the data: compare in chunks
        part = slice(start, start + chunk)
        delta = np.asarray(outcome.x_adv[part]).reshape(len(rows[part]), -1) - x[rows[part]].reshape(
            len(rows[part]), -1)
        moved[part] = np.abs(delta).max(axis=1) > 0 if delta.size else False
    flipped = clean_pred[rows] != adv_pred
    rng = np.random.default_rng(seed)
    pick_flip = np.flatnonzero(moved & flipped)
    pick_keep = np.flatnonzero(moved & ~flipped)
    n_flip = min(len(pick_flip), max(n - len(pick_keep), n // 2))
    n_keep = min(len(pick_keep), n - n_flip)
    chosen = np.sort(np.concatenate([rng.choice(pick_flip, n_flip, replace=False),
                                     rng.choice(pick_keep, n_keep, replace=False)]).astype(np.int64))
    return StabilitySample(rows[chosen], chosen, flipped[chosen], len(rows), int(moved.sum()))


def perturbation_norms(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L-inf, L2) norm per row."""
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    return np.abs(flat).max(axis=1), np.linalg.norm(flat, axis=1)


def matched_noise(x: np.ndarray, x_adv: np.ndarray, norm: str, ids: np.ndarray, seed: int,
                  lower: np.ndarray | float | None, upper: np.ndarray | float | None,
                  perturbable: np.ndarray | None = None) -> np.ndarray:
    """Random noise of each sample's own attack perturbation size in the threat model's norm, on the features
    the attacks may change, within the input bounds; keyed per sample (run seed, 'stability_noise', id).

    L-inf: features move by the attack's L-inf size, up or down at random (the other way where the bound
    leaves no room), on a random subset as large as the attack's L2 size holds at that L-inf size (every
    feature for a saturated attack), so the L2 size matches as well (uniform noise in the ball had 0.6 of the
    attack's L2). L2: a random direction scaled, after clipping to the bounds, to the attack's L2 size.
    """
    shape = x.shape[1:]
    mask = np.ones(shape, bool) if perturbable is None else np.asarray(perturbable, bool).reshape(shape)
    x64 = x.astype(np.float64)
    lo = np.broadcast_to(np.asarray(lower if lower is not None else -np.inf, np.float64), shape)
    hi = np.broadcast_to(np.asarray(upper if upper is not None else np.inf, np.float64), shape)
    linf, l2 = perturbation_norms(x_adv.astype(np.float64) - x64)
    out = np.empty_like(x64)
    for i, sample_id in enumerate(ids):
        rng = sample_rng(seed, "stability_noise", int(sample_id))
        if norm == "l2":
            direction = rng.standard_normal(shape) * mask
            length = float(np.linalg.norm(direction))
            step = direction * (l2[i] / length if length > 0 else 0.0)
            for _ in range(20):  # rescale what clipping left until the size matches
                moved = np.clip(x64[i] + step, lo, hi) - x64[i]
                size = float(np.linalg.norm(moved))
                if size == 0 or abs(size - l2[i]) <= 1e-6 * max(l2[i], 1e-12):
                    break
                step = step * (l2[i] / size)
            out[i] = np.clip(x64[i] + step, lo, hi)
        else:
            signs = rng.choice([-1.0, 1.0], size=shape)
            up_blocked = x64[i] + linf[i] > hi
            down_blocked = x64[i] - linf[i] < lo
            signs = np.where((signs > 0) & up_blocked & ~down_blocked, -1.0, signs)
            signs = np.where((signs < 0) & down_blocked & ~up_blocked, 1.0, signs)
            # as many features as the attack's L2 size holds at its L-inf size (all for a saturated attack)
            candidates = np.flatnonzero(mask.reshape(-1))
            count = int(np.clip(np.rint((l2[i] / linf[i]) ** 2), 1, len(candidates))) if linf[i] > 0 else 0
            moved = np.zeros(mask.size, bool)
            moved[rng.choice(candidates, count, replace=False)] = True
            out[i] = np.clip(x64[i] + signs * linf[i] * moved.reshape(shape), lo, hi)
    return out.astype(np.float32)


def compare(clean: np.ndarray, other: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k overlap, Spearman rank correlation of |attribution|) per row."""
    return topk_overlap(clean, other, k), rank_correlation(clean, other)


@dataclass
class MethodStability:
    """One method's clean vs attacked attributions over the compared samples."""

    overlap: np.ndarray  # (n,) top-k overlap, the attacked input explained for the clean class
    rho: np.ndarray  # (n,) Spearman of |attribution|, the same pair
    noise_overlap: np.ndarray  # (n,) top-k overlap with the input under random noise of the attack's size
    groups: dict[str, float | None]  # GROUPS -> mean overlap (None where the group is empty)

    @property
    def spearman(self) -> float:
        return float(np.nanmean(self.rho)) if np.isfinite(self.rho).any() else float("nan")


@dataclass
class Stability:
    key: str  # the adversarial outcome compared ('norm:eps')
    attack: str
    norm: str
    sample: StabilitySample
    k: int  # features in the top-k overlap
    sizes: dict[str, np.ndarray]  # attack_linf, attack_l2, noise_linf, noise_l2: per-sample perturbation sizes
    noise_flipped_fraction: float  # samples whose prediction the random noise changed
    methods: dict[str, MethodStability]
    notes: list[str]


def stability_under_attack(model: ModelAdapter, x: np.ndarray, clean_pred: np.ndarray,
                           adversarial: dict[str, AdversarialOutcome], explainers: dict[str, Explainer], *,
                           key: str | None, samples: int, top_k: int, seed: int,
                           lower: np.ndarray | float | None, upper: np.ndarray | float | None,
                           perturbable: np.ndarray | None, progress: Callable[..., Any]) -> Stability:
    """Compare every explainer's clean and attacked attributions on up to ``samples`` attacked rows of ``x`` (the
    audit data; ``adversarial``: what the robustness section left). ``top_k`` 0: 10% of the features, at least 3."""
    if not adversarial:
        raise NotMeasured("stability under attack not measured: no adversarial examples in this audit (add the "
                          "robustness section before explanations in the config)")
    key = pick_key(adversarial, key)
    if key not in adversarial:
        raise NotMeasured(f"stability under attack not measured: no adversarial outcome '{key}'; the robustness "
                          f"section left {sorted(adversarial)}")
    outcome = adversarial[key]
    try:
        outcome_rows(outcome, len(x))
    except ValueError as err:
        raise NotMeasured(f"stability under attack not measured: the adversarial outcome {key} does not fit the "
                          f"data: {err}") from err
    adv_pred = model.predict(outcome.x_adv)  # one per attacked row (outcome.index), not per data row
    sample = select_samples(outcome, x, clean_pred, adv_pred, samples, seed)
    if len(sample.index) == 0:
        raise NotMeasured(f"stability under attack not measured: the attack at {key} perturbed none of the "
                          f"{sample.attacked} samples it attacked")
    notes = []
    if sample.attacked < len(x):
        notes.append(f"stability at {key}: the robustness section attacked {sample.attacked} of the {len(x)} "
                     f"samples (its max_samples); {sample.perturbed} of them have an adversarial input that differs "
                     f"from the clean one, and {len(sample.index)} of those are compared (stability_samples)")
    idx, pos, fooled = sample.index, sample.position, sample.flipped
    clean, attacked = x[idx], np.asarray(outcome.x_adv[pos])
    k = top_k or max(3, int(np.prod(x.shape[1:])) // 10)
    noisy = matched_noise(clean, attacked, outcome.norm, idx, seed, lower, upper, perturbable)
    sizes = dict(zip(("attack_linf", "attack_l2"), perturbation_norms(attacked - clean), strict=True))
    sizes.update(zip(("noise_linf", "noise_l2"), perturbation_norms(noisy - clean), strict=True))
    clean_class = clean_pred[idx]
    methods = {}
    for method in progress(list(explainers), desc="explanations: stability", total=len(explainers)):
        explainer = explainers[method]
        original = explainer.explain(clean, clean_class, idx)
        overlap, rho = compare(original, explainer.explain(attacked, clean_class, idx), k)  # only the input changed
        noise_overlap, _ = compare(original, explainer.explain(noisy, clean_class, idx), k)
        groups = {"unflipped": (overlap, ~fooled), "flipped_clean_class": (overlap, fooled)}
        if fooled.any():
            own = explainer.explain(attacked[fooled], adv_pred[pos][fooled], idx[fooled])
            own_overlap = np.full(len(idx), np.nan)
            own_overlap[fooled] = compare(original[fooled], own, k)[0]
            groups["flipped_adversarial_class"] = (own_overlap, fooled)
        means: dict[str, float | None] = {}
        for group in GROUPS:
            values, mask = groups.get(group, (overlap, np.zeros(len(idx), bool)))
            means[group] = float(values[mask].mean()) if mask.any() else None
        methods[method] = MethodStability(overlap, rho, noise_overlap, means)
    if not (~fooled).any():
        notes.append(f"stability at {key}: every attacked sample changed its prediction, so the 'prediction "
                     "unchanged' case is not measured; set stability_key to a smaller eps (random noise of the same "
                     "size is the reference: topk_overlap_random_noise)")
    elif not fooled.any():
        notes.append(f"stability at {key}: no attacked sample changed its prediction, so the 'prediction changed' "
                     "case is not measured; set stability_key to a larger eps")
    noise_flipped = float((model.predict(noisy) != clean_class).mean())
    return Stability(key, outcome.attack, outcome.norm, sample, k, sizes, noise_flipped, methods, notes)
