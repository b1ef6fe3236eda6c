"""The conformance check of text explainers (``input_kinds = ("tokens",)``): a small seeded text problem (a fixed
word-level vocabulary, ``audit.zoo.MeanPoolText`` with random weights, a dozen sentences) and the same contract as
the other explainers, on ``explain_texts``. Needs the text extra (``tokenizers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter

WORDS = ("the", "coffee", "tea", "was", "great", "bad", "not", "very", "good", "taste", "she", "he", "loved",
         "it", "again", "never")
SENTENCES = ("the coffee was great", "the tea was bad", "she loved it", "he never loved the taste",
             "not very good coffee", "the taste was very good again", "great tea", "bad bad coffee",
             "she never loved the tea", "he loved the coffee again", "it was not great", "very bad taste")
MAX_LENGTH = 12


def tiny_text_model(seed: int = 0) -> TextModelAdapter:
    """A random-weight token-id classifier (3 classes) behind a fixed word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from audit.model.outputs import SelectOutput
    from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding
    from audit.zoo import MeanPoolText

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = TextTokenizer(backend, max_length=MAX_LENGTH, source="audit.testing.text")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MeanPoolText(len(vocab), 3, dim=8, pad_id=0)
    return TextModelAdapter(module, tokenizer, embedding=find_embedding(module, None),
                            select=SelectOutput(None, "logits", False), call_style="positional", num_classes=3,
                            output_kind="logits", device=torch.device("cpu"), batch_size=64, source="tiny text",
                            sha256=None)


def check_text_explainer(explainer: Any, report: Any, fail: Any, *, params: dict[str, Any] | None, seed: int,
                         n: int) -> Any:
    """``explain_texts`` gives finite (n, max_length) attributions, zero at padding, deterministic for a seed and
    independent of the other texts explained with it. ``report`` and ``fail``: audit.testing.checks' Report and
    error factory (passed in, so this module does not import checks, which imports it)."""
    name = report.plugin
    adapter = tiny_text_model(seed)
    texts = list(SENTENCES[:n])
    ids = np.arange(100, 100 + n)
    target = adapter.predict(adapter.encode(texts))

    def build(batch_size: int) -> Any:
        defaults = explainer.section_defaults(batch_size=batch_size, seed=seed, background=None, modality="text",
                                              memory_mb=64.0)
        return explainer(adapter, **{**defaults, **(params or {})})

    values = build(n).explain_texts(texts, target, ids)
    padding = adapter.encode(texts) == adapter.tokenizer.pad_id
    if values.shape != (n, MAX_LENGTH) or not np.isfinite(values).all():
        raise fail("explainer", name, f"explain_texts must give finite ({n}, max_length={MAX_LENGTH}) attributions, "
                                      f"got {values.shape}")
    if np.abs(values[padding]).max(initial=0.0) > 0:
        raise fail("explainer", name, "padding tokens got attributions: they are not part of the text")
    report.passed.append("token attributions: shape, finite, zero at padding")
    again = build(n).explain_texts(texts, target, ids)
    if not np.allclose(again, values, rtol=1e-5, atol=1e-7):
        raise fail("explainer", name, f"not deterministic for a seed: two instances with seed {seed} differ by "
                                      f"{np.abs(again - values).max():.3g}")
    report.passed.append("deterministic for a seed")
    alone = build(n).explain_texts(texts[:1], target[:1], ids[:1])
    one_by_one = build(1).explain_texts(texts, target, ids)
    worst = max(np.abs(one_by_one - values).max(), np.abs(alone[0] - values[0]).max())
    scale = max(float(np.abs(values).max()), 1e-12)
    if worst > 1e-4 * scale:
        raise fail("explainer", name, f"a text's attributions depend on the other texts explained with it (up to "
                                      f"{worst:.3g}): key randomness per sample id (Explainer.row_seeds)")
    report.passed.append("batch independent")
    return report
