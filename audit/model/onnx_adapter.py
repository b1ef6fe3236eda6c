"""An ONNX model run by onnxruntime: a black box (no gradients). onnxruntime is imported only when an ONNX
model is loaded (``pip install "nnaudit[onnx]"``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.errors import ConfigError
from audit.model.base import ModelAdapter
from audit.model.outputs import SelectOutput

log = logging.getLogger("nnaudit")

ONNX_FLOAT_TYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                                    "tensor(float16)": np.float16}


class OnnxModelAdapter(ModelAdapter):
    """An ONNX model run by onnxruntime: a black box (no gradients). Inputs go to the session as numpy
    float32 (or the input's declared float type); with several outputs, ``model.output_key`` names one."""

    kind = "onnx"

    def __init__(self, session: Any, select: SelectOutput, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.select = select
        first = session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = ONNX_FLOAT_TYPES.get(first.type, np.float32)
        self.output_names = [o.name for o in session.get_outputs()]
        batch = first.shape[0] if first.shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None  # exported without a batch axis
        self.conversion: dict[str, Any] | None = None  # model.onnx_conversion's record (audit.model.onnx_convert)

    def raw(self, x: torch.Tensor) -> Any:
        """The session's outputs for one batch: a tensor, or a dict by output name when there are several. A
        graph exported with a fixed batch size runs in pieces of that size (the last one padded)."""
        array = x.detach().cpu().numpy().astype(self.input_dtype)
        if self.fixed_batch is not None and len(array) != self.fixed_batch:
            return _concat([self.raw(piece) for piece in _pieces(x, self.fixed_batch)], len(x))
        outs = self.session.run(None, {self.input_name: array})
        if len(outs) == 1:
            return torch.as_tensor(np.asarray(outs[0]), dtype=torch.float32)
        return {name: torch.as_tensor(np.asarray(out), dtype=torch.float32)
                for name, out in zip(self.output_names, outs, strict=True)}

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.raw(x))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["execution_providers"] = list(self.session.get_providers())
        if self.conversion is not None:
            out["onnx_conversion"] = dict(self.conversion)
        if self.backoff.events:
            out["out_of_memory_backoff"] = self.backoff.describe()
        return out


def _pieces(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    parts = list(x.split(size))
    if parts and len(parts[-1]) < size:
        pad = torch.zeros(size - len(parts[-1]), *x.shape[1:], dtype=x.dtype)
        parts[-1] = torch.cat([parts[-1], pad])
    return parts


def _concat(outs: list[Any], n: int) -> Any:
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs])[:n] for k in outs[0]}
    return torch.cat(outs)[:n]


def check_input_shape(session: Any, path: Path, input_shape: tuple[int, ...]) -> None:
    """The data's samples must fit the graph's declared input shape (named dimensions fit anything)."""
    declared = list(session.get_inputs()[0].shape or [])
    if not declared:
        return
    wanted = [None, *input_shape]
    fixed = [d if isinstance(d, int) and d > 0 else None for d in declared]
    if len(fixed) != len(wanted) or any(f is not None and w is not None and f != w
                                        for f, w in zip(fixed, wanted, strict=True)):
        shown = ["N" if not isinstance(d, int) or d <= 0 else d for d in declared]
        raise ConfigError("model.onnx", f"{path} takes inputs of shape {shown}; the data's samples have shape "
                          f"{list(input_shape)} (batches {['N', *input_shape]}). Export the model for this input shape"
                          " (a dynamic batch axis: dynamic_axes={'x': {0: 'n'}}) or reshape the data with "
                          "data.input_shape")


def onnx_session(path: Path, device: torch.device) -> Any:
    """An onnxruntime session for ``path``: the CUDA provider when the device is CUDA and onnxruntime has it,
    else the CPU provider with as many threads as torch uses."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ConfigError("model.onnx", "running ONNX models needs onnxruntime; install it with "
                          "pip install \"nnaudit[onnx]\" (or onnxruntime-gpu for CUDA)") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            log.warning("device %s asked for but this onnxruntime has no CUDA provider; the ONNX model runs on "
                        "CPU (pip install onnxruntime-gpu)", device)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise ConfigError("model.onnx", f"onnxruntime cannot load {path}: {err}") from err
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError("model.onnx", f"{path} takes {len(inputs)} inputs ({[i.name for i in inputs]}); nnaudit "
                          "feeds one input tensor (N, *input_shape). Export the model with a single input")
    if inputs[0].type not in ONNX_FLOAT_TYPES:
        raise ConfigError("model.onnx", f"{path} takes {inputs[0].type} input; nnaudit feeds floating-point "
                          "inputs (float, double or float16)")
    return session


def onnx_output_key(session: Any, key: str | int | None) -> str | None:
    """The output name ``model.output_key`` picks (a name, or an index into the outputs)."""
    names = [o.name for o in session.get_outputs()]
    if len(names) == 1:
        return None
    if isinstance(key, int) and -len(names) <= key < len(names):
        return names[key]
    if isinstance(key, str) and key in names:
        return key
    raise ConfigError("model.output_key", f"the ONNX model has outputs {names}; set model.output_key to the one "
                      "that holds the class scores (its name or index)")
