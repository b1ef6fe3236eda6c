"""Explanation stability under attack: do the attributions move when the input is attacked?

The robustness section leaves per-sample adversarial inputs in ``ctx.adversarial``: the adversarial
example where an attack succeeded, and where all failed the candidate that came closest (still within
eps). Here the same explainer explains the clean and the attacked input (each for the class the model
predicts on it), and the two are compared by top-k overlap and Spearman rank correlation, split by
whether the attack changed the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.context import AdversarialOutcome
from explain.quality import rank_correlation, topk_overlap


@dataclass
class StabilitySample:
    index: np.ndarray  # rows of ctx.data compared
    flipped: np.ndarray  # (n,) bool: the attack changed the prediction


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


def select_samples(outcome: AdversarialOutcome, x: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray,
                   n: int, seed: int) -> StabilitySample:
    """Up to n perturbed rows (x_adv differs from x), half with a changed prediction when there are enough."""
    moved = np.abs(outcome.x_adv.reshape(len(x), -1) - x.reshape(len(x), -1)).max(axis=1) > 0
    flipped = clean_pred != adv_pred
    rng = np.random.default_rng(seed)
    pick_flip = np.flatnonzero(moved & flipped)
    pick_keep = np.flatnonzero(moved & ~flipped)
    n_flip = min(len(pick_flip), max(n - len(pick_keep), n // 2))
    n_keep = min(len(pick_keep), n - n_flip)
    chosen = np.sort(np.concatenate([rng.choice(pick_flip, n_flip, replace=False),
                                     rng.choice(pick_keep, n_keep, replace=False)]).astype(np.int64))
    return StabilitySample(chosen, flipped[chosen])


def random_perturbation(x: np.ndarray, norm: str, eps: float, lower: np.ndarray | float | None,
                        upper: np.ndarray | float | None, seed: int,
                        perturbable: np.ndarray | None = None) -> np.ndarray:
    """Random noise of the attack's size (uniform in the L-inf ball, or a random L2 direction of length eps)
    on the features the attacks may change: the reference for how much an explanation moves when nothing
    adversarial happens."""
    rng = np.random.default_rng(seed)
    mask = np.ones(x.shape[1:], bool) if perturbable is None else np.asarray(perturbable, bool).reshape(x.shape[1:])
    if norm == "l2":
        direction = rng.standard_normal(x.shape) * mask
        flat = direction.reshape(len(x), -1)
        scale = np.linalg.norm(flat, axis=1, keepdims=True)
        direction = (flat / np.where(scale > 0, scale, 1.0)).reshape(x.shape)
        noisy = x + eps * direction
    else:
        noisy = x + rng.uniform(-eps, eps, size=x.shape) * mask
    if lower is not None and upper is not None:
        noisy = np.clip(noisy, lower, upper)
    return noisy.astype(np.float32)


def compare(clean: np.ndarray, adversarial: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k overlap, Spearman rank correlation of |attribution|) per row."""
    return topk_overlap(clean, adversarial, k), rank_correlation(clean, adversarial)
