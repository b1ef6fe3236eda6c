"""A black box given as a predict function: ``fn(numpy (N, ...)) -> numpy (N, K)`` scores, no gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from audit.model.base import ModelAdapter
from audit.model.outputs import SelectOutput


class PredictFunctionAdapter(ModelAdapter):
    """A black box: ``fn(numpy (N, ...)) -> numpy (N, K)`` scores. No gradients."""

    kind = "predict_fn"

    def __init__(self, fn: Callable[[np.ndarray], Any], select: SelectOutput, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fn = fn
        self.select = select

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x.cpu().numpy())
        scores = torch.as_tensor(np.asarray(out), dtype=torch.float32)
        return self.select(scores)
