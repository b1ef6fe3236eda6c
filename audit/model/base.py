"""The adapter interface every plugin sees, and the input bounds it carries.

``ModelAdapter.forward(x)`` takes raw inputs (normalization happens inside) on the adapter's
device and returns logits (N, K), differentiable with respect to ``x`` only: the network's
parameters are frozen, so gradient plugins never pay for weight gradients.
``ModelAdapter.logits(x)`` is the batched, no-grad path returning CPU logits. Black boxes (a
predict function, an ONNX session) have no ``forward``: gradient plugins refuse them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np
import torch

from audit.device import BackoffLog, run_halving
from audit.errors import ModelError


class Bounds(NamedTuple):
    lower: float
    upper: float


class ModelAdapter(ABC):
    """The interface plugins use. Subclasses: ``TorchModelAdapter``, ``PredictFunctionAdapter``,
    ``OnnxModelAdapter``."""

    has_gradients: bool = False
    kind: str = "abstract"

    def __init__(self, *, num_classes: int, output_kind: str, bounds: Bounds | None, device: torch.device,
                 batch_size: int, source: str, sha256: str | None) -> None:
        self.num_classes = num_classes
        self.output_kind = output_kind
        self.bounds = bounds
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self._sha256 = sha256
        self.backoff = BackoffLog()

    @property
    def sha256(self) -> str:
        """The model's identity in the manifest: the hash of its file, or of its weights (computed when first
        asked for, when the adapter was built without one)."""
        if self._sha256 is None:
            self._sha256 = self._weights_sha256()
        return self._sha256

    def _weights_sha256(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} was built without a sha256 and cannot compute one")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ModelError(f"this model ({self.kind}) has no gradients; use attacks and explainers that only "
                         "need predictions (black-box / score-based)")

    def decision_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The scores that decide whether an input is adversarial (attacks verify every example with them), on
        ``x``'s device: ``forward`` for a white box, ``logits`` for a black box; an ONNX model converted to torch
        answers with onnxruntime, the model that decides its predictions."""
        if self.has_gradients:
            return self.forward(x)
        return self.logits(x).to(x.device)

    @abstractmethod
    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for one batch (each adapter kind calls its model here)."""

    @torch.no_grad()
    def logits(self, x: np.ndarray | torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Logits for many inputs, batched, on CPU, float32. On out-of-memory the batch is halved and retried
        (recorded in ``backoff``)."""
        return self.device_logits(x, batch_size=batch_size).cpu()

    @torch.no_grad()
    def device_logits(self, x: np.ndarray | torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """``logits`` on the adapter's device (black boxes: on CPU), without a copy to the host."""
        tensor = torch.as_tensor(x, dtype=torch.float32)
        if len(tensor) == 0:
            return torch.empty(0, self.num_classes)
        return torch.cat(run_halving(lambda part: self._logits_batch(part).float(), tensor,
                                     batch_size or self.batch_size, self.backoff, "model logits"))

    def probabilities(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.logits(x).argmax(dim=1).numpy()

    def numpy_predict_proba(self, x: np.ndarray) -> np.ndarray:
        """For libraries that want ``f(numpy) -> numpy probabilities`` (lime, shap's KernelExplainer)."""
        return self.probabilities(np.asarray(x, np.float32)).numpy().astype(np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "sha256": self.sha256,
            "num_classes": self.num_classes,
            "output_kind": self.output_kind,
            "has_gradients": self.has_gradients,
            "input_bounds": list(self.bounds) if self.bounds is not None else None,
            "num_parameters": None,
        }
