"""Surrogate fits batched across samples: lime and KernelSHAP without their per-sample loops.

lime fits one weighted ridge regression per explanation, shap's KernelExplainer one constrained weighted
least-squares problem per explanation and output. Here the problems of a chunk of samples are solved in one
batched call on the model's device, in float64 as the libraries solve them, from the same perturbations and
kernel weights (drawn with the libraries' own generators, seeded per sample), and the model sees the perturbed
rows of many samples in one evaluation within the memory budget. The attributions equal the libraries' called
directly with the same random state, to float rounding (tests/test_explain_surrogates.py).

- ``weighted_ridge``: scikit-learn's ``Ridge(alpha, fit_intercept=True).fit(X, y, sample_weight=w)``, the
  surrogate ``lime_base.LimeBase`` fits: weighted means removed, then ``(Xc' W Xc + alpha I) coef = Xc' W yc``.
- ``kernel_coalitions``: the coalitions and kernel weights ``shap.KernelExplainer`` uses for one sample with
  ``m`` varying features: every subset of the sizes its budget covers in full (each with its complement), the
  rest drawn from numpy's legacy generator in the library's order (subset sizes by one ``choice``, members by a
  ``permutation`` each, a repeat adding weight to the coalition it repeats, its complement beside it).
- ``kernel_shap_solve``: the library's regression with ``l1_reg`` off: the efficiency constraint (values sum
  to f(x) - E[f]) eliminates the last varying feature; the others solve ``(X' W X) phi = X' W y``.
- ``evaluate``: counted model logits for many perturbed rows, on the device, in evaluations of the budget's size.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from explain.budget import spans

if TYPE_CHECKING:
    from explain.base import Explainer

ZERO_BELOW = 1e-10  # shap sets values below this to 0
CPU_PASS_MB = 8.0  # activations of one forward pass on a CPU: about what its caches hold


# -- the model ---------------------------------------------------------------------------------------------


def evaluate(explainer: Explainer, rows: torch.Tensor) -> torch.Tensor:
    """Logits (n, K) float32 on the device for perturbed rows (n, *input_shape), counted as model evaluations.

    Passes hold at most the rows the memory budget allows; on a CPU at most those whose activations fit
    ``CPU_PASS_MB`` (on 2 cores the digits CNN ran at 54 us a row in passes of 512 rows and 160 us in passes of
    131,072, the breast-cancer MLP at 0.65 and 2.9 us: rows beyond the caches cost more, not less)."""
    adapter = explainer.adapter
    if len(rows) == 0:
        return torch.empty(0, adapter.num_classes, device=adapter.device)
    size = explainer.eval_rows(rows[:1].to(device=adapter.device, dtype=torch.float32))
    if adapter.device.type == "cpu":
        size = max(1, min(size, int(size * CPU_PASS_MB / explainer.memory_mb)))
    outs = []
    for part in spans(len(rows), size):
        explainer.counter.add(part.stop - part.start)
        outs.append(adapter.device_logits(rows[part], batch_size=size).to(adapter.device))
    return torch.cat(outs)


def reseeded(gen: np.random.RandomState, seed: int | np.integer) -> np.random.RandomState:
    """``gen`` reseeded: the stream of ``np.random.RandomState(seed)`` (what lime's ``check_random_state(seed)`` and
    shap's ``np.random.seed(seed)`` draw from) without building a generator per row (400 us each here)."""
    gen.seed(int(seed))
    return gen


def sample_chunks(per_sample: list[int], budget: int) -> list[slice]:
    """Consecutive chunks of samples whose perturbed rows together stay within ``budget`` rows (one sample at least)."""
    chunks, start, rows = [], 0, 0
    for i, count in enumerate(per_sample):
        if i > start and rows + count > budget:
            chunks.append(slice(start, i))
            start, rows = i, 0
        rows += count
    if start < len(per_sample):
        chunks.append(slice(start, len(per_sample)))
    return chunks


# -- lime ------------------------------------------------------------------------------------------------


def weighted_ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, *,
                   alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients (B, d) and intercepts (B,) of B weighted ridge regressions with an intercept at once.

    ``x`` (B, N, d), ``y`` (B, N), ``weights`` (B, N), float64: sample b's problem is scikit-learn's
    ``Ridge(alpha=alpha, fit_intercept=True).fit(x[b], y[b], sample_weight=weights[b])``. Its system is
    positive definite (``alpha > 0``) and solved by Cholesky, as scikit-learn's default solver does."""
    total = weights.sum(dim=1, keepdim=True)
    x_mean = torch.einsum("bn,bnd->bd", weights, x) / total
    y_mean = (weights * y).sum(dim=1, keepdim=True) / total
    centred = x - x_mean[:, None, :]
    weighted = centred * weights[:, :, None]
    gram = weighted.transpose(1, 2) @ centred
    gram.diagonal(dim1=1, dim2=2).add_(alpha)
    rhs = weighted.transpose(1, 2) @ (y - y_mean)[:, :, None]
    coef = torch.cholesky_solve(rhs, torch.linalg.cholesky(gram))[:, :, 0]
    return coef, y_mean[:, 0] - (x_mean * coef).sum(dim=1)


# -- KernelSHAP ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coalitions:
    """The coalitions of one sample: ``masks`` (S, m) 0/1 over its varying features, ``weights`` (S,) kernel
    weights."""

    masks: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class _Plan:
    """What shap decides from (m, nsamples) alone: the budget, the subset sizes enumerated in full and their
    coalitions, and the sampling distribution of the other sizes."""

    nsamples: int
    subset_sizes: int
    paired_sizes: int
    full_sizes: int
    fixed_masks: np.ndarray
    fixed_weights: np.ndarray
    size_probs: np.ndarray  # over the sizes not enumerated, each paired size halved (drawn with its complement)
    weight_left: float  # the kernel weight of the sampled sizes, which the sampled coalitions share


@functools.lru_cache(maxsize=64)
def _plan(m: int, nsamples: int) -> _Plan:
    if m <= 30:
        nsamples = min(nsamples, 2**m - 2)
    sizes = int(np.ceil((m - 1) / 2.0))
    paired = int(np.floor((m - 1) / 2.0))
    kernel = np.array([(m - 1.0) / (k * (m - k)) for k in range(1, sizes + 1)])
    kernel[:paired] *= 2
    kernel /= np.sum(kernel)
    from scipy.special import binom

    full, budget = 0, float(nsamples)
    remaining = kernel.copy()
    masks: list[np.ndarray] = []
    weights: list[float] = []
    for size in range(1, sizes + 1):
        count = binom(m, size) * (2 if size <= paired else 1)
        if budget * remaining[size - 1] / count < 1.0 - 1e-8:
            break
        full += 1
        budget -= count
        if remaining[size - 1] < 1.0:
            remaining /= 1 - remaining[size - 1]
        weight = kernel[size - 1] / binom(m, size) / (2.0 if size <= paired else 1.0)
        for members in itertools.combinations(range(m), size):
            mask = np.zeros(m)
            mask[list(members)] = 1.0
            masks.append(mask)
            weights.append(weight)
            if size <= paired:
                masks.append(1.0 - mask)
                weights.append(weight)
    probs = kernel.copy()
    probs[:paired] /= 2
    probs = probs[full:]
    if len(probs):
        probs /= np.sum(probs)
    return _Plan(nsamples=nsamples, subset_sizes=sizes, paired_sizes=paired, full_sizes=full,
                 fixed_masks=np.array(masks).reshape(len(masks), m), fixed_weights=np.array(weights),
                 size_probs=probs, weight_left=float(np.sum(kernel[full:])))


def kernel_coalitions(m: int, nsamples: int, rng: np.random.RandomState) -> Coalitions:
    """The coalitions ``shap.KernelExplainer.explain`` builds for a sample with ``m >= 2`` varying features and
    ``nsamples`` coalitions, drawing from ``rng`` what the library draws from numpy's global generator."""
    plan = _plan(m, nsamples)
    fixed = len(plan.fixed_weights)
    left = plan.nsamples - fixed
    if plan.full_sizes == plan.subset_sizes or left <= 0:
        return Coalitions(plan.fixed_masks, plan.fixed_weights.copy())
    # rng.choice(len(size_probs), 4 * left, p=size_probs), without its argument checks: numpy's legacy choice
    # searches the normalized cumulative probabilities with one uniform per draw
    cdf = plan.size_probs.cumsum()
    cdf /= cdf[-1]
    sizes = (cdf.searchsorted(rng.random_sample(4 * left), side="right") + plan.full_sizes + 1).tolist()
    masks = np.zeros((left, m))
    weights = np.zeros(left)
    seen: dict[bytes, int] = {}
    added = position = 0
    paired = plan.paired_sizes
    permutation = rng.permutation
    while left > 0 and position < len(sizes):
        size = sizes[position]
        position += 1
        row = masks[added]
        row[permutation(m)[:size]] = 1.0
        key = row.tobytes()
        at = seen.get(key)
        if at is None:
            seen[key] = added
            weights[added] = 1.0
            added += 1
            left -= 1
        else:  # a repeat: more weight for the coalition drawn before (and its complement)
            row[:] = 0.0
            weights[at] += 1.0
        if left > 0 and size <= paired:
            if at is None:
                np.subtract(1.0, masks[added - 1], out=masks[added])
                weights[added] = 1.0
                added += 1
                left -= 1
            else:
                weights[at + 1] += 1.0
    drawn = weights[:added]
    drawn *= plan.weight_left / drawn.sum()
    return Coalitions(np.concatenate([plan.fixed_masks, masks[:added]]), np.concatenate([plan.fixed_weights, drawn]))


def kernel_shap_solve(masks: torch.Tensor, weights: torch.Tensor, values: torch.Tensor, gap: torch.Tensor,
                      m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KernelSHAP values (B, M) of B samples at once, and which samples' systems were singular (B,) bool.

    ``masks`` (B, S, M) 0/1 over each sample's varying features, padded with 0 beyond its ``m`` (B,) features and
    ``weights`` (B, S) 0 beyond its coalitions; ``values`` (B, S) the coalitions' expected outputs minus E[f];
    ``gap`` (B,) f(x) - E[f]. Sample b's values are shap's ``KernelExplainer.solve`` with ``l1_reg=False``: the
    last varying feature takes ``gap`` minus the others, which solve the weighted normal equations. Padding gives
    a block-diagonal system whose padded part is the identity, so it leaves the other values unchanged.
    """
    batch, _, width = masks.shape
    columns = torch.arange(width, device=masks.device)
    last = masks.gather(2, (m - 1).clamp_min(0)[:, None, None].expand(batch, masks.shape[1], 1))
    design = (masks - last) * (columns < (m - 1)[:, None])[:, None, :]
    target = values - last[:, :, 0] * gap[:, None]
    weighted = design * weights[:, :, None]
    gram = weighted.transpose(1, 2) @ design
    gram.diagonal(dim1=1, dim2=2).add_((columns >= (m - 1)[:, None]).to(gram.dtype))
    rhs = weighted.transpose(1, 2) @ target[:, :, None]
    solution, info = torch.linalg.solve_ex(gram, rhs)
    singular = info != 0
    phi = solution[:, :, 0] * (columns < (m - 1)[:, None])
    phi.scatter_(1, (m - 1).clamp_min(0)[:, None], (gap - phi.sum(dim=1))[:, None])
    return torch.where(phi.abs() < ZERO_BELOW, torch.zeros_like(phi), phi), singular


def kernel_shap_lstsq(masks: np.ndarray, weights: np.ndarray, values: np.ndarray, gap: float) -> np.ndarray:
    """One sample's values when its normal equations are singular: least squares on the weighted rows, as shap
    falls back to (``masks`` (S, m) unpadded)."""
    m = masks.shape[1]
    design = masks[:, :-1] - masks[:, -1:]
    target = values - masks[:, -1] * gap
    root = np.sqrt(weights)
    solution = np.linalg.lstsq(root[:, None] * design, root * target, rcond=None)[0]
    phi = np.zeros(m)
    phi[:-1] = solution
    phi[-1] = gap - solution.sum()
    phi[np.abs(phi) < ZERO_BELOW] = 0.0
    return phi
