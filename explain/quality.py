"""Explanation quality: is the explanation faithful to the model, stable, and does it depend on the model at all?

- deletion / insertion (Petsiuk et al. 2018): remove (insert) the most important features first, set to a
  baseline, and follow the model's probability of the explained class; area under the curve (deletion:
  lower is better, insertion: higher is better), next to a random ordering as reference;
- captum's infidelity (Yeh et al. 2019) and sensitivity-max;
- the model-parameter randomization sanity check (Adebayo et al. 2018): attributions of the same inputs
  under a model with re-initialized weights should differ (low Spearman rank correlation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit.model import ModelAdapter, TorchModelAdapter
from explain.base import Explainer, ExplainerError


@dataclass
class FaithfulnessCurves:
    fractions: np.ndarray  # (steps + 1,) fraction of features removed / inserted
    deletion: np.ndarray  # (n, steps + 1) probability of the explained class
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion.mean(axis=0), self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion.mean(axis=0), self.fractions))


def _ranks(attributions: np.ndarray) -> np.ndarray:
    """Feature order per row, most important (largest attribution) first; ties keep input order."""
    flat = attributions.reshape(len(attributions), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def deletion_insertion(proba: Callable[[np.ndarray], np.ndarray], x: np.ndarray, attributions: np.ndarray,
                       target: np.ndarray, baseline: np.ndarray, *, n_steps: int = 16) -> FaithfulnessCurves:
    """Deletion and insertion curves, every perturbed input of every row evaluated in one batched call."""
    n = len(x)
    flat_x = x.reshape(n, -1)
    flat_b = np.broadcast_to(baseline.reshape(1, -1), flat_x.shape)
    features = flat_x.shape[1]
    steps = min(n_steps, features)
    counts = np.round(np.linspace(0, features, steps + 1)).astype(int)
    order = _ranks(attributions)
    # position of every feature in its row's order: feature is "removed" at step s when rank < counts[s]
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(features)[None, :].repeat(n, 0), axis=1)
    removed = position[:, None, :] < counts[None, :, None]  # (n, steps+1, features)
    deleted = np.where(removed, flat_b[:, None, :], flat_x[:, None, :])
    inserted = np.where(removed, flat_x[:, None, :], flat_b[:, None, :])
    batch = np.concatenate([deleted, inserted]).reshape((-1, *x.shape[1:])).astype(np.float32)
    probs = proba(batch)
    rows = np.repeat(np.concatenate([target, target]), steps + 1)
    picked = probs[np.arange(len(rows)), rows].reshape(2 * n, steps + 1)
    return FaithfulnessCurves(counts / features, picked[:n], picked[n:])


def logits_function(adapter: ModelAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """A no-grad logits function on tensors, for captum's metrics (any adapter, black boxes too)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        return adapter.logits(x.detach().cpu(), batch_size=max(len(x), 1)).to(x.device)

    return forward


def infidelity(adapter: ModelAdapter, x: np.ndarray, attributions: np.ndarray, target: np.ndarray, *,
               noise: float, n_perturb: int, seed: int) -> np.ndarray:
    """captum's infidelity per row with Gaussian perturbations of std ``noise`` (normalized attributions)."""
    from captum.metrics import infidelity as captum_infidelity

    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        delta = torch.randn(inputs.shape, generator=generator) * noise
        return delta, inputs - delta

    out = captum_infidelity(logits_function(adapter), perturb, torch.as_tensor(x, dtype=torch.float32),
                            torch.as_tensor(attributions, dtype=torch.float32),
                            target=torch.as_tensor(target), n_perturb_samples=n_perturb,
                            max_examples_per_batch=len(x), normalize=True)
    return np.asarray(out.detach().cpu().numpy(), np.float64)


def sensitivity_max(explainer: Explainer, x: np.ndarray, target: np.ndarray, *, radius: float,
                    n_perturb: int, seed: int) -> np.ndarray:
    """captum's sensitivity-max per row: the largest relative change of the explanation under input noise
    within ``radius`` (L-inf)."""
    from captum.metrics import sensitivity_max as captum_sensitivity

    torch.manual_seed(seed)
    out = captum_sensitivity(explainer.explain_tensor, torch.as_tensor(x, dtype=torch.float32),
                             perturb_radius=radius, n_perturb_samples=n_perturb,
                             target=torch.as_tensor(target), max_examples_per_batch=len(x) * n_perturb)
    return np.asarray(out.detach().cpu().numpy(), np.float64)


def randomized_adapter(adapter: ModelAdapter, seed: int) -> TorchModelAdapter:
    """The same model with every layer of the user's network re-initialized (Adebayo et al.'s full randomization)."""
    if not isinstance(adapter, TorchModelAdapter):
        raise ExplainerError("the randomization check re-initializes the network's weights and needs a torch model; "
                             "a black-box model has none to reset")
    network = copy.deepcopy(adapter.network)
    torch.manual_seed(seed)
    reset = 0
    for module in network.network.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            reset += 1
    if reset == 0:
        raise ExplainerError("the randomization check found no layer with reset_parameters() to re-initialize")
    return TorchModelAdapter(network, num_classes=adapter.num_classes, output_kind=adapter.output_kind,
                             bounds=adapter.bounds, device=adapter.device, batch_size=adapter.batch_size,
                             source=adapter.source + " (randomized)", sha256=adapter.sha256)


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
