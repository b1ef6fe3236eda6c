"""Image operations the corruptions share, in torch on (N, C, H, W) batches of any size.

Each mirrors the operation the reference calls (OpenCV, SciPy, scikit-image, PIL), border handling included:

- padding of any width (``pad``): ``edge`` (SciPy ``nearest``), ``reflect101`` (OpenCV's default border,
  torch's ``reflect``), ``symmetric`` (SciPy ``reflect``: the edge pixel repeated);
- ``gaussian`` (scikit-image / SciPy's truncated Gaussian, separable), ``filter2d`` (OpenCV's correlation
  with a 2-D kernel), ``box3`` (a 3x3 mean);
- ``zoom_linear`` (SciPy ``zoom`` at order 1: corners aligned), ``clipped_zoom`` (the reference's centre crop
  and zoom);
- ``motion_blur`` (the reference's one-sided Gaussian line kernel at a per-sample angle, edges replicated);
- ``rgb_to_hsv`` / ``hsv_to_rgb`` (scikit-image's definitions), ``luminance`` (ITU-R 601 weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

PadMode = Literal["edge", "reflect101", "symmetric"]
LUMA = (0.299, 0.587, 0.114)  # OpenCV RGB2GRAY, JPEG's Y
LUMA_REFERENCE = (0.2989, 0.5870, 0.1140)  # the reference's rgb2gray (frost, spatter)
FFT_FROM = 11  # kernels this wide or wider go through the FFT (OpenCV's filter2D switches to its DFT there too)


def pad_index(n: int, before: int, after: int, mode: PadMode, device: torch.device) -> torch.Tensor:
    """Source index of each position of a length-``n`` axis padded by ``before`` / ``after`` (any widths)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * n - 2
        j = i.remainder(period)
        return torch.where(j >= n, period - j, j)
    period = 2 * n
    j = i.remainder(period)
    return torch.where(j >= n, period - 1 - j, j)


def pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: PadMode) -> torch.Tensor:
    """Pad the last two axes of ``x`` by any widths with ``mode``."""
    h, w = x.shape[-2:]
    if top or bottom:
        x = x.index_select(-2, pad_index(h, top, bottom, mode, x.device))
    if left or right:
        x = x.index_select(-1, pad_index(w, left, right, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """SciPy's ``gaussian_filter1d`` weights: radius ``int(truncate * sigma + 0.5)``, normalized to sum 1."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def correlate1d(x: torch.Tensor, weights: np.ndarray, axis: Literal[-2, -1], mode: PadMode) -> torch.Tensor:
    """Correlate the last two axes' ``axis`` of (N, C, H, W) with ``weights`` (odd length, centred)."""
    k = len(weights)
    if k == 1:
        return x * float(weights[0])
    r = k // 2
    n, c, h, w = x.shape
    kernel = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if k >= FFT_FROM:  # long kernels: a circular convolution through the FFT, the wrapped samples dropped
        moved = x.movedim(axis, -1)
        padded = pad(moved, 0, 0, r, r, mode)
        size = padded.shape[-1]
        spectrum = torch.fft.rfft(padded, n=size) * torch.fft.rfft(kernel.flip(0), n=size)
        return torch.fft.irfft(spectrum, n=size)[..., k - 1 :].movedim(-1, axis).contiguous()
    if axis == -1:
        padded = pad(x, 0, 0, r, r, mode).reshape(n * c, 1, h, w + 2 * r)
        out = F.conv2d(padded, kernel.reshape(1, 1, 1, k))
    else:
        padded = pad(x, r, r, 0, 0, mode).reshape(n * c, 1, h + 2 * r, w)
        out = F.conv2d(padded, kernel.reshape(1, 1, k, 1))
    return out.reshape(n, c, h, w)


def gaussian(x: torch.Tensor, sigma: float | tuple[float, float], *, mode: PadMode = "edge",
             truncate: float = 4.0) -> torch.Tensor:
    """scikit-image's ``gaussian`` per channel (SciPy's separable filter: rows, then columns)."""
    sy, sx = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    out = correlate1d(x, gaussian_kernel1d(sy, truncate), -2, mode)
    return correlate1d(out, gaussian_kernel1d(sx, truncate), -1, mode)


def filter2d(x: torch.Tensor, kernel: np.ndarray | torch.Tensor, mode: PadMode = "reflect101") -> torch.Tensor:
    """OpenCV's ``filter2D`` per channel: correlation with a centred 2-D kernel (odd sides), ``mode`` borders."""
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    kh, kw = k.shape
    n, c, h, w = x.shape
    padded = pad(x, kh // 2, kh // 2, kw // 2, kw // 2, mode).reshape(n * c, 1, h + kh - 1, w + kw - 1)
    if min(kh, kw) >= FFT_FROM:
        return _fft_correlate(padded, k).reshape(n, c, h, w)
    return F.conv2d(padded, k.reshape(1, 1, kh, kw)).reshape(n, c, h, w)


def _fft_correlate(padded: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The valid part of the correlation of (B, 1, Hp, Wp) with k: a circular convolution with the flipped kernel,
    whose first kh - 1 rows and kw - 1 columns (the wrapped ones) are dropped."""
    hp, wp = padded.shape[-2:]
    kh, kw = k.shape
    spectrum = torch.fft.rfft2(padded, s=(hp, wp)) * torch.fft.rfft2(k.flip(0, 1), s=(hp, wp))
    return torch.fft.irfft2(spectrum, s=(hp, wp))[..., kh - 1 :, kw - 1 :]


def box3(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``blur(x, (3, 3))``: the 3x3 mean, default (reflect101) borders."""
    return filter2d(x, torch.full((3, 3), 1.0 / 9.0, dtype=torch.float64))


def zoom_linear(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """SciPy's ``zoom(..., order=1)`` to (out_h, out_w): linear interpolation with the corners aligned."""
    if x.shape[-2:] == (out_h, out_w):
        return x
    return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=True)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The reference's ``clipped_zoom``: the centre ``ceil(side / factor)`` crop zoomed by ``factor`` (SciPy's
    output size ``round(crop * factor)``), not cropped back: callers keep the top-left (H, W)."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    return zoom_linear(crop, round(ch * factor), round(cw * factor))


def motion_taps(radius: int, sigma: float, angle_deg: float, height: int, width: int) -> list[tuple[float, int, int]]:
    """The reference's motion blur as (weight, dy, dx) taps: a one-sided Gaussian over ``2 * radius + 1`` steps
    along ``angle``, each step a whole-pixel shift; it stops at the first shift that leaves the image (the
    remaining weight is dropped, as in the reference)."""
    width_k = 2 * radius + 1
    weights = np.exp(-(np.arange(width_k, dtype=np.float64) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    weights = weights / weights.sum()
    point = (width_k * math.sin(math.radians(angle_deg)), width_k * math.cos(math.radians(angle_deg)))
    hypot = math.hypot(point[0], point[1])
    taps: list[tuple[float, int, int]] = []
    for i in range(width_k):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= height or abs(dx) >= width:
            break
        taps.append((float(weights[i]), dy, dx))
    return taps


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: Sequence[float]) -> torch.Tensor:
    """Blur each sample of (N, C, H, W) along its own angle (degrees); edges replicated. The image is padded by
    its edge pixels once; each tap is one gather of every sample's shifted window (taps a sample lacks weigh 0)."""
    n, c, h, w = x.shape
    per_sample = [motion_taps(radius, sigma, float(a), h, w) for a in angles]
    count = max((len(t) for t in per_sample), default=0)
    margin = 2 * radius + 1  # a tap shifts by at most 2 * radius pixels
    padded = pad(x, margin, margin, margin, margin, "edge")
    width = w + 2 * margin
    weight_table = np.zeros((n, count))
    offset_table = np.zeros((n, count), dtype=np.int64)
    for i, taps in enumerate(per_sample):
        for t, (weight, dy, dx) in enumerate(taps):
            weight_table[i, t] = weight
            offset_table[i, t] = (margin - dy) * width + (margin - dx)
    weights = torch.as_tensor(weight_table, dtype=x.dtype, device=x.device)
    offsets = torch.as_tensor(offset_table, device=x.device)
    base = (torch.arange(h, device=x.device)[:, None] * width + torch.arange(w, device=x.device)[None, :]).reshape(-1)
    flat = padded.reshape(n, c, -1)
    out = torch.zeros((n, c, h * w), dtype=x.dtype, device=x.device)
    for t in range(count):
        index = (base[None, :] + offsets[:, t : t + 1])[:, None, :].expand(n, c, h * w)
        out = out + weights[:, t, None, None] * flat.gather(2, index)
    return out.reshape(n, c, h, w)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """scikit-image's ``rgb2hsv`` on (N, 3, H, W) in [0, 1]."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = rgb.amax(dim=1)
    delta = v - rgb.amin(dim=1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)  # later assignments win, as in scikit-image: blue, then green
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """scikit-image's ``hsv2rgb`` on (N, 3, H, W)."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.to(torch.int64).remainder(6)
    choices = torch.stack([torch.stack(c, dim=1) for c in
                           ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])  # (6, N, 3, H, W)
    index = sector[None, :, None].expand(1, -1, 3, -1, -1)
    return choices.gather(0, index)[0]


def luminance(rgb: torch.Tensor, weights: tuple[float, float, float] = LUMA) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) weighted sum of the channels."""
    wr, wg, wb = weights
    return (wr * rgb[:, 0:1] + wg * rgb[:, 1:2] + wb * rgb[:, 2:3])
