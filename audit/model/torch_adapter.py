"""A torch network as an adapter: normalization inside the forward, output selection after it, frozen
parameters, mixed precision (autocast) and ``torch.compile`` on the differentiable path.

``TorchModelAdapter.from_module`` wraps a network already in memory (a notebook, a test, a benchmark);
``audit.model.load_model`` builds the same adapter from a config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from audit.device import resolve_device
from audit.errors import ConfigError
from audit.model.base import Bounds, ModelAdapter
from audit.model.loading import state_sha256
from audit.model.outputs import SelectOutput

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OUTPUT_KINDS = ("logits", "probabilities")
AdapterT = TypeVar("AdapterT", bound="TorchModelAdapter")


class Normalize(nn.Module):
    """(x - mean) / std over the channel axis (images) or feature axis (tabular)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], ndim: int) -> None:
        super().__init__()
        shape = [1, -1] + [1] * max(ndim - 2, 0)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AdaptedNetwork(nn.Module):
    """normalize -> user network -> output selection. Differentiable; what gradient plugins call."""

    def __init__(self, network: nn.Module, normalize: nn.Module | None, select: SelectOutput) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.network = network
        self.select = select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.network(self.normalize(x)))


class TorchModelAdapter(ModelAdapter):
    """A torch network. ``forward`` (the differentiable path attacks and gradient explanations use) runs under
    autocast when ``precision`` is bf16/fp16 and through ``torch.compile`` when compiled; ``logits`` (clean
    predictions) stays float32."""

    has_gradients = True
    kind = "torch"

    def __init__(self, network: AdaptedNetwork, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network.to(self.device).eval()
        for param in self.network.parameters():
            param.requires_grad_(False)
        self.precision = "fp32"
        self.precision_check: dict[str, Any] | None = None  # what the precision check measured (audit.engine.execution)
        self._call: Callable[[torch.Tensor], torch.Tensor] = self.network
        self.compiled = False

    @classmethod
    def from_module(cls: type[AdapterT], module: nn.Module, *, num_classes: int,
                    bounds: Bounds | tuple[float, float] | None = None, device: str | torch.device = "cpu",
                    batch_size: int = 256, output_kind: str = "logits", output_key: str | int | None = None,
                    normalize: nn.Module | None = None, source: str | None = None,
                    sha256: str | None = None, task: str = "classification") -> AdapterT:
        """Wrap a torch network that is already in memory.

        ``module`` returns ``num_classes`` scores per sample (a tensor, or a tuple/dict picked by
        ``output_key``), as logits or, with ``output_kind="probabilities"``, probabilities. ``bounds``: the
        valid input range (attacks clip into it; None: unbounded). ``normalize``: a module applied to the raw
        input before the network (e.g. ``Normalize(mean, std, ndim)``), so attacks work in raw input space.
        ``device``: a torch device or its name (``"auto"``: CUDA when available). The network is moved to the
        device, put in eval mode and its parameters frozen, as ``load_model`` does. ``sha256`` defaults to a
        hash of the module's state_dict (computed when first read: wrapping copies nothing to the host), ``source`` to
        its class name. ``task``: ``regression`` (``module`` returns one number per sample, used as is: the
        output kind is ``values``) or ``multilabel`` (one score per label, read with a sigmoid) besides
        classification.
        """
        if task == "regression":
            output_kind = "values"
        elif output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        if not isinstance(module, nn.Module):
            raise TypeError(f"from_module wraps a torch nn.Module, got {type(module).__name__}")
        network = AdaptedNetwork(module, normalize, SelectOutput(output_key, output_kind, False, task))
        return cls(network, num_classes=num_classes, output_kind=output_kind,
                   bounds=Bounds(*bounds) if bounds is not None else None,
                   device=device if isinstance(device, torch.device) else resolve_device(device),
                   batch_size=batch_size, source=source if source is not None else type(module).__name__,
                   sha256=sha256)

    def set_precision(self, precision: str) -> None:
        """fp32, bf16 or fp16 for ``forward``."""
        if precision != "fp32" and precision not in AUTOCAST_DTYPES:
            raise ConfigError("precision", f"'{precision}' is not one of fp32, bf16, fp16")
        self.precision = precision

    def compile(self, probe: torch.Tensor) -> None:
        """Run the network through ``torch.compile``; check it on ``probe`` (one forward and one input gradient)
        against the eager network."""
        try:
            compiled = torch.compile(self.network)
            x = probe.detach().to(self.device).clone().requires_grad_(True)
            out = compiled(x)
            (grad,) = torch.autograd.grad(out.sum(), x)
        except Exception as err:  # the compiler's many failure types (no C++ compiler, unsupported ops, ...)
            raise ConfigError("compile", f"torch.compile failed on this model here: {type(err).__name__}: "
                              f"{str(err)[:300]}. Set compile: false") from err
        with torch.no_grad():
            eager = self.network(probe.to(self.device))
        scale = float(eager.abs().max()) + 1.0
        if not torch.allclose(out.detach(), eager, rtol=1e-3, atol=1e-4 * scale):
            raise ConfigError("compile", "the compiled model's logits differ from the eager model's (max "
                              f"difference {float((out.detach() - eager).abs().max()):.3g}); set compile: false")
        del grad
        self._call = compiled
        self.compiled = True

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp32":
            return self._call(x)
        with torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[self.precision]):
            out = self._call(x)
        return out.float()

    def _weights_sha256(self) -> str:
        return state_sha256(self.module)

    @property
    def module(self) -> nn.Module:
        """The user's network, without normalization or output selection."""
        return self.network.network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(x.to(self.device, non_blocking=True))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["num_parameters"] = int(sum(p.numel() for p in self.module.parameters()))
        out["precision"] = self.precision
        out["compiled"] = self.compiled
        if self.precision_check is not None:
            out["precision_check"] = self.precision_check
        if self.backoff.events:
            out["out_of_memory_backoff"] = self.backoff.describe()
        return out
