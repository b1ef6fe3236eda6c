"""Spatter: water drops (severities 1-3) or mud (4-5) over the image, the weather family's held-out corruption.

A smoothed Gaussian "liquid" field is thresholded into drops. Water drops get a shaded rim: the reference
(``imagecorruptions``) runs OpenCV's Canny edge detector on the drops, a chamfer distance transform to the edges
(5x5 mask, truncated at 20 pixels), a 3x3 mean, histogram equalization, an emboss kernel and another 3x3 mean;
the result, times the drop field, tints the image pale turquoise. Mud is the drop mask, smoothed, painted brown.
Each OpenCV step is written out here with OpenCV's integer arithmetic and borders, batched in torch.

Gaussian sigmas are lengths in pixels and follow ``scale``; the 3x3 kernels and the 20-pixel truncation stay.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from audit.shift.filters import LUMA_REFERENCE, filter2d, gaussian, luminance, pad
from audit.shift.sampling import SampleRng

# loc, scale of the liquid field, its smoothing sigma, drop threshold, rim strength / mud sigma, mud?
SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))
WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise (RGB)
MUD = (63 / 255, 42 / 255, 20 / 255)  # brown (RGB)
EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
CANNY_LOW, CANNY_HIGH = 50, 150
TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # tan(22.5 deg) in OpenCV's 15-bit fixed point
DIST_SHIFT = 16
DIST_WEIGHTS = tuple(round(float(np.float32(v)) * (1 << DIST_SHIFT)) for v in (1.0, 1.4, 2.1969))
DIST_CAP = 20


def _shift(t: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """t[..., i + dy, j + dx] (the neighbour at offset (dy, dx)), ``fill`` outside."""
    h, w = t.shape[-2:]
    out = torch.full_like(t, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = t[..., ys, xs]
    return out


def canny(img: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``Canny(img, 50, 150)`` (3x3 Sobel with replicated borders, L1 magnitude, 15-bit fixed-point
    non-maximum suppression, 8-connected hysteresis) on (N, 1, H, W) integers 0..255; a bool edge map."""
    x = pad(img.double(), 1, 1, 1, 1, "edge")
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64, device=img.device)
    dx = F.conv2d(x, gx[None, None]).round().to(torch.int64)
    dy = F.conv2d(x, gx.t().contiguous()[None, None]).round().to(torch.int64)
    mag = dx.abs() + dy.abs()
    ax, ay = dx.abs(), dy.abs() << 15
    tg22x = ax * TG22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    s = torch.where((dx ^ dy) < 0, -1, 1)

    def at(dy_: int, dx_: int) -> torch.Tensor:
        return _shift(mag, dy_, dx_, 0)

    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(s < 0, (mag > at(-1, 1)) & (mag > at(1, -1)), (mag > at(-1, -1)) & (mag > at(1, 1)))
    maximum = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    candidate = maximum & (mag > CANNY_LOW)
    return hysteresis(candidate, candidate & (mag > CANNY_HIGH))


def hysteresis(candidate: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """The candidates 8-connected (within one image) to a strong pixel: SciPy's component labelling on the CPU."""
    from scipy import ndimage

    mask = candidate.reshape(-1, *candidate.shape[-2:]).cpu().numpy()
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected in the image plane, never across images
    labels, _ = ndimage.label(mask, structure=structure)
    keep = np.unique(labels[strong.reshape(mask.shape).cpu().numpy()])
    edges = np.isin(labels, keep[keep > 0])
    return torch.as_tensor(edges, device=candidate.device).reshape(candidate.shape)


def distance_to(zero: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``distanceTransform(..., DIST_L2, 5)`` (chamfer weights 1, 1.4, 2.1969 in 16-bit fixed point) to the
    ``zero`` pixels of (N, 1, H, W), truncated at 20 pixels (all the reference keeps); float64."""
    big = (DIST_CAP + 1) << DIST_SHIFT
    h, w = zero.shape[-2:]
    d = torch.where(zero, 0, big).to(torch.int32)
    a, b, c = DIST_WEIGHTS
    moves = [(dy, dx, a) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    moves += [(dy, dx, b) for dy in (-1, 1) for dx in (-1, 1)]
    moves += [(dy, dx, c) for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))]
    for _ in range(DIST_CAP + 1):  # a path shorter than the cap has at most that many moves
        framed = F.pad(d, (2, 2, 2, 2), value=big)  # outside the image: never a shorter way
        best = d
        for dy, dx, weight in moves:
            best = torch.minimum(best, framed[..., 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] + weight)
        best = best.clamp(max=big)
        if torch.equal(best, d):  # settled: every shortest path is found
            break
        d = best
    return (d.double() / (1 << DIST_SHIFT)).clamp(max=float(DIST_CAP))


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``equalizeHist`` per image of (N, 1, H, W) integers 0..255 (float32 scale, rounded half to even)."""
    n = img.shape[0]
    flat = img.reshape(n, -1).to(torch.int64)
    hist = torch.zeros((n, 256), dtype=torch.int64, device=img.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).to(torch.int64).argmax(dim=1, keepdim=True)
    total = flat.shape[1]
    first_count = hist.gather(1, first)
    cum = hist.cumsum(dim=1) - first_count  # sum over first < j <= i
    scale = torch.tensor(255.0, dtype=torch.float32) / (total - first_count).clamp(min=1).to(torch.float32)
    lut = torch.round(cum.to(torch.float32) * scale.to(img.device)).clamp(0, 255).to(torch.int64)
    lut = torch.where(torch.arange(256, device=img.device)[None] <= first, 0, lut)
    lut = torch.where((first_count == total).expand(-1, 256), first.expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(img.shape)


def _box_u8(img: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``blur(img, (3, 3))`` on 8-bit integers: the 3x3 sum times 1/9, rounded."""
    total = filter2d(img.double(), np.ones((3, 3)))
    return torch.round(total * (1.0 / 9.0))


def water_rim(liquid: torch.Tensor) -> torch.Tensor:
    """The drops' shading: the reference's OpenCV chain on the 8-bit liquid field (N, 1, H, W), times the field,
    normalized to a maximum of 1 per image (0 where there is no drop at all)."""
    drops = torch.floor(liquid * 255).clamp(0, 255)
    zero = canny(drops.to(torch.int64))
    dist = distance_to(zero)
    dist = torch.floor((filter2d(dist, np.ones((3, 3))) * (1.0 / 9.0)).float().double())  # float32, then uint8
    dist = equalize_hist(dist.to(torch.int64)).double()
    dist = filter2d(dist, EMBOSS).round().clamp(0, 255)
    dist = _box_u8(dist)
    m = drops * dist
    peak = m.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(m))


def spatter(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    loc, spread, sigma, threshold, strength, mud = SPATTER[severity - 1]
    c = x.shape[1]
    liquid = gaussian(rng.normal(loc, spread, tuple(x.shape[-2:])).to(x)[:, None], sigma * scale)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if not mud:
        m = water_rim(liquid.double()).to(x) * strength
        tint = (m * torch.tensor(WATER, dtype=x.dtype, device=x.device)[None, :, None, None]).clamp(0, 1)
        if c == 1:
            return (x + luminance(tint, LUMA_REFERENCE)).clamp(0, 1)
        return (x + tint).clamp(0, 1)
    mask = gaussian((liquid > threshold).to(x), strength * scale)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    paint = mask * torch.tensor(MUD, dtype=x.dtype, device=x.device)[None, :, None, None]
    if c == 1:
        paint = luminance(paint, LUMA_REFERENCE)
    return (x * (1 - mask) + paint).clamp(0, 1)
