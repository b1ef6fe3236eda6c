"""Explanation quality by perturbation: captum's infidelity and sensitivity-max (Yeh et al. 2019), with each
sample's perturbations keyed to the sample and evaluated in chunks within the memory budget; and the two
similarities of attributions the other checks use (Spearman of |attribution|, top-k overlap).

Every function returns per-sample values; intervals over samples are ``explain.ranking``'s job. Deletion and
insertion are in ``explain.faithfulness``, the cascading randomization in ``explain.randomization``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit.model import ModelAdapter
from explain.base import Explainer
from explain.budget import DEFAULT_MEMORY_MB, model_rows, spans
from explain.ranking import Estimate, intervals
from explain.seeds import sample_rng


def logits_function(adapter: ModelAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """A no-grad logits function on tensors, for captum's metrics (any adapter, black boxes too)."""
    def forward(x: torch.Tensor) -> torch.Tensor:  # on the model's device for torch models: no host round trip
        return adapter.device_logits(x.detach(), batch_size=max(len(x), 1)).to(x.device)

    return forward


def infidelity(adapter: ModelAdapter, x: np.ndarray, attributions: np.ndarray, target: np.ndarray,
               ids: np.ndarray, *, noise: float, n_perturb: int, seed: int,
               memory_mb: float = DEFAULT_MEMORY_MB) -> np.ndarray:
    """captum's infidelity per row with Gaussian perturbations of std ``noise`` (normalized attributions).

    Each sample's perturbations are drawn from its own key (run seed, 'infidelity', sample id), the same for
    every method; captum gets the samples in chunks whose perturbed inputs fit the memory budget.
    """
    from captum.metrics import infidelity as captum_infidelity

    rows = model_rows(adapter, x, memory_mb)
    per_call = max(1, rows // n_perturb)
    out = np.zeros(len(x))
    forward = logits_function(adapter)
    for part in spans(len(x), per_call):
        draws = np.stack([sample_rng(seed, "infidelity", int(i)).standard_normal((n_perturb, *x.shape[1:]))
                          for i in ids[part]]) * noise
        perturb = _keyed_perturbations(torch.as_tensor(draws, dtype=torch.float32), len(draws))
        value = captum_infidelity(forward, perturb, torch.as_tensor(x[part], dtype=torch.float32),
                                  torch.as_tensor(attributions[part], dtype=torch.float32),
                                  target=torch.as_tensor(target[part]), n_perturb_samples=n_perturb,
                                  max_examples_per_batch=min(rows, len(draws) * n_perturb), normalize=True)
        out[part] = value.detach().cpu().numpy()
    return out


def _keyed_perturbations(draws: torch.Tensor, samples: int) -> Callable[[torch.Tensor],
                                                                        tuple[torch.Tensor, torch.Tensor]]:
    """captum's ``perturb_func`` handing out pre-drawn perturbations (samples, n_perturb, *shape): captum calls
    it on the samples repeated ``k`` times each (``repeat_interleave``), k perturbations at a time."""
    offset = 0

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal offset
        k = inputs.shape[0] // samples
        delta = draws[:, offset : offset + k].reshape(inputs.shape).to(inputs.device)
        offset += k
        return delta, inputs - delta

    return perturb


def sensitivity_max(explainer: Explainer, x: np.ndarray, target: np.ndarray, attributions: np.ndarray,
                    ids: np.ndarray, *, radius: float, n_perturb: int, seed: int,
                    lower: np.ndarray | float | None = None, upper: np.ndarray | float | None = None,
                    perturbable: np.ndarray | None = None, memory_mb: float = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Sensitivity-max (Yeh et al. 2019, as captum computes it) per row: the largest relative change
    ||e(x + d) - e(x)|| / ||e(x)|| (Frobenius) over ``n_perturb`` uniform perturbations d in the L-inf ball of
    ``radius`` on the ``perturbable`` features (all when None; a one-hot column moved by 0.02 is no input the
    model can see), clipped to the input bounds.

    Each sample's perturbations come from its key (run seed, 'sensitivity', sample id), and the perturbed
    inputs are explained under the sample's own id, so a method that samples at random draws the same as for
    the clean input: what is measured is the input's effect, not sampling noise. ``attributions`` are the
    clean explanations (not recomputed). Perturbed inputs of as many samples as fit the budget at a time.
    """
    shape = x.shape[1:]
    held = 3 * n_perturb * int(np.prod(shape)) * 8  # perturbed inputs, their attributions, differences
    per_call = max(1, int(memory_mb * 2**20 // max(held, 1)))
    out = np.zeros(len(x))
    for part in spans(len(x), per_call):
        noise = np.stack([sample_rng(seed, "sensitivity", int(i)).uniform(-radius, radius, (n_perturb, *shape))
                          for i in ids[part]])
        if perturbable is not None:
            noise = noise * np.asarray(perturbable, bool).reshape(shape)
        noisy = x[part, None].astype(np.float64) + noise
        if lower is not None and upper is not None:
            noisy = np.clip(noisy, lower, upper)
        flat = noisy.reshape((-1, *shape)).astype(np.float32)
        moved = explainer.explain(flat, np.repeat(target[part], n_perturb), np.repeat(ids[part], n_perturb))
        clean = attributions[part].reshape(len(noise), 1, -1)
        change = np.linalg.norm(moved.reshape(len(noise), n_perturb, -1) - clean, axis=2)
        norm = np.linalg.norm(clean, axis=2)
        out[part] = (change / np.where(norm == 0, 1.0, norm)).max(axis=1)
    return out


def rank_correlation(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation per row of |a| and |b| (signed values with ``absolute=False``; NaN where a
    row is constant)."""
    from scipy.stats import rankdata

    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    ra = rankdata(np.abs(fa) if absolute else fa, axis=1)
    rb = rankdata(np.abs(fb) if absolute else fb, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Fraction of the k features with the largest |attribution| that a and b share, per row."""
    fa = np.abs(a.reshape(len(a), -1))
    fb = np.abs(b.reshape(len(b), -1))
    k = max(1, min(k, fa.shape[1]))
    top_a = np.argsort(-fa, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-fb, axis=1, kind="stable")[:, :k]
    return np.array([len(np.intersect1d(ra, rb)) / k for ra, rb in zip(top_a, top_b, strict=True)])


@dataclass
class PerturbationQuality:
    """Infidelity (over the explained samples) and sensitivity-max (over the check samples) of every method: the
    per-sample scores and their means with bootstrap intervals."""

    scores: dict[str, dict[str, np.ndarray]]  # 'infidelity' / 'sensitivity_max' -> method -> per-sample score
    estimates: dict[str, dict[str, Estimate]]  # the same keys, for the metrics that ran

    def estimate(self, name: str, method: str) -> Estimate | None:
        return self.estimates.get(name, {}).get(method)


def perturbation_quality(scores: dict[str, dict[str, np.ndarray]], *, n_resamples: int, seed: int,
                         confidence: float) -> PerturbationQuality:
    """Means and bootstrap intervals of the per-sample infidelity and sensitivity-max scores."""
    estimates = {name: intervals(by_method, n_resamples=n_resamples, seed=seed, confidence=confidence)
                 for name, by_method in scores.items() if by_method}
    return PerturbationQuality(scores, estimates)
