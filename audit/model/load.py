"""``load_model``: the adapter a config's ``model:`` block describes, checked on a sample of the data."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from audit.config import ModelConfig
from audit.errors import ConfigError
from audit.model.base import Bounds, ModelAdapter
from audit.model.blackbox import PredictFunctionAdapter
from audit.model.loading import build_torch_module, file_sha256, import_object
from audit.model.onnx_adapter import OnnxModelAdapter, check_input_shape, onnx_output_key, onnx_session
from audit.model.outputs import SelectOutput, chosen_kind, probe
from audit.model.torch_adapter import AdaptedNetwork, Normalize, TorchModelAdapter

if TYPE_CHECKING:
    from audit.model.text import TextTokenizer

log = logging.getLogger("nnaudit")


def load_model(config: ModelConfig, *, num_classes: int, sample: np.ndarray, device: torch.device,
               batch_size: int, default_bounds: Bounds | None, extra_paths: list[Path] | None = None,
               tokenizer: TextTokenizer | None = None, task: str = "classification",
               task_auto: bool = False) -> ModelAdapter:
    """Build the adapter the config describes, and check it on a sample of the data (a text model, given its
    ``tokenizer`` from ``audit.model.text_load.load_tokenizer``: on token ids). ``task``: the data's task
    (``task_auto``: chosen by model.task: auto), which the output width must fit."""
    for path in extra_paths or []:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if tokenizer is not None or config.huggingface is not None:
        from audit.model.text_load import load_text_model, load_tokenizer

        return load_text_model(config, tokenizer or load_tokenizer(config),  # type: ignore[arg-type]
                               num_classes=num_classes, sample=sample, device=device, batch_size=batch_size)
    bounds = Bounds(*config.input_bounds) if config.input_bounds is not None else default_bounds
    sample_batch = torch.as_tensor(sample[:64], dtype=torch.float32)
    common: dict[str, Any] = {"num_classes": num_classes, "bounds": bounds, "device": device,
                              "batch_size": batch_size}
    if config.predict_fn is not None:
        fn = import_object(config.predict_fn, "model.predict_fn")
        if not callable(fn):
            raise ConfigError("model.predict_fn", f"'{config.predict_fn}' is not callable")
        detected, binary, _ = probe(lambda t: torch.as_tensor(np.asarray(fn(t.numpy())), dtype=torch.float32),
                                    sample_batch, config.output_key, num_classes, task, task_auto)
        kind = chosen_kind(detected, config.output, task)
        select = SelectOutput(config.output_key, kind, binary, task)
        return PredictFunctionAdapter(fn, select, output_kind=kind, source=config.predict_fn,
                                      sha256=hashlib.sha256(config.predict_fn.encode()).hexdigest(), **common)
    if config.onnx is not None:
        session = onnx_session(Path(config.onnx), device)
        check_input_shape(session, Path(config.onnx), tuple(sample.shape[1:]))
        onnx_key = onnx_output_key(session, config.output_key)
        raw_adapter = OnnxModelAdapter(session, SelectOutput(onnx_key, "logits", False), output_kind="logits",
                                       source=str(config.onnx), sha256=file_sha256(Path(config.onnx)),
                                       **{**common, "device": torch.device("cpu")})
        detected, binary, _ = probe(raw_adapter.raw, sample_batch, onnx_key, num_classes, task, task_auto)
        kind = chosen_kind(detected, config.output, task)
        raw_adapter.select = SelectOutput(onnx_key, kind, binary, task)
        raw_adapter.output_kind = kind
        return _convert(config, raw_adapter, sample, device)
    module, source, digest = build_torch_module(config)
    module = module.to(device).eval()
    normalize = None
    if config.normalization is not None:
        channels = sample.shape[1] if sample.ndim > 1 else 1
        for name in ("mean", "std"):
            values = getattr(config.normalization, name)
            if len(values) not in (1, channels):
                raise ConfigError(f"model.normalization.{name}", f"has {len(values)} values; the data has "
                                  f"{channels} channels/features (give 1 or {channels})")
        normalize = Normalize(config.normalization.mean, config.normalization.std, sample.ndim).to(device)
    pre = normalize if normalize is not None else nn.Identity()
    detected, binary, _ = probe(lambda t: module(pre(t.to(device))), sample_batch, config.output_key, num_classes,
                                task, task_auto)
    from audit.model.text_load import refuse_token_model_without_tokenizer

    refuse_token_model_without_tokenizer(module, lambda t: module(pre(t.to(device))), sample_batch, config.output_key)
    kind = chosen_kind(detected, config.output, task)
    network = AdaptedNetwork(module, normalize, SelectOutput(config.output_key, kind, binary, task))
    return TorchModelAdapter(network, output_kind=kind, source=source, sha256=digest, **common)


def _convert(config: ModelConfig, runtime: OnnxModelAdapter, sample: np.ndarray, device: torch.device) -> ModelAdapter:
    """``model.onnx_conversion: auto``: the graph converted to torch when it agrees with onnxruntime on the audit's
    inputs (a white box), else the onnxruntime black box with the reason in its manifest record."""
    if config.onnx_conversion == "off":
        runtime.conversion = {"converted": False, "reason": "model.onnx_conversion is off"}
        return runtime
    from audit.model.onnx_convert import convert_onnx

    converted, record = convert_onnx(Path(str(config.onnx)), runtime, sample, tolerance=config.onnx_tolerance,
                                     device=device)
    if converted is not None:
        return converted
    log.warning("model.onnx: %s; auditing it as a black box", record["reason"])
    runtime.conversion = record
    return runtime
