"""Square attack (Andriushchenko et al., ECCV 2020), L-inf, score-based: needs only the model's scores.

It starts from vertical stripes of +-eps, then per query proposes a random square window (images;
a random subset of perturbable features for tabular data) set to +-eps per channel and keeps it
when the margin loss drops. The window shrinks on the paper's schedule. Samples leave as soon as
they are misclassified. Models without gradients (PredictFunctionAdapter) can be attacked with it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from attacks.base import Attack, AttackError, Domain, Forward, Norm, batch_view, margin_loss

# Fractions of the 10,000-query schedule of the paper at which the window share p halves.
HALVING_AT = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(p_init: float, query: int, queries: int) -> float:
    """p at ``query``: p_init halved at each schedule point (rescaled to ``queries``)."""
    scaled = int(query / queries * 10_000)
    return p_init / 2 ** sum(scaled > h for h in HALVING_AT)


class Square(Attack):
    """Random-search L-inf attack on the margin loss; ``queries`` model calls per sample at most."""

    name = "square"
    norms: ClassVar[tuple[Norm, ...]] = ("linf",)
    needs_gradients = False

    def __init__(self, *, norm: Norm = "linf", queries: int = 1000, p_init: float = 0.05) -> None:
        super().__init__(norm=norm)
        if queries < 1 or not 0 < p_init <= 1:
            raise AttackError(f"square needs queries >= 1 and 0 < p_init <= 1, got {queries}, {p_init}")
        self.queries = queries
        self.p_init = p_init

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.queries, "step_size": "eps (random squares)",
                "restarts": 1, "random_start": True, "loss": "margin", "p_init": self.p_init}

    def queries_per_sample(self) -> int:
        return self.queries + 1

    def _scores(self, forward: Forward, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            logits = forward(x)
        return margin_loss(logits, y) if target is None else -margin_loss(logits, target)

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None) -> torch.Tensor:
        assert eps is not None  # checked by Attack.__call__
        image = x.ndim == 4
        n = x.shape[0]
        # draws on the model's device: no host-to-device copy per query (seeded from the global stream)
        gen = torch.Generator(device=x.device).manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))

        def signs(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.randint(0, 2, shape, generator=gen, device=x.device).float() * 2 - 1

        if image:
            c, h, w = x.shape[1:]
            init = signs((n, c, 1, w)).expand(n, c, h, w)
        else:
            init = signs(tuple(x.shape))
        best = domain.project(x + eps * init, x, eps, "linf")
        score = self._scores(forward, best, y, target)  # > 0: fooled
        active = torch.nonzero(score <= 0).squeeze(1)
        pert_idx = (torch.ones(x[0].numel(), dtype=torch.bool, device=x.device) if domain.mask is None
                    else domain.mask.reshape(-1).bool()).nonzero().squeeze(1)
        for q in range(self.queries):
            if active.numel() == 0:
                break
            m = active.numel()
            p = window_share(self.p_init, q, self.queries)
            xa, cur = x[active], best[active]
            delta = cur - xa
            if image:
                c, h, w = x.shape[1:]
                side = max(1, min(h, w, round((p * h * w) ** 0.5)))
                top = torch.randint(0, h - side + 1, (m,), generator=gen, device=x.device)
                left = torch.randint(0, w - side + 1, (m,), generator=gen, device=x.device)
                rows = torch.arange(h, device=x.device)[None, :]
                cols = torch.arange(w, device=x.device)[None, :]
                in_r = (rows >= top[:, None]) & (rows < top[:, None] + side)
                in_c = (cols >= left[:, None]) & (cols < left[:, None] + side)
                window = (in_r[:, :, None] & in_c[:, None, :])[:, None].expand(m, c, h, w)
                values = (eps * signs((m, c, 1, 1))).expand(m, c, h, w)
            else:
                k = max(1, round(p * pert_idx.numel()))
                choose = torch.rand(m, pert_idx.numel(), generator=gen, device=x.device).argsort(dim=1)[:, :k]
                flat = torch.zeros(m, x[0].numel(), dtype=torch.bool, device=x.device)
                flat.scatter_(1, pert_idx[choose], True)
                window = flat.reshape(xa.shape)
                values = eps * signs(tuple(xa.shape))
            proposal = domain.project(xa + torch.where(window, values, delta), xa, eps, "linf")
            new = self._scores(forward, proposal, y[active], None if target is None else target[active])
            better = new > score[active]
            best[active] = torch.where(batch_view(better, proposal), proposal, cur)
            score[active] = torch.where(better, new, score[active])
            active = active[score[active] <= 0]
        return best
