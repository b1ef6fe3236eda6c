"""Loading a text model from a config: the tokenizer first (the data needs it to make token ids), then the model.

- ``model.huggingface: DIR``: ``AutoModelForSequenceClassification.from_pretrained(DIR, local_files_only=True)``
  and the tokenizer saved in the same directory (unless ``model.tokenizer`` names another); nothing is downloaded
  (a path is read, never a hub name, and ``local_files_only`` holds whatever ``HF_HUB_OFFLINE`` says);
- ``model.factory`` (+ ``model.weights``) with ``model.tokenizer``: a torch module called
  as ``module(ids, mask)`` (e.g. ``audit.zoo:text_classifier``), its weights read as for any torch model
  (``weights_only=True`` or safetensors).

The tokenizer must fit the model: its vocabulary may not exceed the rows of the token embedding (ids would index
past it), nor fall far short of them (another model's tokenizer), and the audited ids must index rows of it.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.config import ModelConfig
from audit.errors import ConfigError
from audit.model.loading import build_torch_module
from audit.model.outputs import SelectOutput, probe, select_output
from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding

# an embedding may hold more rows than the tokenizer has tokens (rows padded to a multiple of 8..128 for speed)
SPARE_ROWS = 128


class IdsOnly(nn.Module):
    """A module whose forward takes token ids only (``nn.EmbeddingBag`` + linear, say), called as
    ``module(ids, mask)`` like every text model: the mask is dropped (its padding id is the model's business)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Any:
        return self.inner(ids)


def takes_ids_only(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a single positional input (token ids, no attention mask)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # a TorchScript or C++ module: assume (ids, mask)
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 1


def refuse_token_model_without_tokenizer(module: nn.Module, call: Any, sample: torch.Tensor,
                                         key: str | int | None) -> None:
    """A torch model that embeds whole-number inputs (``nn.Embedding``/``nn.EmbeddingBag``) and has no gradient
    with respect to them takes token ids: without ``model.tokenizer`` it would be audited as continuous inputs and
    the gradient sections would fail inside torch. Refuse it, naming ``model.tokenizer``."""
    if not any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules()):
        return
    x = sample[:8].clone()
    if len(x) == 0 or not bool(((x >= 0) & (x == torch.round(x))).all()):
        return
    x.requires_grad_(True)
    try:
        with torch.enable_grad():
            out = select_output(call(x), key)
            if not out.requires_grad:
                gradient = None
            else:
                (gradient,) = torch.autograd.grad(out.float().sum(), x, allow_unused=True)
    except Exception:  # the probe already ran this model; a failure here decides nothing
        return
    if gradient is None:
        raise ConfigError("model.tokenizer", "the model embeds its inputs (it holds an nn.Embedding/EmbeddingBag) "
                          "and the data are whole numbers: token ids, with no gradient. Set model.tokenizer to the "
                          "tokenizer that made them (a tokenizers JSON file or a save_pretrained directory) so the "
                          "model is audited as a text model (docs/text.md)")


class HuggingFaceTextAdapter(TextModelAdapter):
    """A ``transformers`` sequence classifier: also records its architecture and its labels (``id2label``)."""

    def __init__(self, *args: Any, labels: list[str] | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels = labels

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["architecture"] = type(self.module).__name__
        out["labels"] = self.labels
        return out


def model_labels(module: nn.Module) -> list[str] | None:
    """The class names a transformers config gives (``id2label``), or None when they are the defaults LABEL_i."""
    id2label = getattr(getattr(module, "config", None), "id2label", None) or {}
    try:
        names = [str(id2label[i]) for i in range(len(id2label))]
    except KeyError:
        return None
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names


def check_label_order(model: object, class_names: list[str]) -> None:
    """A Hugging Face model whose config names its classes, audited on data with the same class names in another
    order, would be scored against the wrong labels: a ConfigError naming ``data.class_names``."""
    labels = getattr(model, "labels", None) if isinstance(model, HuggingFaceTextAdapter) else None
    if labels is None or len(labels) != len(class_names):
        return
    if sorted(n.lower() for n in labels) == sorted(n.lower() for n in class_names) and \
            [n.lower() for n in labels] != [n.lower() for n in class_names]:
        raise ConfigError("data.class_names", f"the model's config.json names its outputs {labels} (id2label) but "
                          f"the data's classes are {class_names} in that order: the labels would be scored against "
                          f"the wrong outputs. Set data.class_names: {labels}")


def load_tokenizer(config: ModelConfig) -> TextTokenizer | None:
    """The text model's tokenizer (``model.tokenizer``, else the ``model.huggingface`` directory's), or None for a
    model that is not a text model."""
    if config.tokenizer is not None:
        if config.factory is None and config.huggingface is None:
            raise ConfigError("model.tokenizer", "goes with model.huggingface or model.factory (a torch module taking "
                              "token ids and an attention mask); a TorchScript, ONNX or predict-function text model "
                              "is not audited (its token embedding cannot be reached)")
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
    if call_style == "positional" and takes_ids_only(module):
        module = IdsOnly(module)
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
    common: dict[str, Any] = {"embedding": embedding, "select": SelectOutput(output_key, kind, binary),
                              "call_style": call_style, "num_classes": num_classes, "output_kind": kind,
                              "device": device, "batch_size": batch_size, "source": source, "sha256": digest}
    if call_style == "transformers":
        return HuggingFaceTextAdapter(module, tokenizer, labels=model_labels(module), **common)
    return TextModelAdapter(module, tokenizer, **common)
