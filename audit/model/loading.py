"""Building a torch network from a config: a TorchScript file, or a factory plus weights (``torch.save`` files,
loaded with ``weights_only=True`` unless ``model.trust_pickle``, or ``.safetensors``). Also the hashes the
manifest records (of the file, or of the state_dict when the factory alone builds the network)."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audit.config import ModelConfig
from audit.errors import ConfigError


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


def build_torch_module(config: ModelConfig) -> tuple[nn.Module, str, str]:
    """(network, source, sha256) of ``model.torchscript`` or ``model.factory`` (+ ``model.weights``)."""
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
