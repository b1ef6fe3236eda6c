"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Images are (N, C, H, W) in [0, 1]. Parameters per severity are the reference's (Hendrycks & Dietterich 2019,
as ``imagecorruptions`` implements them); lengths in pixels (radii, sigmas, shuffle distances) are multiplied
by ``scale`` (1 for images of at least 32 pixels a side; docs/shift.md). Zoom blur has no length in pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from audit.shift.filters import clipped_zoom, filter2d, gaussian
from audit.shift.filters import motion_blur as _motion
from audit.shift.sampling import SampleRng

DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, anti-alias sigma
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shuffle distance, iterations
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma of the one-sided kernel
MOTION_ANGLE = (-45.0, 45.0)  # degrees, uniform per image
ZOOM_RANGES = ((1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02), (1.0, 1.26, 0.02), (1.0, 1.31, 0.03))
GAUSSIAN_SIGMA = (1, 2, 3, 4, 6)
DISK_SUPPORT = 8  # the reference's disk kernel spans -8..8 pixels unless the radius is larger


def scaled_length(value: float, scale: float) -> int:
    """A whole number of pixels: ``value * scale`` rounded, at least 1 (0 would switch the corruption off)."""
    return max(1, round(value * scale))


def disk_kernel(radius: float, alias_blur: float, support: float = DISK_SUPPORT) -> np.ndarray:
    """The reference's defocus kernel: a disk of ``radius`` on the integer grid -support..support (-radius..radius
    when larger), normalized, then blurred by a 3x3 (5x5 for the larger radius) Gaussian of sigma ``alias_blur``
    with OpenCV's reflect-101 borders (``cv2.GaussianBlur`` on the kernel)."""
    half, ksize = (math.ceil(radius), 5) if radius > support else (math.ceil(support), 3)
    grid = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    g = np.exp(-(taps**2) / (2 * alias_blur**2))
    g /= g.sum()
    blurred = filter2d(torch.as_tensor(disk)[None, None], np.outer(g, g), mode="reflect101")
    return blurred[0, 0].numpy()


def defocus_blur(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    radius, alias = DEFOCUS[severity - 1]
    kernel = disk_kernel(radius * scale, alias * scale, DISK_SUPPORT * scale)
    return filter2d(x, kernel, mode="reflect101").clamp(0, 1)


def glass_sources(offsets: torch.Tensor, height: int, width: int, d: int) -> torch.Tensor:
    """Where each pixel comes from after one pass of the reference's local shuffle, as flat indices (N, H*W).

    The reference walks rows h = H-d .. d+1 and columns w = W-d .. d+1 (both downwards) and, at each, writes the
    pixel at (h + dy, w + dx) into (h, w) (its tuple "swap" aliases numpy views, so it copies one way). A pixel
    read there was already written when it comes earlier in that walk (a larger raster index inside the walked
    block), so each pixel's final source is found by following those links: pointer doubling, all at once.
    ``offsets``: (N, rows, cols, 2) of (dx, dy) in walk order."""
    n = offsets.shape[0]
    device = offsets.device
    hs = torch.arange(height - d, d, -1, device=device)
    ws = torch.arange(width - d, d, -1, device=device)
    p = (hs[:, None] * width + ws[None, :]).reshape(-1)  # walked positions, flat
    q_h = hs[None, :, None] + offsets[..., 1]
    q_w = ws[None, None, :] + offsets[..., 0]
    q = (q_h * width + q_w).reshape(n, -1)
    inside = (q_h > d) & (q_h <= height - d) & (q_w > d) & (q_w <= width - d)
    earlier = inside.reshape(n, -1) & (q > p[None, :])  # written before p reads it
    total = height * width
    nxt = torch.arange(total, device=device).repeat(n, 1)
    res = nxt.clone()
    nxt[:, p] = torch.where(earlier, q, p[None, :].expand(n, -1))
    res[:, p] = q
    steps = max(1, math.ceil(math.log2(max(total, 2))))
    for _ in range(steps):
        nxt = nxt.gather(1, nxt)
    return res.gather(1, nxt)


def glass_blur(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    sigma, delta, iterations = GLASS[severity - 1]
    sigma, d = sigma * scale, scaled_length(delta, scale)
    n, c, h, w = x.shape
    y = gaussian(x, sigma)
    rows, cols = max(h - 2 * d, 0), max(w - 2 * d, 0)
    offsets = rng.randint(-d, d, (iterations, rows, cols, 2)).to(x.device)
    if rows and cols:
        source = torch.arange(h * w, device=x.device).repeat(n, 1)
        for k in range(iterations):  # y_k[p] = y_{k-1}[src_k[p]]: compose from the first pass
            source = source.gather(1, glass_sources(offsets[:, k], h, w, d))
        flat = y.reshape(n, c, h * w)
        y = flat.gather(2, source[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)
    return gaussian(y, sigma).clamp(0, 1)


def motion_blur(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    radius, sigma = MOTION[severity - 1]
    angles = rng.uniform(*MOTION_ANGLE, ()).double().cpu().tolist()
    return _motion(x, scaled_length(radius, scale), sigma * scale, angles).clamp(0, 1)


def zoom_factors(severity: int) -> np.ndarray:
    start, stop, step = ZOOM_RANGES[severity - 1]
    return np.arange(start, stop, step)


def zoom_blur(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    h, w = x.shape[-2:]
    factors = zoom_factors(severity)
    out = torch.zeros_like(x)
    for factor in factors:
        out = out + clipped_zoom(x, float(factor))[..., :h, :w]
    return ((x + out) / (len(factors) + 1)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    return gaussian(x, GAUSSIAN_SIGMA[severity - 1] * scale).clamp(0, 1)

