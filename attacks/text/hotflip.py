"""HotFlip-style gradient-guided token substitution (Ebrahimi et al. 2018), beam of one.

On the model's token ids, each step takes the gradient ``g`` of the cross-entropy of the true label with respect
to the token embeddings (``TextModelAdapter.forward_embeddings``) and estimates, to first order, the loss change
of replacing the token at position ``i`` by vocabulary token ``v`` as ``(E[v] - E[ids_i]) . g_i``; the best
(position, token) pair is flipped, and the model is asked again. Stops at success or at the word budget
(``max_words_fraction`` of the sample's tokens; a position flips at most once). Never flipped: padding, special
tokens, stopwords, protected tokens and the pieces of a word split by WordPiece; never inserted: special tokens
and WordPiece continuations ("##ing").

The adversarial example is a token sequence. Its text is the original text with each flipped token's characters
(the tokenizer's offsets) replaced by the new token's decoding (the decoding of all ids where the tokenizer has
no offsets), labelled "detokenized" in the report; the success counted is the model's prediction on that text
tokenized again, so a flip that does not survive re-tokenization is not counted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attacks.text.base import SampleResult, TextAttack

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter


def decode(model: TextModelAdapter, ids: list[int]) -> str:
    """Token ids -> text with the tokenizer's own decoder (special tokens left out)."""
    backend = model.tokenizer.backend
    return str(backend.decode(ids, skip_special_tokens=True))


def token_spans(model: TextModelAdapter, text: str) -> list[tuple[int, int]] | None:
    """Character span of each token position of ``text`` (as ``encode`` places them); None when the tokenizer
    gives no offsets (a slow transformers tokenizer)."""
    tok = model.tokenizer
    try:
        if tok.is_transformers:
            enc = tok.backend(text, truncation=True, max_length=tok.max_length, return_offsets_mapping=True)
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        return [(int(a), int(b)) for a, b in tok.backend.encode(text).offsets[: tok.max_length]]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return None


def flipped_text(model: TextModelAdapter, text: str, ids: list[int], changed: list[int]) -> str:
    """The original text with each flipped token's characters replaced by the new token's text (so the words
    the model did not read, past ``max_length``, stay); the decoding of every token when there are no offsets."""
    spans = token_spans(model, text)
    if spans is None or any(p >= len(spans) or spans[p][1] <= spans[p][0] for p in changed):
        return decode(model, [i for i in ids if i != model.tokenizer.pad_id])
    out = text
    for p in sorted(changed, key=lambda q: -spans[q][0]):
        start, end = spans[p]
        new = decode(model, [ids[p]]).strip()
        # a space where the token touched other characters: the new token must not fuse with its neighbours
        left = " " if start > 0 and not out[start - 1].isspace() else ""
        right = " " if end < len(out) and not out[end].isspace() else ""
        out = out[:start] + left + new + right + out[end:]
    return out


class HotFlip(TextAttack):
    """HotFlip: gradient-guided token flips (first-order estimate over the embedding matrix), one per step."""

    name = "hotflip"
    description = "gradient-guided token substitution (HotFlip, first-order, beam 1)"
    unit = "token"
    needs_token_embeddings = True

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "max_edit_distance": "n/a (whole tokens)", "beam": 1,
                "estimate": "first-order: (E[v] - E[x_i]) . grad_i of the cross-entropy",
                "text": "detokenized flipped ids; success verified on the re-tokenized text"}

    def _blocked_tokens(self, model: TextModelAdapter) -> tuple[np.ndarray, np.ndarray]:
        """(vocab,) bool: tokens never flipped (stopwords, protected, special, padding); tokens never inserted."""
        cached = getattr(self, "_blocked", None)
        if cached is not None and cached[0] is model:
            return cached[1], cached[2]
        tok = model.tokenizer
        vocab = int(model.embedding_matrix.shape[0])
        strings = [t if t is not None else "" for t in _id_to_tokens(model, vocab)]
        c = self.constraints
        special = np.zeros(vocab, bool)
        special[[i for i in tok.special_ids if i < vocab]] = True
        special[tok.pad_id] = True
        keep = np.array([not c.modifiable(s.lstrip("#Ġ▁")) for s in strings]) | special
        # WordPiece continuations ("##ing"): never inserted, and a word split into pieces is never flipped (a
        # piece swapped inside a word makes another word, which re-tokenizes to other pieces)
        self._pieces = np.array([s.startswith("##") for s in strings])
        self._blocked = (model, keep, special | self._pieces)
        return keep, special | self._pieces

    def attack_one(self, model: TextModelAdapter, text: str, label: int, row: int) -> SampleResult:
        import torch
        import torch.nn.functional as F

        keep, special = self._blocked_tokens(model)  # also sets self._pieces
        ids = torch.as_tensor(model.tokenizer.encode([text])[:1], dtype=torch.long, device=model.device)
        original = ids.clone()
        real = np.flatnonzero(ids[0].cpu().numpy() != model.tokenizer.pad_id)
        n_tokens = len(real)
        limit = self.constraints.max_changes(n_tokens)
        matrix = model.embedding_matrix
        target = torch.tensor([label], device=model.device)
        no_insert = torch.as_tensor(special, device=model.device)
        changed: list[int] = []
        queries = 0
        for _ in range(limit):
            now = ids[0].cpu().numpy()
            frozen = keep[now] | self._pieces[now] | np.append(self._pieces[now][1:], False)
            frozen[changed] = True
            if frozen.all():
                break
            emb = model.embed(ids).requires_grad_(True)
            logits = model.forward_embeddings(ids, emb)
            queries += 1
            if int(logits.argmax(dim=1)) != label:
                break
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, target), emb)
            g = grad[0]  # (L, D)
            gain = g @ matrix.T - (g * matrix[ids[0]]).sum(dim=1, keepdim=True)  # (L, V)
            gain[torch.as_tensor(frozen, device=gain.device)] = -torch.inf
            gain[:, no_insert] = -torch.inf
            gain[torch.arange(len(g), device=gain.device), ids[0]] = -torch.inf
            flat = int(torch.argmax(gain))
            pos, token = divmod(flat, gain.shape[1])
            if not torch.isfinite(gain[pos, token]):
                break
            ids[0, pos] = token
            changed.append(pos)
        adversarial = flipped_text(model, text, ids[0].tolist(), changed)
        proba = torch.softmax(model.text_logits([adversarial]).double(), dim=1)[0].numpy()
        queries += 1
        again = model.tokenizer.encode([adversarial])[0]
        same = bool(np.array_equal(again, ids[0].cpu().numpy()))
        tokens = model.tokens(np.stack([original[0].cpu().numpy(), ids[0].cpu().numpy()]))
        return SampleResult(original=text, adversarial=adversarial, success=int(np.argmax(proba)) != label,
                            changed=sorted(changed), n_units=n_tokens, queries=queries,
                            proba=[float(p) for p in proba], unit="token", original_units=tokens[0],
                            adversarial_units=tokens[1],
                            note="" if same else "the detokenized text tokenizes to other ids")


def _id_to_tokens(model: TextModelAdapter, vocab: int) -> list[str | None]:
    tok = model.tokenizer
    if tok.is_transformers:
        return list(tok.backend.convert_ids_to_tokens(list(range(vocab))))
    return [tok.backend.id_to_token(i) for i in range(vocab)]
