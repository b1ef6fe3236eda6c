"""The explainer interface: one small base class doing batching, device moves and counting once.

An explainer turns inputs (numpy, raw input space) and one target class per row into
attributions of the same shape as the inputs. Subclasses write only ``_attribute`` for one
batch of tensors already on the adapter's device.

Randomness is keyed per sample (``explain.seeds``): a method that draws at random takes each row's
seed from ``row_seeds()``, derived from (run seed, method, sample id), so a row gets the same
attributions alone, in any batch and at any position. Model evaluations are sized to the memory
budget (``memory_mb``) through ``eval_rows()``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from audit.device import free_cached_memory, is_out_of_memory
from audit.errors import NNAuditError
from audit.model import ModelAdapter, TorchModelAdapter
from explain.budget import DEFAULT_MEMORY_MB, row_bytes, rows_within
from explain.seeds import content_ids, sample_seeds


class ExplainerError(NNAuditError):
    """An explainer cannot run on this model or data. The message says what to change."""


NO_GRADIENTS = ("explainer '{method}' needs input gradients but the model ({kind}) is a black box without them; "
                "remove '{method}' from sections.explanations.methods and list perturbation methods instead "
                "(occlusion, shap_kernel, lime), or give a torch model (model.factory + model.weights)")


def at_least(name: str, value: float, minimum: float) -> None:
    """A constructor parameter below its minimum is a ValueError, which ``audit.plugin.construct`` reports as a
    ConfigError naming the method's ``method_params`` key."""
    if not value >= minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


