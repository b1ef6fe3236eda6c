"""The corruptions section in chunks: what one chunk computes and saves, and the reduction back to full arrays.

``evaluate_chunk`` applies every planned corruption at every severity to one chunk of the section's samples, in
batches on the model's device, and returns per sample the model's prediction (-1 where its outputs were not
finite) and confidence, as ``<corruption>/<severity>/{prediction,confidence}``. ``audit.engine.chunks`` saves
them to ``artifacts/<section>/chunks/<k>.npz`` as each chunk finishes; ``reduce_chunks`` reads them back.

Random draws come from one generator per sample keyed on (run seed, section, corruption, severity, sample id),
so a chunk computes the same numbers alone or in any order, here or on a Ray worker, before or after a resume,
and one sample's corrupted input can be rebuilt later (the section's image grid) exactly as the model saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit.engine.chunks import Chunk, ChunkStore, iter_chunks
from audit.shift.catalog import RANDOM, TABULAR_SHIFTS, shift_base
from audit.shift.corruptions import corrupt
from audit.shift.sampling import TorchSampleRng, sample_seeds
from audit.shift.tabular import TabularSetup, feature_noise, feature_shift, missing_values

if TYPE_CHECKING:
    from audit.model import ModelAdapter


@dataclass(frozen=True)
class ShiftPlan:
    """One corruption as the section runs it: its metric name, its severities, a feature for feature_shift."""

    name: str  # 'motion_blur', 'feature_noise', 'feature_shift=age'
    severities: tuple[int, ...]
    feature: int | None = None  # feature_shift: the (flat) feature index

    @property
    def base(self) -> str:
        return shift_base(self.name)


@dataclass
class ChunkInputs:
    """Everything a chunk needs, shipped once (Ray: one object in the store for all chunks)."""

    model: ModelAdapter
    x: np.ndarray  # (n, ...) the section's samples, raw
    sample_ids: np.ndarray  # (n,) rows of the audited data: the per-sample seeds' key
    plans: list[ShiftPlan]
    seed: int
    section: str
    batch_size: int
    bounds: tuple[float, float] | None = None  # images: the raw input range
    pixel_scale: float = 1.0
    tabular: TabularSetup | None = None


def key(name: str, severity: int) -> str:
    return f"{name}/{severity}"


def apply(shared: ChunkInputs, plan: ShiftPlan, severity: int, x: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """``plan``'s corruption at ``severity`` on the batch ``x`` (rows ``ids`` of the audited data)."""
    seeds = sample_seeds(shared.seed, shared.section, plan.name, severity, ids.tolist())
    if plan.base not in TABULAR_SHIFTS:
        images = x if x.ndim == 4 else x[:, None]
        out = corrupt(images, plan.name, severity, bounds=shared.bounds or (0.0, 1.0),
                      seeds=seeds if plan.name in RANDOM else None, pixel_scale=shared.pixel_scale)
        return out if x.ndim == 4 else out[:, 0]
    setup = shared.tabular
    if setup is None:
        raise ValueError(f"{plan.name} is a tabular shift but the section has no tabular setup")
    if plan.base == "feature_shift":
        return feature_shift(x, severity, int(plan.feature or 0), setup)
    rng = TorchSampleRng(seeds, device=x.device, dtype=x.dtype)
    return (feature_noise if plan.base == "feature_noise" else missing_values)(x, severity, rng, setup)


def evaluate_chunk(shared: ChunkInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """Every planned corruption and severity on one chunk; returns its per-sample outputs."""
    x = shared.x[chunk.start : chunk.stop]
    ids = shared.sample_ids[chunk.start : chunk.stop]
    device = shared.model.device
    pairs = [(plan, s) for plan in shared.plans for s in plan.severities]
    steps = progress(pairs, desc="corruptions", total=len(pairs)) if progress is not None else pairs
    out: dict[str, np.ndarray] = {}
    size = max(1, shared.batch_size)
    for plan, severity in steps:
        preds, confs = [], []
        for start in range(0, len(x), size):
            batch = torch.as_tensor(np.ascontiguousarray(x[start : start + size]), dtype=torch.float32, device=device)
            corrupted = apply(shared, plan, severity, batch, ids[start : start + size])
            pred, conf = predict(shared.model, corrupted, size)
            preds.append(pred)
            confs.append(conf)
        out[key(plan.name, severity) + "/prediction"] = np.concatenate(preds).astype(np.int32)
        out[key(plan.name, severity) + "/confidence"] = np.concatenate(confs).astype(np.float32)
    return out


def predict(model: ModelAdapter, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's class and softmax confidence per row; -1 and NaN where its outputs are not finite."""
    logits = model.logits(x, batch_size=batch_size).double()
    finite = torch.isfinite(logits).all(dim=1)
    proba = torch.softmax(torch.where(finite[:, None], logits, torch.zeros_like(logits)), dim=1)
    conf, pred = proba.max(dim=1)
    pred = torch.where(finite, pred, torch.full_like(pred, -1))
    conf = torch.where(finite, conf, torch.full_like(conf, float("nan")))
    return pred.numpy(), conf.numpy()


@dataclass
class Predictions:
    """Per corruption and severity, over all the section's samples."""

    prediction: dict[tuple[str, int], np.ndarray]
    confidence: dict[tuple[str, int], np.ndarray]


def reduce_chunks(store: ChunkStore, chunks: list[Chunk], plans: list[ShiftPlan], n: int) -> Predictions:
    """The saved chunks, stitched into full-length arrays (one chunk in memory at a time)."""
    pred = {(p.name, s): np.full(n, -1, np.int32) for p in plans for s in p.severities}
    conf = {(p.name, s): np.full(n, np.nan, np.float32) for p in plans for s in p.severities}
    for chunk, arrays in iter_chunks(store, chunks):
        for name, s in pred:
            pred[(name, s)][chunk.start : chunk.stop] = arrays[key(name, s) + "/prediction"]
            conf[(name, s)][chunk.start : chunk.stop] = arrays[key(name, s) + "/confidence"]
    return Predictions(prediction=pred, confidence=conf)
