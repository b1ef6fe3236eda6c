"""Square attack (Andriushchenko et al., ECCV 2020), L-inf and L2, score-based: needs only the model's scores.

As in the paper and AutoAttack's implementation: the margin loss (true logit minus the best other), a proposal per
query accepted when it lowers the margin, ``p_init = 0.8`` (AutoAttack's) and the paper's piecewise schedule (p
halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries, rescaled to the budget); the
window side is ``round(sqrt(p * h * w))``. L-inf starts from vertical stripes of +-eps (one sign per column and
channel) and sets a random square window to +-eps per channel; L2 starts from a grid of windows each holding the
paper's centred pattern (nested squares weighted 1/(k+1)^2, top half minus bottom half) with a random sign per
channel, scaled to norm eps, and each query moves the perturbation's mass from a second window into a new pattern in
the first (side at least 3, odd), keeping the norm at eps. Windows and signs are drawn per sample (the reference
draws one window per batch), their corners over all h - side + 1 positions: the reference code draws from
[0, h - side), so its windows never reach the last row or column, which weakens it on small images
(``reference_positions=True`` draws as it does, for parity checks: benchmarks/blackbox.py). Tabular data: the
window is a random subset of the perturbable features. Samples leave as soon as they are misclassified; the query
at which each one was fooled is recorded (``query_counts``), which gives the per-query success curve.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from attacks.base import Attack, AttackError, Domain, Forward, Norm, batch_view, flat_norm, margin_loss

# Points of the 10,000-query schedule of the paper after which the window share p halves.
HALVING_AT = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(p_init: float, query: int, queries: int) -> float:
    """p at ``query``: p_init halved after each schedule point (rescaled to ``queries``)."""
    scaled = int(query / queries * 10_000)
    return p_init / 2 ** sum(scaled > h for h in HALVING_AT)


def _rectangle(a: int, b: int) -> torch.Tensor:
    """An a x b block of nested rectangles around its centre, the k-th weighted 1 / (k + 1)^2, unit L2 norm."""
    block = torch.zeros(a, b)
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        block[max(ca - k, 0) : min(ca + k + 1, a), max(cb - k, 0) : min(cb + k + 1, b)] += 1.0 / (k + 1) ** 2
    return block / block.pow(2).sum().sqrt().clamp_min(1e-12)


def l2_pattern(s: int) -> torch.Tensor:
    """The paper's s x s L2 window: the top half's rectangles minus the bottom half's, unit L2 norm."""
    top = s // 2
    parts = [t for t in (_rectangle(top, s) if top else None, -_rectangle(s - top, s)) if t is not None]
    pattern = torch.cat(parts)
    return pattern / pattern.pow(2).sum().sqrt().clamp_min(1e-12)


