"""The small, seeded problem the conformance checks run plugins on: a random-weight torch network (no training,
so the checks take seconds) and inputs in [0, 1], labelled with the network's own predictions.

``image``: (N, 1, 8, 8) inputs (the shape of scikit-learn's digits) and a small CNN with 4 classes;
``tabular``: (N, 6) inputs and an MLP with 3 classes, with a sensitive column for the fairness section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.context import AuditContext
from audit.data import AuditData
from audit.model import TorchModelAdapter

MODALITIES = ("image", "tabular")


@dataclass
class Problem:
    adapter: TorchModelAdapter
    data: AuditData

    @property
    def x(self) -> np.ndarray:
        return self.data.x

    @property
    def y(self) -> np.ndarray:
        return self.data.y

    def context(self, run_dir: str | Path, *, seed: int = 0, batch_size: int = 64) -> AuditContext:
        return AuditContext(model=self.adapter, data=self.data, run_dir=Path(run_dir), seed=seed,
                            batch_size=batch_size)


def _network(modality: str) -> nn.Module:
    if modality == "image":
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4))
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def tiny_problem(modality: str = "image", *, n: int = 24, seed: int = 0) -> Problem:
    """A seeded network and ``n`` inputs in [0, 1]; the labels are the network's predictions (so every sample
    starts correctly classified and an attack has something to break)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    generator = torch.Generator().manual_seed(seed)
    network = _network(modality)
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    shape = (1, 8, 8) if modality == "image" else (6,)
    x = np.random.default_rng(seed).random((n, *shape)).astype(np.float32)
    adapter = TorchModelAdapter.from_module(network, num_classes=4 if modality == "image" else 3, bounds=(0.0, 1.0),
                                            source=f"audit.testing {modality}")
    y = adapter.predict(x).astype(np.int64)
    classes = [f"class {i}" for i in range(adapter.num_classes)]
    if modality == "image":
        data = AuditData(name="conformance images", x=x, y=y, class_names=classes, modality="image")
    else:
        group = np.where(np.arange(n) % 2 == 0, "a", "b").astype(object).astype(str)
        data = AuditData(name="conformance table", x=x, y=y, class_names=classes, modality="tabular",
                         feature_names=[f"f{i}" for i in range(shape[0])], sensitive={"group": group},
                         lower=np.zeros(shape, np.float32), upper=np.ones(shape, np.float32))
    return Problem(adapter, data)
