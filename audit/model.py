"""Model adapters: wrap any trained network once, so every plugin sees the same thing.

``ModelAdapter.forward(x)`` takes raw inputs (normalization happens inside) on the adapter's
device and returns logits (N, K), differentiable with respect to ``x`` only: the network's
parameters are frozen, so gradient plugins never pay for weight gradients.
``ModelAdapter.logits(x)`` is the batched, no-grad path returning CPU logits.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from audit.config import ModelConfig
from audit.device import BackoffLog
from audit.errors import ConfigError, ModelError

log = logging.getLogger("nnaudit")
PROB_TOLERANCE = 1e-3
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Bounds(NamedTuple):
    lower: float
    upper: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{name}' asked for but CUDA is not available here; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", f"'{name}' asked for but only {torch.cuda.device_count()} GPU(s) are visible")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "'mps' asked for but it is not available here; use --device cpu")
    return torch.device(name)


def import_object(path: str, key: str) -> Any:
    """Import 'package.module:attr' and say which config key to fix when it fails."""
    if ":" not in path:
        raise ConfigError(key, f"'{path}' is not an import path; write it as 'package.module:name'")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(key, f"cannot import module '{module_name}': {err}. Install it or run nnaudit from the "
                          "folder that holds it (the config's folder is searched too)") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(key, f"module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Normalize(nn.Module):
    """(x - mean) / std over the channel axis (images) or feature axis (tabular)."""

    def __init__(self, mean: list[float], std: list[float], ndim: int) -> None:
        super().__init__()
        shape = [1, -1] + [1] * max(ndim - 2, 0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SelectOutput(nn.Module):
    """Pick the logits out of tuple/dict outputs, turn probabilities into log-probabilities,
    and a single binary score into two logits."""

    def __init__(self, key: str | int | None, output_kind: str, binary_single: bool) -> None:
        super().__init__()
        self.key = key
        self.output_kind = output_kind
        self.binary_single = binary_single

    def forward(self, out: Any) -> torch.Tensor:
        out = select_output(out, self.key)
        if self.binary_single:
            out = out.reshape(-1, 1)
            if self.output_kind == "probabilities":
                p = out.clamp(1e-12, 1 - 1e-12)
                return torch.cat([torch.log1p(-p), torch.log(p)], dim=1)
            return torch.cat([torch.zeros_like(out), out], dim=1)
        if self.output_kind == "probabilities":
            return torch.log(out.clamp_min(1e-12))
        return out


def select_output(out: Any, key: str | int | None) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if key is None or key not in out:
            raise ModelError(f"the model returns a dict with keys {sorted(out)}; set model.output_key to the "
                             "key that holds the class scores")
        return select_output(out[key], None)
    if isinstance(out, (tuple, list)):
        if not isinstance(key, int) or not -len(out) <= key < len(out):
            raise ModelError(f"the model returns a {type(out).__name__} of {len(out)} outputs; set "
                             "model.output_key to the index of the class scores (e.g. 0)")
        return select_output(out[key], None)
    if hasattr(out, "logits"):  # e.g. HuggingFace ModelOutput
        return select_output(out.logits, None)
    raise ModelError(f"the model returns {type(out).__name__}; expected a tensor, tuple or dict of tensors")


class AdaptedNetwork(nn.Module):
    """normalize -> user network -> output selection. Differentiable; what gradient plugins call."""

    def __init__(self, network: nn.Module, normalize: Normalize | None, select: SelectOutput) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.network = network
        self.select = select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.network(self.normalize(x)))


class ModelAdapter(ABC):
    """The interface plugins use. Subclasses: ``TorchModelAdapter``, ``PredictFunctionAdapter``."""

    has_gradients: bool = False
    kind: str = "abstract"

    def __init__(self, *, num_classes: int, output_kind: str, bounds: Bounds | None, device: torch.device,
                 batch_size: int, source: str, sha256: str) -> None:
        self.num_classes = num_classes
        self.output_kind = output_kind
        self.bounds = bounds
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self.sha256 = sha256
        self.backoff = BackoffLog()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ModelError(f"this model ({self.kind}) has no gradients; use attacks and explainers that only "
                         "need predictions (black-box / score-based)")

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
        from audit.device import run_halving

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
        self.precision_check: dict[str, Any] | None = None  # what audit.precision measured, when asked
        self._call: Callable[[torch.Tensor], torch.Tensor] = self.network
        self.compiled = False

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

    def raw(self, x: torch.Tensor) -> Any:
        """The session's outputs for one batch: a tensor, or a dict by output name when there are several."""
        outs = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(self.input_dtype)})
        if len(outs) == 1:
            return torch.as_tensor(np.asarray(outs[0]), dtype=torch.float32)
        return {name: torch.as_tensor(np.asarray(out), dtype=torch.float32)
                for name, out in zip(self.output_names, outs, strict=True)}

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.raw(x))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["execution_providers"] = list(self.session.get_providers())
        if self.backoff.events:
            out["out_of_memory_backoff"] = self.backoff.describe()
        return out


