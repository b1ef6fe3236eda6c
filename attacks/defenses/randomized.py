"""A randomized transform: Gaussian noise on every input at inference (a fresh draw per call).

Randomness makes a single gradient a poor guide (stochastic gradients), which a naive attack reports as
robustness; EOT averages the gradient over draws and removes that effect (Athalye et al. 2018).
"""

from __future__ import annotations

import torch

from attacks.defenses.base import Defense


class GaussianNoise(Defense):
    """Gaussian noise added to every input at inference, clipped to the input bounds (a fresh draw per call)."""

    name = "gaussian_noise"
    randomized = True

    def __init__(self, *, sigma: float = 0.1) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.sigma * (self.upper - self.lower if self.bounded else 1.0) * torch.randn_like(x)
        return noisy.clamp(self.lower, self.upper) if self.bounded else noisy

    @property
    def bounded(self) -> bool:
        return bool(torch.isfinite(torch.tensor([self.lower, self.upper])).all())

    def settings(self) -> dict[str, object]:
        return {**super().settings(), "sigma": self.sigma}
