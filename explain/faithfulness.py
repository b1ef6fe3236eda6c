"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018) and the ranking of methods by them.

Features are removed (inserted) most important first, replaced by a deletion baseline that is not free where the
input is already at the attribution baseline (a blurred copy of the input or the dataset mean), and the model's
probability of the explained class is followed; the area under each sample's curve is its score (deletion: lower
is better, insertion: higher is better), next to a random ordering of the informative features (those the
deletion changes) as reference.

``faithfulness_curves`` computes every method's curves for some samples (one chunk of the explained samples);
``rank_faithfulness`` turns the curves of all samples into a ``Faithfulness``: the per-sample scores, the ranking
with paired bootstrap intervals (``explain.ranking``) and the mean curves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from audit.model import ModelAdapter
from explain.base import ExplainerError
from explain.budget import model_rows, spans
from explain.ranking import Ranking, rank
from explain.seeds import sample_rng

RANDOM = "random"  # the random ordering of the informative features: the reference every method has to beat
KINDS = ("deletion", "insertion")


@dataclass
class FaithfulnessCurves:
    fractions: np.ndarray  # (steps + 1,) fraction of features removed / inserted
    deletion: np.ndarray  # (n, steps + 1) probability of the explained class
    insertion: np.ndarray

    @property
    def deletion_aucs(self) -> np.ndarray:
        """Area under each sample's deletion curve, shape (n,)."""
        return np.asarray(np.trapezoid(self.deletion, self.fractions, axis=1), np.float64)

    @property
    def insertion_aucs(self) -> np.ndarray:
        return np.asarray(np.trapezoid(self.insertion, self.fractions, axis=1), np.float64)

    @property
    def deletion_auc(self) -> float:
        return float(self.deletion_aucs.mean())

    @property
    def insertion_auc(self) -> float:
        return float(self.insertion_aucs.mean())


@dataclass
class Faithfulness:
    """Deletion and insertion over every explained sample: per-sample AUCs, the rankings and the mean curves."""

    baseline: str  # the deletion baseline: mean, blur or lower
    n: int  # samples
    fractions: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]  # 'deletion' / 'insertion' -> method (and RANDOM) -> per-sample AUC
    rankings: dict[str, Ranking]  # 'deletion' / 'insertion'
    mean_curves: dict[str, dict[str, np.ndarray]]  # 'deletion' / 'insertion' -> method -> mean curve
    baseline_probability: float  # the model's mean probability of the explained class on the deletion baseline
    informative_share: float  # fraction of the features that differ from the deletion baseline