class Square(Attack):
    """Random-search attack on the margin loss; ``queries`` model calls per sample at most (plus the start)."""

    name = "square"
    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")
    needs_gradients = False

    def __init__(self, *, norm: Norm = "linf", queries: int = 5000, p_init: float = 0.8,
                 reference_positions: bool = False) -> None:
        super().__init__(norm=norm)
        # True: window corners drawn from [0, h - side) as the reference code does (never the last row or column;
        # for parity checks); False: from all h - side + 1 positions
        self.reference_positions = reference_positions
        if queries < 1 or not 0 < p_init <= 1:
            raise AttackError(f"square needs queries >= 1 and 0 < p_init <= 1, got {queries}, {p_init}")
        self.queries = queries
        self.p_init = p_init
        self._counts: torch.Tensor | None = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.queries, "step_size": "eps (random squares)",
                "restarts": 1, "random_start": True, "loss": "margin", "p_init": self.p_init,
                "reference_positions": self.reference_positions,
                "schedule": "Andriushchenko et al. 2020 (rescaled to the budget)"}

    def queries_per_sample(self) -> int:
        return self.queries + 1

    def query_counts(self) -> torch.Tensor | None:
        """Per sample of the last batch: the query that fooled it (the start is query 1), inf when none did."""
        counts, self._counts = self._counts, None
        return counts

    def _scores(self, forward: Forward, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            logits = forward(x)
        return margin_loss(logits, y) if target is None else -margin_loss(logits, target)

    def _attack_batch(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float | None,
                      domain: Domain, target: torch.Tensor | None) -> torch.Tensor:
        assert eps is not None  # checked by Attack.__call__
        n = x.shape[0]
        # draws on the model's device: no host-to-device copy per query (seeded from the global stream)
        gen = torch.Generator(device=x.device).manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        step = _Steps(x, eps, domain, gen, self.norm, reference_positions=self.reference_positions)
        best = domain.project(x + step.start(), x, eps, self.norm)
        score = self._scores(forward, best, y, target)  # > 0: fooled
        counts = torch.full((n,), math.inf, device=x.device)
        counts[score > 0] = 1
        active = torch.nonzero(score <= 0).squeeze(1)
        for q in range(self.queries):
            if active.numel() == 0:
                break
            xa, cur = x[active], best[active]
            p = window_share(self.p_init, q, self.queries)
            proposal = domain.project(xa + step.propose(cur - xa, p), xa, eps, self.norm)
            new = self._scores(forward, proposal, y[active], None if target is None else target[active])
            better = new > score[active]
            best[active] = torch.where(batch_view(better, proposal), proposal, cur)
            score[active] = torch.where(better, new, score[active])
            won = score[active] > 0
            counts[active[won]] = q + 2
            active = active[~won]
        self._counts = counts
        return best


class _Steps:
    """Square's start and proposals for one batch (perturbations ``delta`` relative to ``x``)."""

    def __init__(self, x: torch.Tensor, eps: float, domain: Domain, gen: torch.Generator, norm: Norm, *,
                 reference_positions: bool = False) -> None:
        self.x, self.eps, self.gen, self.norm = x, eps, gen, norm
        self.last = 0 if reference_positions else 1  # corners in [0, h - side + last)
        self.image = x.ndim == 4
        self.mask = domain.mask
        self.pert_idx = (torch.ones(x[0].numel(), dtype=torch.bool, device=x.device) if domain.mask is None
                         else domain.mask.reshape(-1).bool()).nonzero().squeeze(1)

    def signs(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=self.gen, device=self.x.device).float() * 2 - 1

    def start(self) -> torch.Tensor:
        x, eps, n = self.x, self.eps, self.x.shape[0]
        if self.norm == "linf":
            if self.image:
                c, h, w = x.shape[1:]
                return eps * self.signs((n, c, 1, w)).expand(n, c, h, w)
            return eps * self.signs(tuple(x.shape))
        if self.image:
            c, h, w = x.shape[1:]
            s = max(h // 5, 1)
            delta = torch.zeros_like(x)
            pattern = l2_pattern(s).to(x.device)
            off_h, off_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
            for i in range(h // s):
                for j in range(w // s):
                    r, col = off_h + i * s, off_w + j * s
                    delta[:, :, r : r + s, col : col + s] += pattern * self.signs((n, c, 1, 1))
        else:
            delta = self.signs(tuple(x.shape))
        if self.mask is not None:
            delta = delta * self.mask
        return eps * delta / batch_view(flat_norm(delta, "l2").clamp_min(1e-12), delta)

    def windows(self, m: int, p: float, *, least: int = 1) -> tuple[torch.Tensor, int]:
        """(m, *shape) bool masks of random windows (images: squares of side round(sqrt(p h w)), the same in every
        channel; tabular: round(p d) perturbable features) and the side (the count for tabular)."""
        x, gen = self.x, self.gen
        if self.image:
            c, h, w = x.shape[1:]
            side = max(least, min(h, w, round((p * h * w) ** 0.5)))
            side = min(side + (1 - side % 2) * (least > 1), h, w)  # L2: odd sides, as in the paper
            top = torch.randint(0, max(h - side + self.last, 1), (m,), generator=gen, device=x.device)
            left = torch.randint(0, max(w - side + self.last, 1), (m,), generator=gen, device=x.device)
            rows, cols = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
            in_r = (rows >= top[:, None]) & (rows < top[:, None] + side)
            in_c = (cols >= left[:, None]) & (cols < left[:, None] + side)
            self._corner = (top, left)
            return (in_r[:, :, None] & in_c[:, None, :])[:, None].expand(m, c, h, w), side
        k = max(1, round(p * self.pert_idx.numel()))
        choose = torch.rand(m, self.pert_idx.numel(), generator=gen, device=x.device).argsort(dim=1)[:, :k]
        flat = torch.zeros(m, x[0].numel(), dtype=torch.bool, device=x.device)
        flat.scatter_(1, self.pert_idx[choose], True)
        return flat.reshape(m, *x.shape[1:]), k

    def propose(self, delta: torch.Tensor, p: float) -> torch.Tensor:
        m = delta.shape[0]
        if self.norm == "linf":
            window, _ = self.windows(m, p)
            shape = (m, delta.shape[1], 1, 1) if self.image else tuple(delta.shape)
            return torch.where(window, (self.eps * self.signs(shape)).expand_as(delta), delta)
        window, side = self.windows(m, p, least=3 if self.image else 1)
        if self.image:
            top, left = self._corner
            h, w = delta.shape[2:]
            pattern = l2_pattern(side).to(delta.device)
            if bool(torch.rand(1, generator=self.gen, device=delta.device) > 0.5):
                pattern = pattern.T
            ri = (torch.arange(h, device=delta.device)[None, :] - top[:, None]).clamp(0, side - 1)
            ci = (torch.arange(w, device=delta.device)[None, :] - left[:, None]).clamp(0, side - 1)
            fresh = pattern[ri[:, :, None], ci[:, None, :]][:, None] * self.signs((m, delta.shape[1], 1, 1))
            dims: tuple[int, ...] = (2, 3)
        else:
            fresh = self.signs(tuple(delta.shape))
            dims = tuple(range(1, delta.ndim))
        fresh = torch.where(window, fresh, torch.zeros_like(fresh))
        second, _ = self.windows(m, p, least=3 if self.image else 1)
        inside = torch.where(window, delta, torch.zeros_like(delta))
        image_norm = flat_norm(delta, "l2")
        both = window | second
        window_norm = flat_norm(torch.where(both, delta, torch.zeros_like(delta)), "l2")
        fresh = fresh / fresh.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)
        fresh = fresh + inside / inside.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)
        channels = delta.shape[1] if self.image else 1
        budget = ((self.eps**2 - image_norm**2).clamp_min(0) / channels + window_norm**2).sqrt()
        fresh = fresh / fresh.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)
        fresh = torch.where(window, fresh, torch.zeros_like(fresh)) * batch_view(budget, fresh)
        moved = torch.where(second, torch.zeros_like(delta), delta)
        moved = torch.where(window, fresh, moved)
        if self.mask is not None:
            moved = moved * self.mask
        return self.eps * moved / batch_view(flat_norm(moved, "l2").clamp_min(1e-12), moved)
