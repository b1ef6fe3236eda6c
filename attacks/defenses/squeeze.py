"""Feature squeezing (Xu, Evans & Qi, NDSS 2018): bit-depth reduction and median smoothing.

Both shrink the input space an attacker can use. Bit depth rounds each feature to ``2**bits`` levels of the input
range (round: zero gradient, so naive gradient attacks fail while BPDA walks straight through it); median
smoothing replaces each pixel by the median of its ``size x size`` window (differentiable almost everywhere).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from attacks.defenses.base import Defense


class BitDepth(Defense):
    """Bit-depth reduction: each feature rounded to 2**bits levels of the input range (feature squeezing)."""

    name = "bit_depth"
    differentiable = False

    def __init__(self, *, bits: int = 3) -> None:
        super().__init__()
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be between 1 and 16, got {bits}")
        self.bits = bits

    def requirements(self) -> tuple[str, ...]:
        return ("bounded",)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        span = self.upper - self.lower
        unit = ((x - self.lower) / span).clamp(0, 1)
        return torch.round(unit * levels) / levels * span + self.lower

    def settings(self) -> dict[str, object]:
        return {**super().settings(), "bits": self.bits}


class MedianSmoothing(Defense):
    """Median smoothing: each pixel replaced by the median of its size x size window (feature squeezing)."""

    name = "median"
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, *, size: int = 2) -> None:
        super().__init__()
        if not 2 <= size <= 7:
            raise ValueError(f"size must be between 2 and 7, got {size}")
        self.size = size

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        k = self.size
        n, c, h, w = x.shape
        # window [i - (k-1)//2, i + k//2], edges reflected (the 2x2 window of the paper reaches right and down)
        padded = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect")
        patches = F.unfold(padded, kernel_size=k)  # (n, c*k*k, h*w)
        patches = patches.reshape(n, c, k * k, h * w)
        return patches.median(dim=2).values.reshape(n, c, h, w)

    def settings(self) -> dict[str, object]:
        return {**super().settings(), "size": self.size}
