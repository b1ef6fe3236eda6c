"""Memory budget: how many rows one model evaluation may hold, so perturbation methods and quality metrics
go through the model in chunks of bounded size.

The cost of a row is measured once per explainer on one real row: the bytes of every leaf module's output
(what a forward pass allocates; a backward pass roughly doubles it) plus a few copies of the input, which
the perturbation libraries make per evaluated row (expanded input, mask, ablated input). A black box has
no modules to measure: its rows are costed at 16 input copies. Chunking never changes a row's result: every
row is evaluated by the same model, only fewer at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.model import ModelAdapter, TorchModelAdapter

DEFAULT_MEMORY_MB = 256.0
INPUT_COPIES = 4  # expanded input, mask, ablated input, slack: what captum / lime / shap hold per evaluated row
BLACK_BOX_COPIES = 16


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def activation_bytes(network: nn.Module, row: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one row through ``network`` (no gradients kept)."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        total += _tensor_bytes(output)

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            network(row[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total


def row_bytes(network: nn.Module | None, row: torch.Tensor, *, gradient: bool = False) -> int:
    """Estimated bytes one evaluated row holds: activations (x2 with a backward pass) plus input copies."""
    input_bytes = row[:1].numel() * 4
    if network is None:
        return BLACK_BOX_COPIES * input_bytes
    return activation_bytes(network, row) * (2 if gradient else 1) + INPUT_COPIES * input_bytes


def rows_within(memory_mb: float, bytes_per_row: int) -> int:
    """Rows per model evaluation that fit the budget (at least 1)."""
    return max(1, int(memory_mb * 2**20 // max(bytes_per_row, 1)))


def model_rows(adapter: ModelAdapter, x: np.ndarray, memory_mb: float) -> int:
    """Rows one evaluation of ``adapter`` may hold within ``memory_mb``, measured on ``x[:1]``."""
    network = adapter.network if isinstance(adapter, TorchModelAdapter) else None
    row = torch.as_tensor(np.asarray(x[:1], np.float32), device=adapter.device)
    return rows_within(memory_mb, row_bytes(network, row))


def spans(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(total)``."""
    size = max(1, int(size))
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
