"""The ``ood`` section's chunked work: the inputs of every source (in-distribution, user OOD sets, synthetic and
near OOD), scored by every detector, and the logits under each calibration corruption and severity.

A chunk covers positions ``start:stop`` of every source that is that long: the in-distribution rows, the rows of
each user OOD set, and the synthetic and near-OOD inputs made from the in-distribution rows at those positions.
Random draws come from one generator per (run seed, section, source, severity, sample id), so a chunk computes
the same outputs in any order, on any backend, after a resume. Fitted detectors travel in ``OODInputs``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit.engine.chunks import Chunk, ChunkStore, iter_chunks
from audit.shift.catalog import RANDOM
from audit.shift.corruptions import corrupt
from audit.shift.ood import (
    Autoencoder,
    FeatureTap,
    Mahalanobis,
    knn_scores,
    logit_scores,
    odin_scores,
)
from audit.shift.sampling import TorchSampleRng, sample_seeds

if TYPE_CHECKING:
    from audit.model import ModelAdapter

IN = "in"
SYNTHETIC = ("uniform", "gaussian", "permuted")
NEAR_PREFIX = "near_"


@dataclass
class OODInputs:
    """What every chunk needs: the model, the sources, the fitted detectors and their settings."""

    model: ModelAdapter
    x_in: np.ndarray  # (n, *shape) in-distribution rows scored (the evaluation part)
    ids_in: np.ndarray  # their rows in the audited data (seeds)
    detectors: tuple[str, ...]
    seed: int
    section: str
    batch_size: int
    lower: np.ndarray  # per-value input range (broadcasts over a sample)
    upper: np.ndarray
    image: bool
    user_sets: dict[str, np.ndarray] = field(default_factory=dict)
    synthetic: tuple[str, ...] = ()
    near: tuple[str, ...] = ()  # corruption names
    near_severity: int = 5
    calibration: tuple[str, ...] = ()  # corruption names
    severities: tuple[int, ...] = ()
    pixel_scale: float = 1.0
    energy_temperature: float = 1.0
    odin_temperature: float = 1000.0
    odin_eps: float = 0.0014
    tap: FeatureTap | None = None
    mahalanobis: Mahalanobis | None = None
    knn_bank: torch.Tensor | None = None
    knn_k: int = 50
    autoencoder: Autoencoder | None = None

    def sources(self) -> dict[str, int]:
        """Every scored source and its length."""
        n = len(self.x_in)
        out = {IN: n, **{name: len(x) for name, x in self.user_sets.items()}}
        out.update({name: n for name in self.synthetic})
        out.update({NEAR_PREFIX + name: n for name in self.near})
        return out

    @property
    def length(self) -> int:
        return max(self.sources().values())


def _bounds(shared: OODInputs) -> tuple[float, float]:
    return float(np.min(shared.lower)), float(np.max(shared.upper))


def make_inputs(shared: OODInputs, source: str, start: int, stop: int) -> torch.Tensor:
    """The inputs of ``source`` at positions ``start:stop`` (CPU, float32)."""
    if source in shared.user_sets:
        return torch.as_tensor(np.ascontiguousarray(shared.user_sets[source][start:stop]), dtype=torch.float32)
    x = torch.as_tensor(np.ascontiguousarray(shared.x_in[start:stop]), dtype=torch.float32)
    ids = shared.ids_in[start:stop].tolist()
    if source == IN:
        return x
    if source.startswith(NEAR_PREFIX):
        name = source.removeprefix(NEAR_PREFIX)
        return corrupt_rows(shared, x, name, shared.near_severity, ids)
    rng = TorchSampleRng(sample_seeds(shared.seed, shared.section, source, 0, ids))
    shape = tuple(x.shape[1:])
    lower = torch.as_tensor(np.broadcast_to(shared.lower, shape).copy(), dtype=torch.float32)
    upper = torch.as_tensor(np.broadcast_to(shared.upper, shape).copy(), dtype=torch.float32)
    if source == "uniform":
        return lower + (upper - lower) * rng.uniform(0.0, 1.0, shape)
    if source == "gaussian":  # N(mid-range, range^2) clipped: Hendrycks & Gimpel's N(0.5, 1) on 0..1 inputs
        return (0.5 * (lower + upper) + (upper - lower) * rng.normal(0.0, 1.0, shape)).clamp(lower, upper)
    if source == "permuted":  # the pixel positions (or tabular features) of each row shuffled, channels together
        flat = x.reshape(len(x), x.shape[1], -1) if shared.image and x.ndim == 4 else x.reshape(len(x), 1, -1)
        perms = [torch.randperm(flat.shape[-1], generator=g) for g in rng.generators]
        out = torch.stack([row[:, p] for row, p in zip(flat, perms, strict=True)]) if perms else flat
        return out.reshape(x.shape)
    raise ValueError(f"unknown OOD source {source!r}")


def corrupt_rows(shared: OODInputs, x: torch.Tensor, name: str, severity: int, ids: list[int]) -> torch.Tensor:
    seeds = sample_seeds(shared.seed, shared.section, name, severity, ids)
    return corrupt(x, name, severity, bounds=_bounds(shared), seeds=seeds if name in RANDOM else None,
                   pixel_scale=shared.pixel_scale)


def score(shared: OODInputs, x: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every detector's outlier scores on ``x`` and the logits."""
    model = shared.model
    device_x = x.to(model.device)
    feats = None
    if shared.tap is not None:
        logits, feats = shared.tap(device_x)
        logits, feats = logits.float().cpu(), feats.cpu()
    else:
        logits = model.logits(device_x, batch_size=shared.batch_size)
    found = logit_scores(logits, energy_temperature=shared.energy_temperature)
    out = {k: v for k, v in found.items() if k in shared.detectors}
    if "odin" in shared.detectors:
        out["odin"] = odin_scores(model.forward, device_x, temperature=shared.odin_temperature,
                                  eps=shared.odin_eps).cpu()
    if feats is not None and shared.mahalanobis is not None:
        out["mahalanobis"] = shared.mahalanobis.scores(feats)
    if feats is not None and shared.knn_bank is not None:
        out["knn"] = knn_scores(feats, shared.knn_bank, shared.knn_k)
    if shared.autoencoder is not None:
        out["autoencoder"] = shared.autoencoder.scores(x)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}, logits.numpy().astype(np.float32)


