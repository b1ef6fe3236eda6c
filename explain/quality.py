"""Explanation quality: is the explanation faithful to the model, stable, and does it depend on the model at all?

- deletion / insertion (Petsiuk et al. 2018): remove (insert) the most important features first, replaced by
  a deletion baseline that is not free where the input is already at the attribution baseline (a blurred
  copy of the input or the dataset mean), and follow the model's probability of the explained class; area
  under each sample's curve (deletion: lower is better, insertion: higher is better), next to a random
  ordering of the informative features (those the deletion changes) as reference;
- captum's infidelity (Yeh et al. 2019) and sensitivity-max, with each sample's perturbations keyed to the
  sample and evaluated in chunks within the memory budget;
- cascading model-parameter randomization (Adebayo et al. 2018): the layers are re-initialized from the top
  (output) layer down, one more at each step, and the attributions of the same inputs compared with the
  original ones by the Spearman correlation of |attribution| on the informative features (those where the
  input differs from the attribution baseline; an input-multiplied method gives 0 elsewhere under any
  weights) and, for images, the SSIM of the normalized |attribution| maps.

Every function returns per-sample values; intervals over samples are ``explain.ranking``'s job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from audit.model import ModelAdapter, TorchModelAdapter
from explain.base import Explainer, ExplainerError
from explain.budget import DEFAULT_MEMORY_MB, row_bytes, rows_within, spans
from explain.seeds import sample_rng, sample_seed


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


def _ranks(attributions: np.ndarray) -> np.ndarray:
    """Feature order per row, most important (largest attribution) first; ties keep input order."""
    flat = attributions.reshape(len(attributions), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def model_rows(adapter: ModelAdapter, x: np.ndarray, memory_mb: float) -> int:
    """Rows one model evaluation may hold within ``memory_mb`` (see ``explain.budget``)."""
    network = adapter.network if isinstance(adapter, TorchModelAdapter) else None
    row = torch.as_tensor(np.asarray(x[:1], np.float32), device=adapter.device)
    return rows_within(memory_mb, row_bytes(network, row))


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


# -- cascading randomization ------------------------------------------------------------------------------


def cascade_layers(adapter: ModelAdapter, row: np.ndarray) -> list[str]:
    """The user's layers with parameters, in the order the cascade randomizes them: the output layer first.
    Order from one traced forward pass; layers that never run are left out."""
    if not isinstance(adapter, TorchModelAdapter):
        raise ExplainerError("the randomization check re-initializes the network's weights and needs a torch model; "
                             "a black-box model has none to reset")
    order: list[str] = []
    handles = []
    for name, module in adapter.module.named_modules():
        if list(module.children()) or not callable(getattr(module, "reset_parameters", None)):
            continue
        if not any(True for _ in module.parameters()):
            continue

        def hook(_m: torch.nn.Module, _i: object, _o: object, name: str = name) -> None:
            if name not in order:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            adapter.forward(torch.as_tensor(np.asarray(row[:1], np.float32), device=adapter.device))
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ExplainerError("the randomization check found no layer with parameters and reset_parameters() to "
                             "re-initialize")
    return order[::-1]


def randomized_adapter(adapter: ModelAdapter, seed: int, layers: list[str] | None = None) -> TorchModelAdapter:
    """The same model with ``layers`` of the user's network re-initialized (all layers with parameters when
    None: Adebayo et al.'s full randomization). Each layer's new weights come from its own key (run seed,
    layer name), so the layers randomized at one cascade step keep their weights at the next."""
    if not isinstance(adapter, TorchModelAdapter):
        raise ExplainerError("the randomization check re-initializes the network's weights and needs a torch model; "
                             "a black-box model has none to reset")
    network = copy.deepcopy(adapter.network)
    user = network.network
    names = layers if layers is not None else [name for name, m in user.named_modules()
                                               if not list(m.children()) and callable(getattr(m, "reset_parameters",
                                                                                              None))]
    if not names:
        raise ExplainerError("the randomization check found no layer with reset_parameters() to re-initialize")
    for name in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(seed, f"randomization:{name}", 0))
            reset: Callable[[], None] = user.get_submodule(name).reset_parameters  # type: ignore[assignment]
            reset()
    return TorchModelAdapter(network, num_classes=adapter.num_classes, output_kind=adapter.output_kind,
                             bounds=adapter.bounds, device=adapter.device, batch_size=adapter.batch_size,
                             source=adapter.source + " (randomized)", sha256=adapter.sha256)


def cascade_steps(layers: list[str], steps: int) -> list[int]:
    """How many top layers are randomized at each step: ``steps`` points from 1 to all, evenly spread."""
    total = len(layers)
    return sorted({int(np.rint(v)) for v in np.linspace(1, total, min(steps, total))})


def cascade(layers: list[str], steps: int) -> Iterator[tuple[int, list[str]]]:
    for count in cascade_steps(layers, steps):
        yield count, layers[:count]


def masked_rank_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spearman correlation per row of |a| and |b| over the features where ``mask`` holds and at least one of
    the two attributions is not 0 (NaN where fewer than 3 such features or a row is constant there).

    A feature with attribution 0 under both models carries no evidence either way: an input-multiplied method
    gives 0 wherever the input sits at the method's own reference (0 for LRP, which has no baseline), under any
    weights, and such ties would count as agreement."""
    from scipy.stats import rankdata

    fa, fb = np.abs(a.reshape(len(a), -1)), np.abs(b.reshape(len(b), -1))
    keep = np.broadcast_to(mask, a.shape).reshape(len(a), -1) & ((fa != 0) | (fb != 0))
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if keep[i].sum() < 3:
            continue
        ra, rb = rankdata(fa[i, keep[i]]), rankdata(fb[i, keep[i]])
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
        if denom > 0:
            out[i] = float((ra * rb).sum()) / denom
    return out


def attribution_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per image of the |attribution| maps (summed over channels, each scaled to [0, 1] by its maximum),
    as Adebayo et al. compare them (scikit-image's SSIM, 7x7 window or the image side if smaller; NaN for
    images under 3 pixels a side or an all-zero map)."""
    from skimage.metrics import structural_similarity

    out = np.full(len(a), np.nan)
    if a.ndim != 4 or min(a.shape[2:]) < 3:
        return out
    side = min(a.shape[2:])
    window = min(7, side if side % 2 else side - 1)
    for i in range(len(a)):
        ma, mb = np.abs(a[i]).sum(axis=0), np.abs(b[i]).sum(axis=0)
        if ma.max() == 0 or mb.max() == 0:
            continue
        out[i] = structural_similarity(ma / ma.max(), mb / mb.max(), data_range=1.0, win_size=window)
    return out


def sign_randomized(attributions: np.ndarray, ids: np.ndarray, seed: int) -> np.ndarray:
    """The control that must fail the randomization check: the same magnitudes with random signs (keyed per
    sample). It does not depend on the model's weights at all, yet its signed Spearman correlation with the
    original is near 0, which a check on signed attributions would call a pass."""
    out = np.empty_like(attributions)
    for i, sample_id in enumerate(ids):
        signs = sample_rng(seed, "sign_control", int(sample_id)).choice([-1.0, 1.0], size=attributions.shape[1:])
        out[i] = attributions[i] * signs
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
