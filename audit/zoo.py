"""Small reference architectures the demo trains (importable by configs as ``audit.zoo:NAME``)."""

from __future__ import annotations

from torch import nn


def digits_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    """A small CNN for 1x8x8 digits."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def tabular_mlp(in_features: int, num_classes: int = 2, hidden: int = 64, dropout: float = 0.1) -> nn.Module:
    """A two-hidden-layer MLP for tabular data."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
