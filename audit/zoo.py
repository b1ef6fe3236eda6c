"""Small reference architectures the demo trains (importable by configs as ``audit.zoo:NAME``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


class MeanPoolText(nn.Module):
    """A small text classifier: token embeddings averaged over the attention mask, then a linear layer. Takes
    (token ids, attention mask) as every text model nnaudit wraps does."""

    def __init__(self, vocab_size: int, num_classes: int = 2, dim: int = 32, pad_id: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        weights = mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.out(torch.relu(self.hidden(pooled)))


def text_classifier(vocab_size: int, num_classes: int = 2, dim: int = 32, pad_id: int = 0) -> nn.Module:
    """``MeanPoolText`` for configs (``factory: audit.zoo:text_classifier``)."""
    return MeanPoolText(vocab_size, num_classes, dim, pad_id)
