"""The defense plugin kind: an inference-time transform in front of the model, and the model it defends.

A defense subclasses ``Defense`` and writes ``transform`` (a batch of raw inputs -> a batch of raw inputs, on the
model's device). Class attributes say how it must be attacked:

- ``differentiable``: the transform has useful gradients (median smoothing). When False (bit depth, JPEG), the
  defended model's own gradient through it is what torch gives (zero for ``round``; zero by construction for a
  transform computed outside torch), which is what a naive evaluation attacks; the adaptive evaluation uses BPDA
  with ``approximation`` (identity unless the defense supplies its own differentiable stand-in).
- ``randomized``: every call draws afresh (Gaussian noise): the adaptive evaluation averages gradients over draws
  (EOT).
- ``modalities``: the data it applies to; ``prepare`` refuses other data with a ConfigError naming the key.

Registered in the ``nnaudit.defenses`` entry-point group like every other plugin; the ``defenses`` section builds
them with their parameters from ``sections.defenses.defense_params.<name>``. A defense that is evaluated in
another way than a transform (randomized-smoothing certification) overrides ``evaluate`` and the section hands it
the context and the result instead of running the transform evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from audit.errors import ConfigError
from audit.model import ModelAdapter

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.data import AuditData
    from audit.results import SectionResult

DEFENSES_GROUP = "nnaudit.defenses"


class Defense(ABC):
    """An inference-time defense: ``transform`` runs on every input before the model."""

    name: ClassVar[str]
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular")
    # "transform": evaluated by the defenses section (clean cost, naive vs adaptive); "custom": its own ``evaluate``
    evaluation: ClassVar[str] = "transform"

    def __init__(self) -> None:
        self.lower: float = 0.0
        self.upper: float = 1.0
        self.modality = "image"
        # where the defense's parameters live in the config (the section sets it when it builds the defense)
        self.config_key = f"sections.defenses.defense_params.{self.name}"

    def prepare(self, data: AuditData, *, lower: float, upper: float, key: str) -> None:
        """Bind the data's modality and the input bounds; refuse data the defense does not apply to."""
        if data.modality not in self.modalities:
            raise ConfigError(key, f"defense '{self.name}' applies to {' and '.join(self.modalities)} data only; the "
                              f"audited data is {data.modality}. Remove '{self.name}' from this list")
        if not (np.isfinite(lower) and np.isfinite(upper)) and "bounded" in self.requirements():
            raise ConfigError(key, f"defense '{self.name}' needs finite input bounds; set model.input_bounds")
        self.lower, self.upper = float(lower), float(upper)
        self.modality = data.modality

    def requirements(self) -> tuple[str, ...]:
        return ()

    def check_model(self, model: ModelAdapter) -> None:
        """Refuse a model the defense cannot be evaluated on (a ConfigError naming the key); by default any."""
        return None

    @abstractmethod
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The defense's forward pass on a batch of raw inputs (values the model sees)."""

    def approximation(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA's differentiable stand-in for ``transform`` in the backward pass (identity unless overridden)."""
        return x

    def differentiable_transform(self, x: torch.Tensor) -> torch.Tensor:
        """``transform`` with the gradient the defended model really has: its own when ``differentiable``, else
        whatever torch propagates (zero through round; zero for a transform computed outside torch)."""
        out = self.transform(x)
        if out.requires_grad or not x.requires_grad:
            return out
        return out.detach() + 0 * x  # computed outside autograd: the wrapper's gradient is zero

    def settings(self) -> dict[str, Any]:
        return {"defense": self.name, "differentiable": self.differentiable, "randomized": self.randomized}

    def evaluate(self, ctx: AuditContext, result: SectionResult, rows: np.ndarray) -> None:
        """For ``evaluation = "custom"`` defenses (e.g. certification): record their own metrics and tables on
        ``rows`` (dataset indices: the robustness section's samples, at most the section's ``max_samples``)."""
        raise NotImplementedError(f"defense '{self.name}' has evaluation '{self.evaluation}' but no evaluate()")


class DefendedAdapter(ModelAdapter):
    """The model behind a defense, as a model adapter: ``forward`` (the defended model's own gradients) and
    ``logits`` both go through the defense's transform."""

    def __init__(self, base: ModelAdapter, defense: Defense) -> None:
        super().__init__(num_classes=base.num_classes, output_kind=base.output_kind, bounds=base.bounds,
                         device=base.device, batch_size=base.batch_size, source=f"{defense.name} + {base.source}",
                         sha256=base.sha256)
        self.base = base
        self.defense = defense
        self.has_gradients = base.has_gradients
        self.kind = f"defended ({base.kind})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.forward(self.defense.differentiable_transform(x))

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.base.logits(self.defense.transform(x.to(self.device))).to(x.device)
