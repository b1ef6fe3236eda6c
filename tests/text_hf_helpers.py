"""A Hugging Face sequence classifier for the text tests, built here from a config (nothing downloaded): a tiny BERT
(``BertForSequenceClassification``) with a WordPiece tokenizer trained locally with ``tokenizers`` on the fine-food
reviews of ``tests/text_helpers.py``, fine-tuned briefly and saved with ``save_pretrained`` to a directory (model
and tokenizer together). Built once per test session (``hf_problem``)."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from text_helpers import reviews

MAX_LENGTH = 48


@dataclass
class HFProblem:
    directory: Path  # save_pretrained: config, weights, tokenizer
    test_texts: list[str]
    test_y: np.ndarray
    class_names: list[str]


def wordpiece_tokenizer(texts: list[str], vocab_size: int = 3000):  # type: ignore[no-untyped-def]
    """A BERT-style ``BertTokenizerFast`` ([CLS] text [SEP], lower case) trained on ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return BertTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)


@functools.cache
def hf_problem(epochs: int = 3, n_test: int = 200) -> HFProblem:
    from transformers import BertConfig, BertForSequenceClassification

    from audit.data.base import split_indices, stratified_subset

    texts, y, names = reviews()
    train, test = split_indices(y, "train"), split_indices(y, "test")
    tokenizer = wordpiece_tokenizer([texts[i] for i in train])
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_LENGTH, num_labels=len(names),
                        pad_token_id=tokenizer.pad_token_id, id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    enc = tokenizer([texts[i] for i in train], truncation=True, max_length=MAX_LENGTH, padding="max_length",
                    return_tensors="pt")
    targets = torch.as_tensor(y[train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(32):
            optimizer.zero_grad()
            out = model(input_ids=enc["input_ids"][batch], attention_mask=enc["attention_mask"][batch],
                        labels=targets[batch])
            out.loss.backward()
            optimizer.step()
    model.eval()
    directory = Path(tempfile.mkdtemp(prefix="nnaudit-hf-")) / "tiny-bert"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    picked = test[stratified_subset(y[test], n_test, 0)]
    return HFProblem(directory, [texts[i] for i in picked], y[picked], names)