ONNX_FLOAT_TYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                                    "tensor(float16)": np.float16}


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


def _detect_output_kind(raw: torch.Tensor) -> str:
    """Probabilities if every row is in [0, 1] and sums to 1 (or, for one column, lies in [0, 1])."""
    if raw.numel() == 0 or not torch.isfinite(raw).all():
        return "logits"
    in_unit = bool(((raw >= 0) & (raw <= 1)).all())
    if raw.shape[1] == 1:
        return "probabilities" if in_unit else "logits"
    sums_to_one = bool(torch.allclose(raw.sum(dim=1), torch.ones(raw.shape[0]), atol=PROB_TOLERANCE))
    return "probabilities" if in_unit and sums_to_one else "logits"


def _probe(call: Callable[[torch.Tensor], Any], sample: torch.Tensor, key: str | int | None,
           num_classes: int) -> tuple[str, bool, torch.Tensor]:
    """Run one batch, check the output width against the classes; return (kind, binary_single, raw)."""
    try:
        with torch.no_grad():
            out = call(sample)
    except Exception as err:  # the user's model failed on the user's data: report both shapes
        raise ModelError(f"the model failed on a batch of inputs of shape {list(sample.shape)}: "
                         f"{type(err).__name__}: {err}. Check data.input_shape and the model's expected input"
                         ) from err
    raw = select_output(out, key).detach().float().cpu()
    if raw.ndim == 1:
        raw = raw.reshape(-1, 1)
    if raw.ndim != 2 or raw.shape[0] != sample.shape[0]:
        raise ModelError(f"the model's output has shape {list(raw.shape)} for {sample.shape[0]} inputs; "
                         "expected (N, classes)")
    width = raw.shape[1]
    binary_single = width == 1 and num_classes == 2
    if width != num_classes and not binary_single:
        raise ModelError(f"the model outputs {width} scores per sample but the data has {num_classes} classes; "
                         "fix the model's last layer or set data.class_names to the model's classes")
    if not torch.isfinite(raw).all():
        raise ModelError("the model returns NaN or infinite scores on the data; check its weights and the input "
                         "normalization (model.normalization)")
    return _detect_output_kind(raw), binary_single, raw


