"""Embedding-space PGD: a bound, never text adversarial examples.

PGD (cross-entropy, L2 per token) on the token embeddings of the clean-correct samples, through
``TextModelAdapter.forward_embeddings``: every real (non-padding) token's embedding moves within an L2 ball of radius
``eps * r``, ``r`` the median L2 norm of the vocabulary's embeddings. No text corresponds to the perturbed
embeddings, so its numbers are reported apart from the text attacks, labelled as an upper bound on the attack
success rate (a lower bound on robust accuracy) of substitutions that stay within the ball; they never join the
worst case."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from audit.model.text import TextModelAdapter


@dataclass
class EmbeddingPGDResult:
    eps: float  # relative to the median embedding norm
    radius: float  # eps * median norm, in embedding units
    fooled: np.ndarray  # (N,) bool over the evaluated samples (False where not attacked)
    max_token_norm: float  # largest per-token perturbation norm used (<= radius)
    steps: int
    seconds: float


def embedding_pgd(model: TextModelAdapter, ids: np.ndarray, y: np.ndarray, rows: np.ndarray, *, eps: float,
                  steps: int = 20, batch_size: int = 64, seed: int = 0) -> EmbeddingPGDResult:
    """Attack ``ids[rows]`` (true labels ``y[rows]``) in embedding space; returns which rows were fooled."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    torch.manual_seed(seed)
    matrix = model.embedding_matrix
    radius = float(eps * matrix.norm(dim=1).median())
    step = 2.5 * radius / steps
    fooled = np.zeros(len(y), bool)
    biggest = 0.0
    for lo in range(0, len(rows), batch_size):
        batch = rows[lo: lo + batch_size]
        xb = torch.as_tensor(ids[batch], dtype=torch.long, device=model.device)
        yb = torch.as_tensor(y[batch], dtype=torch.long, device=model.device)
        clean = model.embed(xb)
        real = model.mask_of(xb).unsqueeze(-1).to(clean.dtype)
        delta = torch.zeros_like(clean)
        hit = torch.zeros(len(batch), dtype=torch.bool, device=clean.device)
        for _ in range(steps if radius > 0 else 0):
            delta.requires_grad_(True)
            logits = model.forward_embeddings(xb, clean + delta * real)
            hit |= logits.argmax(dim=1) != yb
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), delta)
            with torch.no_grad():
                grad = grad * real
                delta = delta + step * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                delta = delta * (radius / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        with torch.no_grad():
            final = (clean + delta.detach() * real)
            hit |= model.forward_embeddings(xb, final).argmax(dim=1) != yb
            biggest = max(biggest, float((delta.detach() * real).norm(dim=-1).max()))
        fooled[batch] = hit.cpu().numpy()
    return EmbeddingPGDResult(eps=eps, radius=radius, fooled=fooled, max_token_norm=biggest, steps=steps,
                              seconds=time.perf_counter() - start)


def settings(result: EmbeddingPGDResult) -> dict[str, Any]:
    return {"eps": result.eps, "radius": result.radius, "steps": result.steps, "loss": "ce",
            "ball": "L2 per real token, radius eps x median embedding norm"}
