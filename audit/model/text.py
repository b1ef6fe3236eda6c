"""Text models: a tokenizer from a local directory or a ``tokenizers`` file, and ``TextModelAdapter``, which runs a
torch module that takes token ids and an attention mask (a ``transformers`` sequence classifier among them).

The audited inputs of text data are token ids (``AuditData.x``, float32, padded with ``pad_id``; the attention mask
is ``ids != pad_id``), so the sections that only need predictions (performance, imbalance, fairness) run on text as
on any data. What text sections need beyond that: ``encode`` (texts -> ids), ``text_logits`` (texts -> logits, for
attacks that edit words and for lime/shap text maskers), ``tokens`` (ids -> token strings, for heatmaps), and, for
gradient-guided attacks and Layer Integrated Gradients, the token ``embedding`` module with ``forward_embeddings``
(logits from embeddings that carry gradients) and ``embedding_matrix``. Token ids themselves have no gradient:
``has_gradients`` is False, so L-p attacks and input-gradient explainers never run on them.

``transformers`` and ``tokenizers`` are imported only when a text model is loaded (the ``text`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.errors import ConfigError, ModelError
from audit.model.base import ModelAdapter
from audit.model.loading import state_sha256
from audit.model.outputs import SelectOutput


class TextTokenizer:
    """One interface over a ``transformers`` tokenizer (a directory saved with ``save_pretrained``) and a
    ``tokenizers.Tokenizer`` (a JSON file): fixed-length ids padded with ``pad_id``, truncated at ``max_length``."""

    def __init__(self, backend: Any, *, max_length: int, source: str) -> None:
        self.backend = backend
        self.max_length = max_length
        self.source = source
        self.is_transformers = not _is_tokenizers_object(backend)
        if self.is_transformers:
            pad = backend.pad_token_id
            self.vocab_size = len(backend)
            self.special_ids = frozenset(int(i) for i in backend.all_special_ids)
        else:
            vocab = backend.get_vocab(with_added_tokens=True)
            pad = next((vocab[t] for t in ("[PAD]", "<pad>", "<PAD>", "[pad]") if t in vocab), None)
            self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
            self.special_ids = frozenset(int(v) for k, v in vocab.items() if k.startswith(("[", "<")) and
                                         k.endswith(("]", ">")))
        if pad is None:
            raise ConfigError("model.tokenizer", f"the tokenizer at {source} has no padding token ([PAD] or <pad>); "
                              "add one (tokenizer.pad_token = ...) and save it again")
        self.pad_id = int(pad)

    @classmethod
    def from_path(cls, path: str | Path, *, max_length: int, key: str = "model.tokenizer") -> TextTokenizer:
        """A tokenizers JSON file, or a directory a ``transformers`` tokenizer was saved to (read offline)."""
        path = Path(path)
        try:
            if path.is_file():
                from tokenizers import Tokenizer

                return cls(Tokenizer.from_file(str(path)), max_length=max_length, source=str(path))
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except ImportError as err:
            raise ConfigError(key, f"reading the tokenizer at {path} needs the text extra: "
                              "pip install \"nnaudit[text]\"") from err
        except (OSError, ValueError, Exception) as err:  # transformers/tokenizers raise many types for a bad file
            raise ConfigError(key, f"cannot read a tokenizer from {path}: {type(err).__name__}: {err}") from err
        return cls(backend, max_length=max_length, source=str(path))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids (N, max_length) int64, truncated and padded with ``pad_id``."""
        out = np.full((len(texts), self.max_length), self.pad_id, dtype=np.int64)
        if not len(texts):
            return out
        if self.is_transformers:
            rows = self.backend(list(texts), truncation=True, max_length=self.max_length,
                                padding=False)["input_ids"]
        else:
            rows = [enc.ids[: self.max_length] for enc in self.backend.encode_batch(list(texts))]
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = ids
        return out

    def tokens(self, ids: np.ndarray) -> list[list[str]]:
        """Token strings of each row, padding left out (for heatmaps and the adversarial-text view)."""
        rows = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)
        out = []
        for row in rows:
            kept = [int(i) for i in row if int(i) != self.pad_id]
            if self.is_transformers:
                out.append(list(self.backend.convert_ids_to_tokens(kept)))
            else:
                out.append([self.backend.id_to_token(i) or "" for i in kept])
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "vocab_size": self.vocab_size, "max_length": self.max_length,
                "pad_id": self.pad_id}


def _is_tokenizers_object(obj: Any) -> bool:
    return type(obj).__module__.startswith("tokenizers")