def evaluate_chunk(shared: OODInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """Scores per source and detector, the confidence per source, and the in-distribution logits clean and under
    each calibration corruption and severity, for the chunk's positions."""
    sources = [(s, n) for s, n in shared.sources().items() if n > chunk.start]
    steps = progress(sources, desc="OOD sources", total=len(sources)) if progress is not None else sources
    out: dict[str, np.ndarray] = {}
    size = max(1, shared.batch_size)
    for source, n in steps:
        stop = min(chunk.stop, n)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(chunk.start, stop, size):
            scores, logits = score(shared, make_inputs(shared, source, start, min(start + size, stop)))
            for key, value in scores.items():
                parts.setdefault(f"{source}/{key}", []).append(value)
            parts.setdefault(f"{source}/logits", []).append(logits)
        out.update({k: np.concatenate(v) for k, v in parts.items()})
    if shared.calibration and chunk.start < len(shared.x_in):
        stop = min(chunk.stop, len(shared.x_in))
        x = torch.as_tensor(np.ascontiguousarray(shared.x_in[chunk.start : stop]), dtype=torch.float32)
        ids = shared.ids_in[chunk.start : stop].tolist()
        for name in shared.calibration:
            for s in shared.severities:
                corrupted = corrupt_rows(shared, x, name, s, ids)
                out[f"cal/{name}/{s}"] = shared.model.logits(corrupted.to(shared.model.device),
                                                             batch_size=size).numpy().astype(np.float32)
    return out


def reduce_chunks(store: ChunkStore, chunks: list[Chunk]) -> dict[str, np.ndarray]:
    """Every key's rows from the saved chunks, concatenated in chunk order (one chunk in memory at a time)."""
    parts: dict[str, list[np.ndarray]] = {}
    for _, arrays in _chunks(store, chunks):
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _chunks(store: ChunkStore, chunks: list[Chunk]) -> Iterator[tuple[Chunk, dict[str, np.ndarray]]]:
    return iter_chunks(store, chunks)
