"""Text explainers: captum's Layer Integrated Gradients on the token embeddings, shap's Partition explainer with a
Text masker, lime's LimeTextExplainer. Each gives one attribution per token position of the model's padded ids
(padding and special tokens get 0), so their deletion / insertion curves (``explain.text_quality``) and heatmaps
share one layout.

shap and lime perturb strings. Both split the text at the model's own tokens (``TokenLayout``: the character spans
of the tokens the model sees, from the tokenizer's offsets), so a shap or lime feature is one model token: shap's
masker gets a tokenizer callable (``SpanTokenizer``) and lime a ``split_expression`` callable returning the token
substrings (``bow=False``: a feature per position). The explained string is the text up to the end of the last
token the model sees (after truncation at ``model.max_length``). The model function is
``TextModelAdapter.text_predict_proba``: strings in, probabilities out.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from explain.base import Explainer, ExplainerError, at_least

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter, TextTokenizer

NOT_TEXT = ("explainer '{method}' explains text models (token inputs); the model is {kind}: use it with a text "
            "model (model.huggingface, or model.tokenizer with a torch module)")


@dataclass
class TokenLayout:
    """The tokens the model sees in one text: the visible text, each content token's character span in it and its
    position in the padded id row (special tokens and padding are not content)."""

    text: str
    spans: list[tuple[int, int]]
    positions: np.ndarray  # (n_tokens,) int64
    ids: list[int]

    @property
    def substrings(self) -> list[str]:
        return [self.text[a:b] for a, b in self.spans]


def token_layout(tokenizer: TextTokenizer, text: str) -> TokenLayout:
    """The content tokens of ``text`` as ``tokenizer.encode`` pads and truncates it, with their character spans."""
    limit = tokenizer.max_length
    if tokenizer.is_transformers:
        if not getattr(tokenizer.backend, "is_fast", False):
            raise ExplainerError("shap and lime text explainers need token offsets: give a fast (Rust) tokenizer "
                                 "(tokenizer.json in model.huggingface / model.tokenizer)")
        enc = tokenizer.backend(text, truncation=True, max_length=limit, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
        ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    else:
        got = tokenizer.backend.encode(text)
        ids, offsets, special = got.ids[:limit], got.offsets[:limit], got.special_tokens_mask[:limit]
    keep = [i for i in range(len(ids)) if not special[i] and offsets[i][1] > offsets[i][0]
            and int(ids[i]) != tokenizer.pad_id]
    spans = [(int(offsets[i][0]), int(offsets[i][1])) for i in keep]
    end = max((b for _, b in spans), default=0)
    return TokenLayout(text[:end], spans, np.array(keep, np.int64), [int(ids[i]) for i in keep])


class SpanTokenizer:
    """The minimal Hugging Face tokenizer interface shap's Text masker needs (``input_ids`` and ``offset_mapping``
    of a string), splitting at the model's content tokens."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str, return_offsets_mapping: bool = False, **_: Any) -> dict[str, list[Any]]:
        found = token_layout(self.tokenizer, str(text))
        out: dict[str, list[Any]] = {"input_ids": found.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = found.spans
        return out


def lime_splitter(tokenizer: TextTokenizer) -> Any:
    """lime's ``split_expression`` callable: the model's token substrings of a string, in order."""
    return lambda text: token_layout(tokenizer, text).substrings


class TextExplainer(Explainer):
    """An explainer of text models: ``explain_texts(texts, target, ids)`` -> (n, max_length) per-token values."""

    needs_gradients = False  # token ids have none; Layer IG differentiates the embeddings
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens",)

    def __init__(self, adapter: Any, **kwargs: Any) -> None:
        if getattr(adapter, "kind", None) != "text":
            raise ExplainerError(NOT_TEXT.format(method=self.method, kind=getattr(adapter, "kind", "?")))
        super().__init__(adapter, **kwargs)
        self.text_adapter: TextModelAdapter = adapter
        self.seconds = 0.0

    def proba(self, texts: Any) -> np.ndarray:
        """Probabilities of strings (lime, shap), counted."""
        texts = [str(t) for t in texts]
        self.counter.add(len(texts))
        return self.text_adapter.text_predict_proba(texts)

    def explain_texts(self, texts: list[str], target: np.ndarray, ids: np.ndarray | None = None, *,
                      progress: Any = None) -> np.ndarray:
        """Per-token attributions (n, max_length) float64 toward each row's ``target`` class; ``ids`` key each
        row's random draws (default: row numbers). ``progress``: ``ctx.progress``, wrapped around the batches (one
        text each for shap and lime, which explain one at a time)."""
        target = np.asarray(target, np.int64).reshape(-1)
        if len(target) != len(texts):
            raise ExplainerError(f"{len(texts)} texts but {len(target)} targets; give one class per text")
        ids = np.arange(len(texts)) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        start = time.perf_counter()
        out = np.zeros((len(texts), self.text_adapter.tokenizer.max_length), np.float64)
        step = 1 if self.per_sample else self.batch_size
        starts: Any = range(0, len(texts), step)
        if progress is not None:
            starts = progress(starts, desc=f"explanations: {self.method}", total=len(starts), unit="batch")
        for lo in starts:
            self.batch_ids = ids[lo : lo + step]
            out[lo : lo + len(self.batch_ids)] = self._attribute_texts(texts[lo : lo + step], target[lo : lo + step])
        self.seconds += time.perf_counter() - start
        return out

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor | np.ndarray:
        raise ExplainerError(f"explainer '{self.method}' explains texts: call explain_texts")

    @abstractmethod
    def _attribute_texts(self, texts: list[str], target: np.ndarray) -> np.ndarray:
        """Per-token attributions (len(texts), max_length) of one batch; each method writes its own."""


class LayerIntegratedGradientsExplainer(TextExplainer):
    """captum's LayerIntegratedGradients on the token embedding module (``adapter.embedding``): from the padding
    token's embeddings to the text's, summed over the embedding dimension per token. Special tokens ([CLS], [SEP])
    keep their own embeddings in the baseline, so they get 0."""

    method = "layer_ig"

    def __init__(self, adapter: Any, *, n_steps: int = 32, internal_batch_size: int = 512, **kwargs: Any) -> None:
        at_least("n_steps", n_steps, 2)
        at_least("internal_batch_size", internal_batch_size, 1)
        super().__init__(adapter, **kwargs)
        if not self.text_adapter.has_embedding_gradients:
            raise ExplainerError("the model's token embedding pools the tokens inside the layer (nn.EmbeddingBag): "
                                 "no per-token attribution; use lime_text or shap_text")
        from captum.attr import LayerIntegratedGradients

        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.algorithm = LayerIntegratedGradients(self._forward_ids, self.text_adapter.embedding)

    def _forward_ids(self, ids: torch.Tensor) -> torch.Tensor:
        self.counter.add(ids.shape[0])
        return self.text_adapter._logits_batch(ids)

    def _attribute_texts(self, texts: list[str], target: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(self.text_adapter.tokenizer.encode(texts), device=self.adapter.device)
        return self.attribute_ids(ids, torch.as_tensor(target, device=self.adapter.device))

    def attribute_ids(self, ids: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """Attributions (n, L) of token ids (int64) toward ``target``."""
        from explain.text_quality import content_mask

        content = torch.as_tensor(content_mask(self.text_adapter, ids.cpu().numpy()), device=ids.device)
        baseline = torch.where(content, self.text_adapter.tokenizer.pad_id, ids)  # special tokens stay
        with torch.enable_grad():
            attr = self.algorithm.attribute(ids, baselines=baseline, target=target, n_steps=self.n_steps,
                                            internal_batch_size=max(len(ids), self.internal_batch_size))
        return np.asarray(attr.sum(dim=-1).detach().to("cpu", torch.float64).numpy())


class ShapTextExplainer(TextExplainer):
    """shap's Partition explainer (Owen values over the masker's token hierarchy) with a Text masker that splits
    at the model's tokens; a masked token becomes ``mask_token`` (shap's default '...')."""

    method = "shap_text"
    per_sample = True

    def __init__(self, adapter: Any, *, max_evals: int = 500, mask_token: str = "...",
                 collapse_mask_token: bool = True, **kwargs: Any) -> None:
        at_least("max_evals", max_evals, 10)
        super().__init__(adapter, **kwargs)
        import shap

        self.max_evals = max_evals
        tokenizer = SpanTokenizer(self.text_adapter.tokenizer)
        if not tokenizer(mask_token)["input_ids"]:
            raise ValueError(f"mask_token {mask_token!r} holds no token of the model's tokenizer; give a word or "
                             "punctuation mark")
        self.masker = shap.maskers.Text(tokenizer, mask_token=mask_token, collapse_mask_token=collapse_mask_token)
        self.explainer = shap.explainers.Partition(self.proba, self.masker)

    def _attribute_texts(self, texts: list[str], target: np.ndarray) -> np.ndarray:
        out = np.zeros((len(texts), self.text_adapter.tokenizer.max_length), np.float64)
        for row, (text, label) in enumerate(zip(texts, target, strict=True)):
            found = token_layout(self.text_adapter.tokenizer, text)
            if not found.spans:
                continue
            values = self.explainer([found.text], max_evals=self.max_evals, silent=True).values[0]
            out[row, found.positions] = np.asarray(values, np.float64)[: len(found.positions), int(label)]
        return out


class LimeTextExplainer(TextExplainer):
    """lime's LimeTextExplainer: a weighted linear surrogate over on/off model tokens (``bow=False``: a feature per
    position); a removed token becomes ``mask_string`` ('' deletes it)."""

    method = "lime_text"
    per_sample = True

    def __init__(self, adapter: Any, *, n_samples: int = 500, mask_string: str = "", kernel_width: float = 25.0,
                 **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 10)
        at_least("kernel_width", kernel_width, 1e-6)
        super().__init__(adapter, **kwargs)
        self.n_samples = n_samples
        self.mask_string = mask_string
        self.kernel_width = kernel_width
        self.splitter = lime_splitter(self.text_adapter.tokenizer)

    def _attribute_texts(self, texts: list[str], target: np.ndarray) -> np.ndarray:
        from lime.lime_text import LimeTextExplainer as Lime

        out = np.zeros((len(texts), self.text_adapter.tokenizer.max_length), np.float64)
        for row, (text, label) in enumerate(zip(texts, target, strict=True)):
            found = token_layout(self.text_adapter.tokenizer, text)
            if not found.spans:
                continue
            lime = Lime(kernel_width=self.kernel_width, split_expression=self.splitter, bow=False,
                        mask_string=self.mask_string, random_state=int(self.row_seeds()[row]))
            explanation = lime.explain_instance(found.text, self.proba, labels=(int(label),),
                                                num_features=len(found.spans), num_samples=self.n_samples)
            # a feature's token by where it starts in the text (lime's own segmentation, read back)
            indexed = explanation.domain_mapper.indexed_string
            starts = {a: k for k, (a, _) in enumerate(found.spans)}
            for feature, weight in explanation.as_map()[int(label)]:
                k = starts.get(int(indexed.string_position(feature)[0]))
                if k is not None:
                    out[row, found.positions[k]] = weight
        return out
