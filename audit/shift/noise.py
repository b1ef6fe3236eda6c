"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Images are (N, C, H, W) in [0, 1]; each pixel and channel gets its own draw, drawn in the reference's
(H, W, C) order. Parameters per severity 1-5 are the reference's (Hendrycks & Dietterich 2019). No length in
pixels is involved, so the image size changes nothing.
"""

from __future__ import annotations

import torch

from audit.shift.sampling import SampleRng

GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # std of the added noise, in units of the input range
SHOT_PHOTONS = (60, 25, 12, 5, 3)  # photons at full intensity: x -> Poisson(x * c) / c
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)  # share of values replaced by 0 or 1 (half each)
SPECKLE_STD = (0.15, 0.2, 0.35, 0.45, 0.6)  # x -> x + x * N(0, c^2)


def _hwc(draw: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) draws -> (N, C, H, W)."""
    return draw.permute(0, 3, 1, 2)


def _shape(x: torch.Tensor) -> tuple[int, int, int]:
    return int(x.shape[2]), int(x.shape[3]), int(x.shape[1])


def gaussian_noise(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    noise = _hwc(rng.normal(0.0, GAUSSIAN_STD[severity - 1], _shape(x))).to(x)
    return (x + noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    c = SHOT_PHOTONS[severity - 1]
    counts = _hwc(rng.poisson((x * c).permute(0, 2, 3, 1))).to(x)
    return (counts / float(c)).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    amount = IMPULSE_AMOUNT[severity - 1]
    flipped = _hwc(rng.uniform(0.0, 1.0, _shape(x))).to(x.device) <= amount
    salted = _hwc(rng.uniform(0.0, 1.0, _shape(x))).to(x.device) <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


def speckle_noise(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    noise = _hwc(rng.normal(0.0, SPECKLE_STD[severity - 1], _shape(x))).to(x)
    return (x + x * noise).clamp(0, 1)