class EvaluationCounter:
    """Counts model evaluations (rows passed through the model), the unit of an explainer's cost."""

    def __init__(self) -> None:
        self.rows = 0
        self.calls = 0

    def add(self, rows: int) -> None:
        self.rows += int(rows)
        self.calls += 1

    def hook(self, _module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        first = inputs[0] if inputs else None
        self.add(first.shape[0] if isinstance(first, torch.Tensor) else 0)


class Explainer(ABC):
    """Attributions for one method. ``explain(x, target)`` batches, moves to the device and counts."""

    method: ClassVar[str]
    needs_gradients: ClassVar[bool] = True
    # the whole batch goes to the library in one call (lime, kernel shap explain one row at a time)
    per_sample: ClassVar[bool] = False
    # the inputs it explains: continuous tensors (images, tabular rows) or tokens (texts; explain.text_methods)
    input_kinds: ClassVar[tuple[str, ...]] = ("continuous",)

    def __init__(self, adapter: ModelAdapter, *, batch_size: int = 64, seed: int = 0,
                 background: np.ndarray | None = None, modality: str = "image",
                 memory_mb: float = DEFAULT_MEMORY_MB) -> None:
        if self.needs_gradients and not adapter.has_gradients:
            raise ExplainerError(NO_GRADIENTS.format(method=self.method, kind=adapter.kind))
        if memory_mb <= 0:
            raise ExplainerError(f"memory_mb must be positive (got {memory_mb}); it is the memory budget of one "
                                 "model evaluation (sections.explanations.memory_mb)")
        self.adapter = adapter
        self.batch_size = batch_size
        self.seed = seed
        self.background = background
        self.modality = modality
        self.memory_mb = memory_mb
        self.counter = EvaluationCounter()
        self.notes: list[str] = []
        self.batch_ids = np.zeros(0, np.int64)  # sample ids of the batch ``_attribute`` is working on
        self._row_bytes: dict[bool, int] = {}

    @classmethod
    def section_defaults(cls, *, batch_size: int, seed: int, background: np.ndarray | None, modality: str,
                         memory_mb: float, feature_names: list[str] | None = None) -> dict[str, Any]:
        """What the explanations section passes to the constructor, under the method's own ``method_params``
        (which win): the settings every explainer shares. A subclass that takes more of what the section knows
        (lime: the feature names) adds it here."""
        return {"batch_size": batch_size, "seed": seed, "background": background, "modality": modality,
                "memory_mb": memory_mb}

    # -- keyed randomness and the memory budget ---------------------------------------------------
    def row_seeds(self) -> np.ndarray:
        """One seed per row of the current batch, from (run seed, method, sample id)."""
        return sample_seeds(self.seed, self.method, self.batch_ids)

    def eval_rows(self, row: torch.Tensor, *, gradient: bool = False) -> int:
        """Rows one model evaluation may hold within ``memory_mb`` (measured once on ``row``)."""
        if gradient not in self._row_bytes:
            network = self.adapter.network if isinstance(self.adapter, TorchModelAdapter) else None
            self._row_bytes[gradient] = row_bytes(network, row.detach(), gradient=gradient)
        return rows_within(self.memory_mb, self._row_bytes[gradient])

    # -- what subclasses use ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits, counted."""
        self.counter.add(x.shape[0])
        return self.adapter.forward(x)

    def class_score_sum(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The explained class scores of a batch summed to one number, shape (1,), for captum's gradient methods.

        Given ``target=`` and per-row outputs, captum differentiates ``torch.unbind(outputs)``: one gradient
        output per row, a quarter of Saliency's time on a 200-row batch. The rows of an evaluation-mode network
        do not interact, so the gradient of the sum is every row's own gradient, in one backward pass. captum
        expands and slices ``target`` with the inputs when passed as ``additional_forward_args``.
        """
        return self.forward(x).gather(1, target.reshape(-1, 1)).sum().reshape(1)

    def forward_no_grad(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for perturbation methods: gradients when the adapter has them are not needed."""
        self.counter.add(x.shape[0])
        if self.adapter.has_gradients:
            with torch.no_grad():
                return self.adapter.forward(x.to(self.adapter.device))
        return self.adapter.logits(x.detach().cpu()).to(x.device)

    def numpy_proba(self, x: np.ndarray) -> np.ndarray:
        """``f(numpy) -> probabilities`` for one library call (lime, kernel shap), counted, evaluated in chunks
        that fit the memory budget."""
        return torch.softmax(self._numpy_logits(x), dim=1).numpy().astype(np.float64)

    def numpy_logits(self, x: np.ndarray) -> np.ndarray:
        return self._numpy_logits(x).numpy().astype(np.float64)

    def _numpy_logits(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x, np.float32)
        self.counter.add(len(x))
        if len(x) == 0:
            return self.adapter.logits(x)
        rows = self.eval_rows(torch.as_tensor(x[:1], device=self.adapter.device))
        return self.adapter.logits(x, batch_size=min(rows, len(x)))

    def network_copy(self) -> nn.Module:
        """A deep copy of the adapted network with an evaluation counter, for libraries that hook modules."""
        if not isinstance(self.adapter, TorchModelAdapter):
            raise ExplainerError(NO_GRADIENTS.format(method=self.method, kind=self.adapter.kind))
        network = copy.deepcopy(self.adapter.network).eval()
        network.register_forward_hook(self.counter.hook)
        return network

    def background_tensor(self) -> torch.Tensor:
        if self.background is None:
            raise ExplainerError(f"explainer '{self.method}' needs background samples; pass background=")
        return torch.as_tensor(self.background, dtype=torch.float32, device=self.adapter.device)

    # -- the shared part ------------------------------------------------------------------------
    def explain(self, x: np.ndarray, target: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Attributions (n, *input_shape) float64 for inputs ``x`` and one class per row.

        ``ids``: one sample id per row, which keys the row's random draws (default: a hash of the row's values).
        """
        x = np.asarray(x, np.float32)
        target = np.array(target, np.int64).reshape(-1)
        if len(target) != len(x):
            raise ExplainerError(f"{len(x)} inputs but {len(target)} targets; give one class per input")
        ids = content_ids(x) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        if len(ids) != len(x):
            raise ExplainerError(f"{len(x)} inputs but {len(ids)} sample ids; give one id per input")
        outs = []
        start = 0
        while start < len(x):  # out of memory: halve the batch (random draws are keyed per sample, not per batch)
            size = self.batch_size
            xb = torch.as_tensor(x[start : start + size], device=self.adapter.device)
            tb = torch.as_tensor(target[start : start + size], device=self.adapter.device)
            self.batch_ids = ids[start : start + size]
            if self.needs_gradients:
                xb.requires_grad_(True)
            try:
                with torch.enable_grad():  # callers such as captum's metrics run under no_grad
                    attr = self._attribute(xb, tb)
            except Exception as err:
                if not is_out_of_memory(err) or size == 1:
                    raise
                del xb, tb
                free_cached_memory(self.adapter.device)
                self.batch_size = max(1, min(size, len(x) - start) // 2)
                self.adapter.backoff.record(f"explainer {self.method}", size, self.batch_size)
                self.notes.append(f"{self.method}: out of memory at {size} samples per call; continued at "
                                  f"{self.batch_size} ({self.adapter.backoff.chain(f'explainer {self.method}')})")
                continue
            outs.append(attr.detach().to("cpu", torch.float64).numpy() if isinstance(attr, torch.Tensor)
                        else np.asarray(attr, np.float64))
            start += len(xb)
        return np.concatenate(outs).reshape(x.shape) if outs else np.zeros(x.shape)

    @abstractmethod
    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor | np.ndarray:
        """Attributions for one batch on the adapter's device."""


ExplainerFactory = Callable[..., Explainer]