class _Replace:
    """A forward hook that swaps the embedding module's output for given embeddings (gradients flow to them)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        return self.value


class TextModelAdapter(ModelAdapter):
    """A torch module taking (token ids, attention mask), behind a tokenizer. ``call_style``: ``transformers``
    (``module(input_ids=..., attention_mask=...)``, logits from ``.logits``) or ``positional`` (``module(ids,
    mask)``)."""

    kind = "text"
    has_gradients = False  # not with respect to token ids; see has_embedding_gradients
    has_embedding_gradients = True

    def __init__(self, module: nn.Module, tokenizer: TextTokenizer, *, embedding: nn.Module, select: SelectOutput,
                 call_style: str, num_classes: int, output_kind: str, device: torch.device, batch_size: int,
                 source: str, sha256: str | None) -> None:
        super().__init__(num_classes=num_classes, output_kind=output_kind, bounds=None, device=device,
                         batch_size=batch_size, source=source, sha256=sha256)
        self.module = module.to(device).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.embedding = embedding
        # per-token embeddings to differentiate (HotFlip, embedding PGD, Layer IG): an nn.Embedding gives (N, L, D);
        # an nn.EmbeddingBag pools the tokens inside the layer, so no single token's embedding can be reached
        self.has_embedding_gradients = isinstance(embedding, nn.Embedding)
        self.select = select
        self.call_style = call_style
        self._replace = _Replace()
        embedding.register_forward_hook(self._replace)

    # -- token ids ---------------------------------------------------------------------------------------------
    def _call(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.call_style == "transformers":
            out = self.module(input_ids=ids, attention_mask=mask)
        else:
            out = self.module(ids, mask)
        return self.select(out)

    def mask_of(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.tokenizer.pad_id).long()

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.to(self.device).long()
        return self._call(ids, self.mask_of(ids))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> token ids as the audited data holds them (float32, padded)."""
        return self.tokenizer.encode(texts).astype(np.float32)

    def text_logits(self, texts: Sequence[str], *, batch_size: int | None = None) -> torch.Tensor:
        """Logits (CPU) of raw texts: tokenized as the audited data was."""
        return self.logits(self.encode(texts), batch_size=batch_size)

    def text_predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """For lime's LimeTextExplainer and shap's text masker: ``f(list of str) -> probabilities`` (float64)."""
        return torch.softmax(self.text_logits(list(texts)).double(), dim=1).numpy()

    def tokens(self, ids: np.ndarray) -> list[list[str]]:
        return self.tokenizer.tokens(ids)

    # -- embeddings (gradient-guided attacks, Layer IG) --------------------------------------------------------
    @property
    def embedding_matrix(self) -> torch.Tensor:
        """(vocab, dim) token embeddings, on the device, detached."""
        weight = getattr(self.embedding, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelError("the embedding module has no weight matrix; set model.embedding_layer to an "
                             "nn.Embedding")
        return weight.detach()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, L, D) of ids, as the model's embedding module computes them (detached)."""
        with torch.no_grad():
            return self.embedding(ids.to(self.device).long()).detach()

    def forward_embeddings(self, ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits with ``embeddings`` (N, L, D) in place of the embedding module's output for ``ids``: gradients
        flow to ``embeddings`` (the model's weights stay frozen)."""
        ids = ids.to(self.device).long()
        self._replace.value = embeddings
        try:
            return self._call(ids, self.mask_of(ids))
        finally:
            self._replace.value = None

    def _weights_sha256(self) -> str:
        return state_sha256(self.module)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["num_parameters"] = int(sum(p.numel() for p in self.module.parameters()))
        out["tokenizer"] = self.tokenizer.describe()
        out["input_kind"] = "tokens"
        return out


def find_embedding(module: nn.Module, name: str | None) -> nn.Module:
    """The token embedding module: ``name`` (dotted), a transformers model's input embeddings, or the only
    ``nn.Embedding`` in the module."""
    if name is not None:
        try:
            found = module.get_submodule(name)
        except AttributeError as err:
            raise ConfigError("model.embedding_layer", f"the model has no module '{name}'") from err
        return found
    getter: Callable[[], Any] | None = getattr(module, "get_input_embeddings", None)
    if getter is not None:
        found = getter()
        if isinstance(found, nn.Module):
            return found
    embeddings = [m for m in module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if len(embeddings) != 1:
        raise ConfigError("model.embedding_layer", f"the model holds {len(embeddings)} embedding modules; name the "
                          "token embedding with model.embedding_layer (e.g. 'embed')")
    return embeddings[0]
