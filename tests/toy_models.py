"""Importable factories for config tests (``toy_models:NAME``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TupleOut(nn.Module):
    def __init__(self, in_features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), x.sum(dim=1)


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"features": x, "scores": self.fc(x)}


def linear(in_features: int = 4, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(in_features, classes)


def softmax_model(in_features: int = 4, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(in_features, classes), nn.Softmax(dim=1))


def single_logit(in_features: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(in_features, 1)


def tuple_model() -> nn.Module:
    torch.manual_seed(0)
    return TupleOut()


def dict_model() -> nn.Module:
    torch.manual_seed(0)
    return DictOut()


def not_a_module() -> str:
    return "nope"


def predict_proba(x: np.ndarray) -> np.ndarray:
    """A black box: fixed linear scores -> softmax."""
    w = np.linspace(-1, 1, x.shape[1] * 3).reshape(x.shape[1], 3)
    z = x.reshape(len(x), -1) @ w
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def image_linear(channels: int = 2, size: int = 3, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))
