"""Explanation stability under attack: do the attributions move when the input is attacked?

The robustness section leaves per-sample adversarial inputs in ``ctx.adversarial``; here the same
explainer explains the clean and the adversarial input (each for the class the model predicts on it),
and the two are compared by top-k overlap and Spearman rank correlation, split by whether the
attack changed the prediction.
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
    """The outcome to use: the one asked for, else the largest L-inf eps (else the largest eps of any norm)."""
    if key is not None:
        return key
    linf = [k for k, o in adversarial.items() if o.norm == "linf"]
    pool = linf or list(adversarial)
    return max(pool, key=lambda k: adversarial[k].eps)


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
                        upper: np.ndarray | float | None, seed: int) -> np.ndarray:
    """Random noise of the attack's size (uniform in the L-inf ball, or a random L2 direction of length eps):
    the reference for how much an explanation moves when nothing adversarial happens."""
    rng = np.random.default_rng(seed)
    if norm == "l2":
        direction = rng.standard_normal(x.shape)
        flat = direction.reshape(len(x), -1)
        direction = (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(x.shape)
        noisy = x + eps * direction
    else:
        noisy = x + rng.uniform(-eps, eps, size=x.shape)
    if lower is not None and upper is not None:
        noisy = np.clip(noisy, lower, upper)
    return noisy.astype(np.float32)


def compare(clean: np.ndarray, adversarial: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k overlap, Spearman rank correlation of |attribution|) per row."""
    return topk_overlap(clean, adversarial, k), rank_correlation(clean, adversarial)
