"""lime: tabular and image explainers, batched across samples (the default) or through lime itself.

``backend="batched"`` draws each sample's perturbations from the generator lime would use for it (the row's keyed
seed), with numpy's own functions and in lime's order, evaluates the perturbed rows of many samples in one model
evaluation within the memory budget, and fits every sample's surrogate (lime's ``Ridge(alpha=1)`` with its kernel
weights) in one batched solve on the model's device (``explain.surrogates``): lime's values to float rounding
(tests/test_explain_surrogates.py). ``backend="library"`` calls ``explain_instance`` once per row.

lime's default image segmentation (quickshift, kernel 4) gives a single segment on small images
such as 8x8 digits; here small images are cut into a grid of square cells (``segmentation="grid"``),
or quickshift runs with a kernel scaled to the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from explain.base import Explainer, ExplainerError, at_least
from explain.surrogates import evaluate, reseeded, sample_chunks, weighted_ridge

BACKENDS = ("batched", "library")


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """lime_image wraps its batches in a tqdm bar it has no argument to switch off; silence it for one call."""
    import lime.lime_image as module

    original = module.tqdm
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = original


def grid_segments(height: int, width: int, cell: int) -> np.ndarray:
    """(H, W) integer labels of square cells of side ``cell``."""
    rows = np.arange(height) // cell
    cols = np.arange(width) // cell
    per_row = int(np.ceil(width / cell))
    return (rows[:, None] * per_row + cols[None, :]).astype(np.int64)


class LimeExplainer(Explainer):
    """LIME (Ribeiro et al. 2016): a weighted linear surrogate fitted on perturbations around each input."""

    method = "lime"
    needs_gradients = False
    per_sample = True

    def __init__(self, adapter: Any, *, n_samples: int = 100, segmentation: str = "grid", cell: int = 0,
                 feature_names: list[str] | None = None, backend: str = "batched",
                 **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 10)
        at_least("cell", cell, 0)
        if segmentation not in ("grid", "quickshift"):
            raise ValueError(f"segmentation must be 'grid' or 'quickshift', got {segmentation!r}")
        super().__init__(adapter, **kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (batched: lime's draws and surrogate "
                             f"batched across samples; library: lime's explain_instance per row), got {backend!r}")
        self.backend = backend
        self.n_samples = n_samples
        self.segmentation = segmentation
        self.cell = cell
        if self.modality == "tabular":
            from lime.lime_tabular import LimeTabularExplainer

            if self.background is None:
                raise ExplainerError("lime on tabular data needs background rows (the audit data)")
            flat = self.background.reshape(len(self.background), -1)
            self.explainer: Any = LimeTabularExplainer(flat, mode="classification", feature_names=feature_names,
                                                       discretize_continuous=True, random_state=self.seed)
        else:
            from lime.lime_image import LimeImageExplainer

            self.explainer = LimeImageExplainer(random_state=self.seed)

    @classmethod
    def section_defaults(cls, *, feature_names: list[str] | None = None, **shared: Any) -> dict[str, Any]:
        """The shared settings and the data's feature names (tabular explanations name them)."""
        return {**super().section_defaults(**shared), "feature_names": feature_names}

    # -- lime's classifier_fn: one batched call per explanation ------------------------------------
    def _tabular_fn(self, rows: np.ndarray) -> np.ndarray:
        return self.numpy_proba(rows.reshape((len(rows), *self._shape)))

    def _image_fn(self, images: np.ndarray) -> np.ndarray:
        # lime hands (N, H, W, 3); the model wants (N, C, H, W)
        batch = images[..., :1] if self._shape[0] == 1 else images
        return self.numpy_proba(np.ascontiguousarray(np.moveaxis(batch, -1, 1), dtype=np.float32))

    def _segments(self, image: np.ndarray, seed: int) -> Any:
        height, width = image.shape[:2]
        if self.segmentation == "grid":
            cell = self.cell or max(1, min(height, width) // 4)
            labels = grid_segments(height, width, cell)
            return lambda _img: labels
        from lime.wrappers.scikit_image import SegmentationAlgorithm

        size = max(1, min(height, width) // 16)
        return SegmentationAlgorithm("quickshift", kernel_size=size, max_dist=4 * size, ratio=0.2,
                                     random_seed=seed)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> np.ndarray | torch.Tensor:
        xs = x.detach().cpu().numpy().astype(np.float64)
        targets = target.detach().cpu().numpy()
        self._shape = xs.shape[1:]
        if self.modality != "tabular" and (xs.ndim != 4 or xs.shape[1] not in (1, 3)):
            raise ExplainerError(f"lime explains images of 1 or 3 channels (C, H, W); got shape {xs.shape[1:]}")
        if self.backend == "batched":
            return self._batched(xs, targets, self.row_seeds())
        out = np.zeros_like(xs)
        for i, (row, label, seed) in enumerate(zip(xs, targets, self.row_seeds(), strict=True)):
            out[i] = self._one(row, int(label), int(seed))
        return out

    def _one(self, row: np.ndarray, label: int, seed: int) -> np.ndarray:
        """One explanation with lime's generators seeded by the row's own seed (``random_state=seed`` given to
        lime directly draws the same)."""
        from sklearn.utils import check_random_state

        # lime shares one generator between the explainer, its surrogate fitter and its discretizer
        draws = check_random_state(seed)
        self.explainer.random_state = self.explainer.base.random_state = draws
        discretizer = getattr(self.explainer, "discretizer", None)
        if discretizer is not None:
            discretizer.random_state = draws
        if self.modality == "tabular":
            flat = row.reshape(-1)
            exp = self.explainer.explain_instance(flat, self._tabular_fn, labels=(label,), top_labels=None,
                                                  num_features=flat.size, num_samples=self.n_samples)
            weights = np.zeros(flat.size)
            for feature, weight in exp.local_exp[label]:
                weights[feature] = weight
            return weights.reshape(row.shape)
        if row.ndim != 3 or row.shape[0] not in (1, 3):
            raise ExplainerError(f"lime explains images of 1 or 3 channels (C, H, W); got shape {row.shape}")
        image = row[0] if row.shape[0] == 1 else np.moveaxis(row, 0, -1)
        segment = self._segments(image, seed)
        hide = float(self.adapter.bounds.lower) if self.adapter.bounds is not None else 0.0
        # lime holds batch_size perturbed images (and their activations) at a time
        batch = min(self.n_samples, self.eval_rows(torch.as_tensor(row[None], dtype=torch.float32,
                                                                   device=self.adapter.device)))
        with _no_progress_bar():
            exp = self.explainer.explain_instance(image, self._image_fn, labels=(label,), top_labels=None,
                                                  hide_color=hide, num_features=10**6, num_samples=self.n_samples,
                                                  batch_size=batch, segmentation_fn=segment, random_seed=seed)
        sizes = np.bincount(exp.segments.reshape(-1))
        per_segment = np.zeros(len(sizes))
        for seg, weight in exp.local_exp[label]:
            per_segment[seg] = weight / max(sizes[seg], 1)  # spread the segment's weight over its pixels
        pixels = per_segment[exp.segments]
        return np.broadcast_to(pixels, row.shape).copy()

    # -- the batched backend -----------------------------------------------------------------------
    def _batched(self, xs: np.ndarray, targets: np.ndarray, seeds: np.ndarray) -> torch.Tensor:
        """Every sample's perturbations drawn as lime draws them, the perturbed rows of a chunk of samples through
        the model in one evaluation, and the chunk's surrogates in one batched ridge solve."""
        device = self.adapter.device
        budget = self.eval_rows(torch.as_tensor(xs[:1], dtype=torch.float32, device=device))
        out = torch.zeros(xs.shape, dtype=torch.float64, device=device)
        for part in sample_chunks([self.n_samples] * len(xs), budget):
            if self.modality == "tabular":
                out[part] = self._tabular_chunk(xs[part], targets[part], seeds[part])
            else:
                out[part] = self._image_chunk(xs[part], targets[part], seeds[part])
        return out

    def _proba(self, rows: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
        """(B, N) float64 probability of each sample's class on its N perturbed rows (``rows`` (B * N, ...))."""
        probs = torch.softmax(evaluate(self, rows), dim=1).double().reshape(len(targets), -1, self.adapter.num_classes)
        index = torch.as_tensor(targets, device=probs.device).reshape(-1, 1, 1).expand(-1, probs.shape[1], 1)
        return probs.gather(2, index)[:, :, 0]

    def _kernel(self, distances: np.ndarray) -> torch.Tensor:
        """lime's own kernel function (its width) on the distances, as float64 on the device."""
        return torch.as_tensor(np.asarray(self.explainer.base.kernel_fn(distances), np.float64),
                               device=self.adapter.device)

    def _tabular_chunk(self, xs: np.ndarray, targets: np.ndarray, seeds: np.ndarray) -> torch.Tensor:
        if not hasattr(self, "_neighbourhood"):
            self._neighbourhood = TabularNeighbourhood(self.explainer, self.adapter.device)
        binary, inverse = self._neighbourhood.draw(xs.reshape(len(xs), -1), seeds, self.n_samples)
        probs = self._proba(inverse.reshape(-1, *self._shape).float(), targets)
        # euclidean distance to the explained row (all ones in lime's binary encoding): sqrt of the bins that differ
        distances = torch.sqrt(binary.shape[2] - binary.sum(dim=2)).cpu().numpy()
        coef, _ = weighted_ridge(binary, probs, self._kernel(distances))
        return coef.reshape(len(xs), *self._shape)

    def _image_chunk(self, xs: np.ndarray, targets: np.ndarray, seeds: np.ndarray) -> torch.Tensor:
        from sklearn.metrics import pairwise_distances

        device = self.adapter.device
        hide = float(self.adapter.bounds.lower) if self.adapter.bounds is not None else 0.0
        labels = [self._image_segments(row, int(seed)) for row, seed in zip(xs, seeds, strict=True)]
        counts = [int(np.unique(seg).shape[0]) for seg in labels]
        width = max(counts)
        data = np.zeros((len(xs), self.n_samples, width))
        active = np.zeros((len(xs), self.n_samples, *xs.shape[2:]), bool)
        gen = np.random.RandomState()
        for i, (seed, seg, count) in enumerate(zip(seeds, labels, counts, strict=True)):
            # lime_image.data_labels: segments on (1) or off (0), uniformly, from the explainer's generator
            draws = reseeded(gen, seed).randint(0, 2, self.n_samples * count)
            draws = draws.reshape((self.n_samples, count))
            draws[0, :] = 1
            data[i, :, :count] = draws
            active[i] = draws[:, seg] == 1
        # lime's cosine distance to the first perturbation (all segments on), for the samples of one segment count
        distances = np.zeros((len(xs), self.n_samples))
        for count in set(counts):
            same = np.flatnonzero(np.asarray(counts) == count)
            flat = data[same, :, :count].reshape(-1, count)
            distances[same] = pairwise_distances(flat, np.ones((1, count)), metric="cosine").reshape(len(same), -1)
        images = torch.as_tensor(xs, dtype=torch.float32, device=device)
        mask = torch.as_tensor(active, device=device)[:, :, None]
        rows = torch.where(mask, images[:, None], torch.tensor(hide, dtype=torch.float32, device=device))
        probs = self._proba(rows.reshape(-1, *self._shape), targets)
        coef, _ = weighted_ridge(torch.as_tensor(data, device=device), probs, self._kernel(distances))
        out = torch.zeros((len(xs), *xs.shape[2:]), dtype=torch.float64, device=device)
        for i, seg in enumerate(labels):  # each segment's weight spread over its pixels
            seg_t = torch.as_tensor(seg, device=device)
            sizes = torch.bincount(seg_t.reshape(-1)).clamp_min(1)
            out[i] = (coef[i, : len(sizes)] / sizes)[seg_t]
        return out[:, None].expand(xs.shape).clone()

    def _image_segments(self, row: np.ndarray, seed: int) -> np.ndarray:
        """(H, W) segment labels of one image, from the segmentation lime is given (on lime's RGB view)."""
        image = row[0] if row.shape[0] == 1 else np.moveaxis(row, 0, -1)
        if image.ndim == 2:
            from skimage.color import gray2rgb

            image = gray2rgb(image)
        return np.asarray(self._segments(image, seed)(image))


class TabularNeighbourhood:
    """lime's ``LimeTabularExplainer`` neighbourhood (``discretize_continuous``, every feature discretized) for many
    rows at once, drawing from each row's generator what lime's ``__data_inverse`` draws from it, in its order:
    one bin per perturbation and feature (``choice`` over the training frequencies: one uniform each, feature by
    feature), then, feature by feature, a value inside each drawn bin of nonzero width for the perturbations after
    the first (``truncnorm.rvs`` on the bin's mean and spread: one uniform each, through the inverse CDF, computed
    here in linear rather than scipy's log space: the same numbers to float rounding). A bin without width gets
    its lower bound in standard units, as lime writes it.

    Bins are addressed by their position in lime's list of a feature's values (the bins the training rows fill).
    """

    def __init__(self, lime: Any, device: torch.device) -> None:
        disc = lime.discretizer
        features = len(lime.scaler.scale_)
        if disc is None or list(lime.categorical_features) != list(range(features)) or \
                sorted(disc.means) != list(range(features)):
            raise ExplainerError("the batched lime backend draws lime's discretized neighbourhood (every feature "
                                 "discretized); set sections.explanations.method_params.lime.backend: library")
        from scipy.special import ndtr

        self.discretizer, self.device, self.features = disc, device, features
        self.order = np.array(list(disc.means))  # the order lime undiscretizes the features in
        self.width = max(len(lime.feature_values[f]) for f in range(features))
        self.cdf = np.full((features, self.width), 2.0)  # past 1: never reached by a uniform draw
        self.labels = np.full((features, self.width), -1, np.int64)  # position -> bin label
        # per (feature, position): value = loc + scale * ndtri(c0 + c1 * q) for the bin's uniform q (a bin without
        # width: ndtri(0.5) = 0, so loc, its lower bound in standard units)
        tables = np.zeros((4, features, self.width))
        self.equal = np.ones((features, self.width), bool)
        for f in range(features):
            # numpy's RandomState.choice(values, p=freqs): cumulative sum, normalized, searched by uniform draws
            cdf = np.asarray(lime.feature_frequencies[f], np.float64).cumsum()
            cdf /= cdf[-1]
            labels = np.asarray(lime.feature_values[f]).astype(np.int64)
            count = len(cdf)
            self.cdf[f, :count], self.labels[f, :count] = cdf, labels
            mean, std = np.asarray(disc.means[f])[labels], np.asarray(disc.stds[f])[labels]
            a = (np.asarray(disc.mins[f])[labels] - mean) / std
            b = (np.asarray(disc.maxs[f])[labels] - mean) / std
            self.equal[f, :count] = a == b
            # scipy's truncnorm ppf: x = ndtri(Phi(a) + q * mass) when a < 0, else -ndtri(Phi(-b) + (1 - q) * mass)
            right = a >= 0
            mass = np.where(right, ndtr(-a) - ndtr(-b), np.where(b <= 0, ndtr(b) - ndtr(a), 1 - ndtr(a) - ndtr(-b)))
            tables[0, f, :count] = np.where(a == b, 0.5, np.where(right, ndtr(-b) + mass, ndtr(a)))
            tables[1, f, :count] = np.where(a == b, 0.0, np.where(right, -mass, mass))
            tables[2, f, :count] = np.where(a == b, 0.0, np.where(right, -std, std))
            tables[3, f, :count] = np.where(a == b, a, mean)
        self.tables = torch.as_tensor(tables.reshape(4, -1).T.copy(), dtype=torch.float64, device=device)

    def draw(self, rows: np.ndarray, seeds: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For rows (B, d): lime's binary data (B, n, d) (1: the row's own bin) and the perturbed rows the model
        sees (B, n, d), float64 on the device; perturbation 0 is the row itself.

        Each row's stream is drawn at once (the bins' d * n uniforms, then enough for every perturbed value) and
        read in lime's order on the device: the i-th wide bin, counted feature by feature in lime's order, takes
        the i-th uniform after the bins' (a bin without width takes none)."""
        d, device, width = self.features, self.device, self.width
        first = d * n
        gen = np.random.RandomState()
        streams = np.empty((len(rows), first + d * (n - 1)))
        for i, seed in enumerate(seeds):
            streams[i] = reseeded(gen, seed).random_sample(streams.shape[1])
        uniforms = torch.as_tensor(streams, device=device)
        bins = uniforms[:, :first].reshape(len(rows), d, n)
        cdf = torch.as_tensor(self.cdf, device=device)
        picked = torch.zeros(bins.shape, dtype=torch.int64, device=device)
        for k in range(width - 1):  # searchsorted(cdf, u, side="right"): the position of the drawn bin
            picked += bins >= cdf[:, k, None]
        # lime's binary encoding: 1 where the drawn bin is the row's own (position -1: a bin no training row fills)
        own = self.discretizer.discretize(rows).astype(np.int64)
        mine = self.labels[None] == own[:, :, None]
        own_position = torch.as_tensor(np.where(mine.any(axis=2), mine.argmax(axis=2), -1), device=device)
        binary = (picked == own_position[:, :, None]).to(torch.float64)
        binary[:, :, 0] = 1.0
        order = torch.as_tensor(self.order, device=device)
        index = picked[:, order, 1:] + order[None, :, None] * width  # table rows, features in lime's order
        wide = ~torch.as_tensor(self.equal.reshape(-1), device=device)[index]
        rank = (wide.reshape(len(rows), -1).cumsum(dim=1) - 1).clamp_min(0)
        q = uniforms[:, first:].gather(1, rank).reshape(index.shape)
        c0, c1, scale, loc = self.tables.index_select(0, index.reshape(-1)).unbind(1)
        ordered = torch.special.ndtri(torch.addcmul(c0, c1, q.reshape(-1))).mul_(scale).add_(loc)
        values = torch.empty_like(q)
        values[:, order] = ordered.reshape(index.shape)
        inverse = torch.cat([torch.as_tensor(rows, dtype=torch.float64, device=device)[:, :, None], values], 2)
        return binary.transpose(1, 2), inverse.transpose(1, 2)