def is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def load_safetensors(path: Path, key: str = "model.weights") -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file on CPU (no code runs: the format holds tensors only)."""
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise ConfigError(key, f"{path} is a safetensors file; install the reader with "
                          "pip install \"nnaudit[safetensors]\" (or pip install safetensors)") from err
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises SafetensorError and others for a damaged file
        raise ConfigError(key, f"cannot read safetensors file {path}: {err}") from err


def _load_weights(module: nn.Module, config: ModelConfig) -> None:
    assert config.weights is not None
    state: Any
    if is_safetensors(Path(config.weights)):
        state = load_safetensors(Path(config.weights))
    else:
        state = _torch_load_weights(config)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError("model.weights", f"{config.weights} does not hold a state_dict (got {type(state).__name__})")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError("model.weights", f"the weights do not fit the network built by model.factory: {err}") from err


def _torch_load_weights(config: ModelConfig) -> Any:
    assert config.weights is not None
    with open(config.weights, "rb") as handle:
        head = handle.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive (legacy: a pickle)
        raise ConfigError("model.weights", f"{config.weights} is not a file written by torch.save (neither a zip "
                          "archive nor a pickle) and not a .safetensors file; point model.weights at the saved "
                          "state_dict")
    try:
        return torch.load(config.weights, map_location="cpu", weights_only=not config.trust_pickle)
    except Exception as err:
        if not config.trust_pickle and "weights_only" in str(err):
            raise ConfigError("model.weights", f"{config.weights} holds pickled objects that safe loading refuses. "
                              "Save a state_dict (torch.save(model.state_dict(), path)), or set "
                              "model.trust_pickle: true if you trust the file (it can run code)") from err
        raise ConfigError("model.weights", f"cannot load {config.weights}: {err}") from err


def _build_torch_module(config: ModelConfig) -> tuple[nn.Module, str, str]:
    if config.torchscript is not None:
        try:
            module = torch.jit.load(str(config.torchscript), map_location="cpu")
        except Exception as err:
            raise ConfigError("model.torchscript", f"cannot load TorchScript file {config.torchscript}: {err}") from err
        return module, str(config.torchscript), file_sha256(Path(config.torchscript))
    assert config.factory is not None
    factory = import_object(config.factory, "model.factory")
    if not callable(factory):
        raise ConfigError("model.factory", f"'{config.factory}' is not callable")
    try:
        module = factory(**config.kwargs)
    except TypeError as err:
        raise ConfigError("model.kwargs", f"'{config.factory}' rejected its kwargs {config.kwargs}: {err}") from err
    if not isinstance(module, nn.Module):
        raise ConfigError("model.factory",
                          f"'{config.factory}' returned {type(module).__name__}, not a torch nn.Module")
    if config.weights is not None:
        _load_weights(module, config)
        return module, f"{config.factory} + {config.weights}", file_sha256(Path(config.weights))
    return module, config.factory, state_sha256(module)


def _onnx_output_key(session: Any, key: str | int | None) -> str | None:
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


def load_model(config: ModelConfig, *, num_classes: int, sample: np.ndarray, device: torch.device,
               batch_size: int, default_bounds: Bounds | None, extra_paths: list[Path] | None = None) -> ModelAdapter:
    """Build the adapter the config describes, and check it on a sample of the data."""
    for path in extra_paths or []:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    bounds = Bounds(*config.input_bounds) if config.input_bounds is not None else default_bounds
    probe = torch.as_tensor(sample[:64], dtype=torch.float32)
    common: dict[str, Any] = {"num_classes": num_classes, "bounds": bounds, "device": device,
                              "batch_size": batch_size}
    if config.predict_fn is not None:
        fn = import_object(config.predict_fn, "model.predict_fn")
        if not callable(fn):
            raise ConfigError("model.predict_fn", f"'{config.predict_fn}' is not callable")
        detected, binary, _ = _probe(lambda t: torch.as_tensor(np.asarray(fn(t.numpy())), dtype=torch.float32),
                                     probe, config.output_key, num_classes)
        kind = detected if config.output == "auto" else config.output
        select = SelectOutput(config.output_key, kind, binary)
        return PredictFunctionAdapter(fn, select, output_kind=kind, source=config.predict_fn,
                                      sha256=hashlib.sha256(config.predict_fn.encode()).hexdigest(), **common)
    if config.onnx is not None:
        session = onnx_session(Path(config.onnx), device)
        onnx_key = _onnx_output_key(session, config.output_key)
        raw_adapter = OnnxModelAdapter(session, SelectOutput(onnx_key, "logits", False), output_kind="logits",
                                       source=str(config.onnx), sha256=file_sha256(Path(config.onnx)),
                                       **{**common, "device": torch.device("cpu")})
        detected, binary, _ = _probe(raw_adapter.raw, probe, onnx_key, num_classes)
        kind = detected if config.output == "auto" else config.output
        raw_adapter.select = SelectOutput(onnx_key, kind, binary)
        raw_adapter.output_kind = kind
        return raw_adapter
    module, source, digest = _build_torch_module(config)
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
    detected, binary, _ = _probe(lambda t: module(pre(t.to(device))), probe, config.output_key, num_classes)
    kind = detected if config.output == "auto" else config.output
    network = AdaptedNetwork(module, normalize, SelectOutput(config.output_key, kind, binary))
    return TorchModelAdapter(network, output_kind=kind, source=source, sha256=digest, **common)