def _ranks(attributions: np.ndarray) -> np.ndarray:
    """Feature order per row, most important (largest attribution) first; ties keep input order."""
    flat = attributions.reshape(len(attributions), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def deletion_insertion(proba: Callable[[np.ndarray], np.ndarray], x: np.ndarray, attributions: np.ndarray,
                       target: np.ndarray, baseline: np.ndarray, *, n_steps: int = 16,
                       rows: int | None = None) -> FaithfulnessCurves:
    """Deletion and insertion curves. ``baseline``: the value a deleted feature takes, per sample
    (n, *shape) or shared (*shape). The perturbed inputs of as many samples as fit ``rows`` go through the
    model in one call (all at once without ``rows``)."""
    n = len(x)
    flat_x = x.reshape(n, -1)
    flat_b = np.broadcast_to(np.asarray(baseline).reshape((n if np.ndim(baseline) == x.ndim else 1), -1),
                             flat_x.shape)
    features = flat_x.shape[1]
    steps = min(n_steps, features)
    counts = np.round(np.linspace(0, features, steps + 1)).astype(int)
    order = _ranks(attributions)
    # position of every feature in its row's order: feature is "removed" at step s when rank < counts[s]
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(features)[None, :].repeat(n, 0), axis=1)
    per_sample = 2 * (steps + 1)
    chunk = n if rows is None else max(1, rows // per_sample)
    picked = np.zeros((2, n, steps + 1))
    for part in spans(n, chunk):
        removed = position[part, None, :] < counts[None, :, None]  # (m, steps+1, features)
        deleted = np.where(removed, flat_b[part, None, :], flat_x[part, None, :])
        inserted = np.where(removed, flat_x[part, None, :], flat_b[part, None, :])
        m = len(deleted)
        batch = np.concatenate([deleted, inserted]).reshape((-1, *x.shape[1:])).astype(np.float32)
        probs = proba(batch)
        labels = np.repeat(np.concatenate([target[part], target[part]]), steps + 1)
        values = probs[np.arange(len(labels)), labels].reshape(2, m, steps + 1)
        picked[:, part] = values
    return FaithfulnessCurves(counts / features, picked[0], picked[1])


def deletion_baseline(kind: str, x: np.ndarray, *, data_mean: np.ndarray, fill: float, sigma: float,
                      modality: str) -> np.ndarray:
    """What a deleted feature becomes, per sample: 'blur' (a Gaussian blur of the image, per channel),
    'mean' (the dataset mean), or 'lower' (the lower input bound, as the attribution baseline)."""
    if kind == "blur":
        if modality != "image" or x.ndim != 4:
            raise ExplainerError("deletion_baseline 'blur' needs images (N, C, H, W); use 'mean' for tabular "
                                 "data (sections.explanations.deletion_baseline)")
        from scipy.ndimage import gaussian_filter

        side = min(x.shape[2], x.shape[3])
        width = sigma if sigma > 0 else side / 4
        blurred: np.ndarray = gaussian_filter(x.astype(np.float64), sigma=(0, 0, width, width), mode="nearest")
        return blurred.astype(np.float32)
    if kind == "mean":
        return np.broadcast_to(data_mean.astype(np.float32), x.shape).copy()
    return np.full(x.shape, fill, np.float32)


def informative(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample and feature: the input differs from ``reference`` (deleting it changes the input; an
    input-multiplied attribution is not forced to 0 there)."""
    return np.asarray(np.broadcast_to(x != reference, x.shape))


def random_ordering(x: np.ndarray, baseline: np.ndarray, ids: np.ndarray, seed: int) -> np.ndarray:
    """Scores whose ordering deletes the informative features first, in random order (keyed per sample),
    then the rest: the reference a faithful ordering has to beat. Features already at the baseline cost
    nothing to delete, so a plain random order that spends steps on them is an easy reference."""
    mask = informative(x, baseline).reshape(len(x), -1)
    scores = np.zeros(mask.shape)
    for i, sample_id in enumerate(ids):
        scores[i] = sample_rng(seed, "random_ordering", int(sample_id)).random(mask.shape[1]) + mask[i]
    return scores.reshape(x.shape)


def faithfulness_curves(adapter: ModelAdapter, x: np.ndarray, target: np.ndarray, ids: np.ndarray,
                        values: dict[str, np.ndarray], baseline: np.ndarray, *, steps: int, memory_mb: float,
                        seed: int) -> dict[str, FaithfulnessCurves]:
    """Every method's curves on these samples, and the random ordering's (``RANDOM``, last); perturbed inputs go
    through the model in calls within the memory budget."""
    rows = model_rows(adapter, x, memory_mb)
    orderings = {**values, RANDOM: random_ordering(x, baseline, ids, seed)}
    return {method: deletion_insertion(adapter.numpy_predict_proba, x, attr, target, baseline, n_steps=steps,
                                       rows=rows) for method, attr in orderings.items()}


def rank_faithfulness(curves: dict[str, FaithfulnessCurves], *, baseline: str, informative_share: float,
                      n_resamples: int, seed: int, confidence: float) -> Faithfulness:
    """The scores, rankings and mean curves of every sample's curves (``curves``: one entry per method and
    ``RANDOM``, over all samples)."""
    scores = {"deletion": {m: c.deletion_aucs for m, c in curves.items()},
              "insertion": {m: c.insertion_aucs for m, c in curves.items()}}
    rankings = {kind: rank(scores[kind], lower_is_better=kind == "deletion", n_resamples=n_resamples, seed=seed,
                           confidence=confidence) for kind in KINDS}
    mean_curves = {"deletion": {m: c.deletion.mean(axis=0) for m, c in curves.items()},
                   "insertion": {m: c.insertion.mean(axis=0) for m, c in curves.items()}}
    reference = curves[RANDOM]
    return Faithfulness(baseline=baseline, n=len(reference.deletion), fractions=reference.fractions, scores=scores,
                        rankings=rankings, mean_curves=mean_curves,
                        baseline_probability=float(reference.deletion[:, -1].mean()),
                        informative_share=informative_share)
