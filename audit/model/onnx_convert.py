"""An ONNX graph converted to torch (onnx2torch): gradients for a model handed over as ONNX.

``convert_onnx`` converts the file, runs the converted module and onnxruntime on the audit's inputs and keeps the
conversion only when their outputs agree within ``model.onnx_tolerance``; otherwise (or when the graph does not
convert, or onnx2torch is missing) the model stays a black box and the record says why. The record goes to the
manifest as ``model.onnx_conversion``: ``{converted, max_abs_diff, tolerance, checked_inputs, reason}``.

``ConvertedOnnxAdapter`` is a white box whose ``forward`` (what gradient attacks, red flags, escalation and
explainers differentiate) is the converted module, while ``logits`` and ``decision_logits`` (clean predictions and
the verification of every adversarial example) are onnxruntime's: onnxruntime decides every prediction.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.model.onnx_adapter import OnnxModelAdapter
from audit.model.torch_adapter import AdaptedNetwork, TorchModelAdapter

log = logging.getLogger("nnaudit")

CHECK_ROWS = 4096  # inputs the converted graph is compared on (the audit's first rows)


class ConvertedOnnxAdapter(TorchModelAdapter):
    """Gradients from the converted graph, predictions from onnxruntime."""

    kind = "onnx"

    def __init__(self, network: AdaptedNetwork, runtime: OnnxModelAdapter, conversion: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(network, **kwargs)
        self.runtime = runtime
        self.conversion = conversion

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime._logits_batch(x).to(self.device)

    def decision_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime._logits_batch(x).to(x.device)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["execution_providers"] = list(self.runtime.session.get_providers())
        out["onnx_conversion"] = dict(self.conversion)
        out["gradients_from"] = "the ONNX graph converted to torch by onnx2torch; onnxruntime decides predictions"
        return out


def convert_onnx(path: Path, runtime: OnnxModelAdapter, sample: np.ndarray, *, tolerance: float,
                 device: torch.device) -> tuple[ConvertedOnnxAdapter | None, dict[str, Any]]:
    """The converted adapter (None when refused) and the record of the check."""
    record: dict[str, Any] = {"converted": False, "max_abs_diff": None, "tolerance": tolerance,
                              "checked_inputs": 0, "converter": "onnx2torch", "reason": None}
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as err:
        record["reason"] = f"onnx2torch is not installed ({err}); pip install \"nnaudit[onnx]\""
        return None, record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter warns about ops it handles approximately; checked below
            module = convert(onnx.load(str(path)))
    except Exception as err:  # onnx2torch raises NotImplementedError, KeyError, ... for graphs it cannot convert
        record["reason"] = f"the graph does not convert to torch: {type(err).__name__}: {str(err)[:300]}"
        return None, record
    network = AdaptedNetwork(module, None, runtime.select)
    check = torch.as_tensor(sample[:CHECK_ROWS], dtype=torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = network.to(device).eval()
            ours = torch.cat([net(part.to(device)).float().cpu() for part in check.split(runtime.batch_size)])
        theirs = runtime.logits(check)
    except Exception as err:  # a converted op that fails at run time
        record["reason"] = f"the converted graph fails on the audit's inputs: {type(err).__name__}: {str(err)[:300]}"
        return None, record
    if ours.shape != theirs.shape:
        record["reason"] = f"the converted graph returns shape {tuple(ours.shape)}, onnxruntime {tuple(theirs.shape)}"
        return None, record
    diff = float((ours - theirs).abs().max()) if len(check) else 0.0
    record.update(max_abs_diff=diff if np.isfinite(diff) else None, checked_inputs=len(check))
    if not np.isfinite(diff) or diff > tolerance:
        record["reason"] = (f"the converted graph's outputs differ from onnxruntime's by up to {diff:.3g} on the "
                            f"audit's inputs, above model.onnx_tolerance {tolerance:g}")
        return None, record
    record["converted"] = True
    adapter = ConvertedOnnxAdapter(network, runtime, record, num_classes=runtime.num_classes,
                                   output_kind=runtime.output_kind, bounds=runtime.bounds, device=device,
                                   batch_size=runtime.batch_size, source=runtime.source, sha256=runtime.sha256)
    return adapter, record


def conversion_note(record: dict[str, Any] | None) -> str | None:
    """What a section says about an ONNX model's gradients (None: not an ONNX model)."""
    if record is None:
        return None
    if record.get("converted"):
        return (f"the ONNX model's gradients come from its graph converted to torch ({record.get('converter')}, max "
                f"|difference| from onnxruntime {record.get('max_abs_diff'):.2g} on {record.get('checked_inputs')} "
                "inputs); onnxruntime decides every prediction")
    return f"the ONNX model runs as a black box: {record.get('reason')}"


def model_notes(model: Any) -> list[str]:
    """The note a section adds about where an ONNX model's gradients come from (none for other models)."""
    note = conversion_note(getattr(model, "conversion", None))
    return [] if note is None else [note]
