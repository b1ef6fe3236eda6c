"""Deletion and insertion curves over tokens (Petsiuk et al. 2018 on text, as in DeYoung et al. 2020's
comprehensiveness / sufficiency): a text's content tokens (not padding, not special tokens) are replaced by the
padding token most important first (deletion) or restored into an all-padding text most important first
(insertion), and the model's probability of the explained class is followed. A padded token is outside the
attention mask, so the model no longer sees it. The reference is a random order of the same tokens (keyed per
sample), and ``explain.faithfulness.rank_faithfulness`` ranks the methods as it does for images and tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from explain.faithfulness import RANDOM, FaithfulnessCurves
from explain.seeds import sample_rng

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter, TextTokenizer


def content_mask(adapter: TextModelAdapter, ids: np.ndarray) -> np.ndarray:
    """(n, L) bool: the positions holding a token of the text (not padding, not a special token; the unknown-word
    token is content)."""
    ids = np.asarray(ids, np.int64)
    tokenizer = adapter.tokenizer
    special = (tokenizer.special_ids | {tokenizer.pad_id}) - {_unknown_id(tokenizer)}
    return ~np.isin(ids, np.array(sorted(special), np.int64))


def _unknown_id(tokenizer: TextTokenizer) -> int | None:
    """The unknown-word token stands for a word of the text: it is content, not a special token."""
    backend = tokenizer.backend
    if tokenizer.is_transformers:
        found = getattr(backend, "unk_token_id", None)
        return None if found is None else int(found)
    name = getattr(backend.model, "unk_token", None)
    found = backend.token_to_id(name) if isinstance(name, str) else None
    return None if found is None else int(found)


def _orders(values: np.ndarray, content: np.ndarray) -> list[np.ndarray]:
    """Per row, the content positions most important (largest attribution toward the class) first; ties keep the
    text's order."""
    out = []
    for row, keep in zip(values, content, strict=True):
        positions = np.flatnonzero(keep)
        out.append(positions[np.argsort(-row[positions], kind="stable")])
    return out


def token_curves(adapter: TextModelAdapter, ids: np.ndarray, target: np.ndarray, values: dict[str, np.ndarray], *,
                 steps: int, seed: int, sample_ids: np.ndarray) -> dict[str, FaithfulnessCurves]:
    """Every method's deletion and insertion curves, plus the random order's (``RANDOM``), over ``steps + 1``
    fractions of each text's content tokens."""
    ids = np.asarray(ids, np.int64)
    pad = adapter.tokenizer.pad_id
    content = content_mask(adapter, ids)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    orders = {m: _orders(v, content) for m, v in values.items()}
    orders[RANDOM] = [sample_rng(seed, RANDOM, int(i)).permutation(np.flatnonzero(keep))
                      for i, keep in zip(sample_ids, content, strict=True)]
    rows: list[np.ndarray] = []
    for method in orders:
        for order, row, keep in zip(orders[method], ids, content, strict=True):
            empty = np.where(keep, pad, row)
            for fraction in fractions:
                top = order[: round(float(fraction) * len(order))]
                deleted = row.copy()
                deleted[top] = pad
                inserted = empty.copy()
                inserted[top] = row[top]
                rows += [deleted, inserted]
    logits = adapter.logits(np.stack(rows).astype(np.float32))
    proba = torch.softmax(logits.double(), dim=1).numpy()
    n, k = len(ids), len(fractions)
    grid = proba.reshape(len(orders), n, k, 2, -1)  # (method, sample, fraction, deletion/insertion, class)
    out = {}
    for j, method in enumerate(orders):
        chosen = grid[j][np.arange(n), :, :, np.asarray(target, np.int64)]  # (n, k, 2)
        out[method] = FaithfulnessCurves(fractions, chosen[:, :, 0], chosen[:, :, 1])
    return out
