"""lime: tabular and image explainers with one batched ``classifier_fn`` call per explanation.

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
                 feature_names: list[str] | None = None, **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 10)
        at_least("cell", cell, 0)
        if segmentation not in ("grid", "quickshift"):
            raise ValueError(f"segmentation must be 'grid' or 'quickshift', got {segmentation!r}")
        super().__init__(adapter, **kwargs)
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

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        xs = x.detach().cpu().numpy().astype(np.float64)
        targets = target.detach().cpu().numpy()
        self._shape = xs.shape[1:]
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
