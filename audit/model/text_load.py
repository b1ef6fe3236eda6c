"""Loading a text model from a config: the tokenizer first (the data needs it to make token ids), then the model.

- ``model.huggingface: DIR``: ``AutoModelForSequenceClassification.from_pretrained(DIR, local_files_only=True)``
  and the tokenizer saved in the same directory (unless ``model.tokenizer`` names another); nothing is downloaded
  (a path is read, never a hub name, and ``local_files_only`` holds whatever ``HF_HUB_OFFLINE`` says);
- ``model.factory`` (+ ``model.weights``) or ``model.torchscript`` with ``model.tokenizer``: a torch module called
  as ``module(ids, mask)`` (e.g. ``audit.zoo:text_classifier``), its weights read as for any torch model
  (``weights_only=True`` or safetensors).

The tokenizer must fit the model: its vocabulary may not exceed the rows of the token embedding (ids would index
past it), nor fall far short of them (another model's tokenizer), and the audited ids must index rows of it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.config import ModelConfig
from audit.errors import ConfigError
from audit.model.loading import build_torch_module
from audit.model.outputs import SelectOutput, probe
from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding

# an embedding may hold more rows than the tokenizer has tokens (rows padded to a multiple of 8..128 for speed)
SPARE_ROWS = 128


def load_tokenizer(config: ModelConfig) -> TextTokenizer | None:
    """The text model's tokenizer (``model.tokenizer``, else the ``model.huggingface`` directory's), or None for a
    model that is not a text model."""
    if config.tokenizer is not None:
        if config.onnx is not None or config.predict_fn is not None:
            raise ConfigError("model.tokenizer", "goes with model.huggingface, model.factory or model.torchscript (a "
                              "torch module taking token ids and an attention mask)")
        return TextTokenizer.from_path(config.tokenizer, max_length=config.max_length)
    if config.huggingface is not None:
        return TextTokenizer.from_path(config.huggingface, max_length=config.max_length, key="model.huggingface")
    return None


def directory_sha256(path: Path) -> str:
    """sha256 over the names and contents of every file of a saved model directory."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _huggingface(path: Path) -> nn.Module:
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as err:
        raise ConfigError("model.huggingface", "a Hugging Face model needs the text extra: "
                          "pip install \"nnaudit[text]\"") from err
    try:
        module = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # OSError, ValueError, KeyError... for a folder that holds no sequence classifier
        raise ConfigError("model.huggingface", f"cannot load a sequence classifier from {path} (a directory written "
                          f"by save_pretrained, read offline): {type(err).__name__}: {err}") from err
    if not isinstance(module, nn.Module):
        raise ConfigError("model.huggingface", f"{path} holds a {type(module).__name__}, not a torch model")
    return module


def check_vocabulary(tokenizer: TextTokenizer, embedding: nn.Module, key: str) -> int:
    """The embedding's rows; a ConfigError naming ``key`` when the tokenizer does not fit them."""
    weight = getattr(embedding, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ConfigError("model.embedding_layer", f"the token embedding ({type(embedding).__name__}) has no (vocab, "
                          "dim) weight matrix; name the nn.Embedding with model.embedding_layer")
    rows = int(weight.shape[0])
    size = tokenizer.vocab_size
    if size > rows or rows - size > max(SPARE_ROWS, rows // 100):
        raise ConfigError(key, f"the tokenizer ({tokenizer.source}) has {size} tokens but the model's token "
                          f"embedding has {rows} rows: they do not belong together. Use the tokenizer the model was "
                          "trained with (for a factory model: its vocab_size must be the tokenizer's)")
    return rows


def load_text_model(config: ModelConfig, tokenizer: TextTokenizer, *, num_classes: int, sample: np.ndarray,
                    device: torch.device, batch_size: int) -> TextModelAdapter:
    """The ``TextModelAdapter`` the config describes, its tokenizer and outputs checked against the data."""
    from audit.data.text import check_token_range

    if config.normalization is not None or config.input_bounds is not None:
        key = "model.normalization" if config.normalization is not None else "model.input_bounds"
        raise ConfigError(key, "does not apply to a text model (its inputs are token ids); remove it")
    output_key: str | int | None = config.output_key
    if config.huggingface is not None:
        path = Path(config.huggingface)
        module, source, digest = _huggingface(path), str(path), directory_sha256(path)
        call_style, output_key = "transformers", output_key if output_key is not None else "logits"
        vocab_key = "model.tokenizer" if config.tokenizer is not None else "model.huggingface"
    else:
        module, source, digest = build_torch_module(config)
        call_style, vocab_key = "positional", "model.tokenizer"
    module = module.to(device).eval()
    embedding = find_embedding(module, config.embedding_layer)
    rows = check_vocabulary(tokenizer, embedding, vocab_key)
    ids = np.asarray(sample).reshape(len(sample), -1)
    check_token_range(ids, rows, "the model's token embedding", "data")
    pad = tokenizer.pad_id

    def raw(batch: torch.Tensor) -> Any:
        tokens = batch.to(device).long()
        mask = (tokens != pad).long()
        if call_style == "transformers":
            return module(input_ids=tokens, attention_mask=mask)
        return module(tokens, mask)

    detected, binary, _ = probe(raw, torch.as_tensor(ids[:64], dtype=torch.float32), output_key, num_classes)
    kind = detected if config.output == "auto" else config.output
    return TextModelAdapter(module, tokenizer, embedding=embedding, select=SelectOutput(output_key, kind, binary),
                            call_style=call_style, num_classes=num_classes, output_kind=kind, device=device,
                            batch_size=batch_size, source=source, sha256=digest)
