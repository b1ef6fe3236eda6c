"""Digital corruptions: contrast, elastic transform, pixelate, JPEG compression and saturate.

Images are (N, C, H, W) in [0, 1]; parameters per severity are the reference's (Hendrycks & Dietterich 2019,
``imagecorruptions``). The elastic transform's smoothing and displacement are already relative to the image
size in the reference, pixelate's factor is relative, and JPEG works on its own 8x8 grid, so ``scale`` changes
none of them.
"""

from __future__ import annotations

from functools import cache

import torch

from audit.shift.filters import gaussian, hsv_to_rgb, rgb_to_hsv
from audit.shift.jpeg import jpeg
from audit.shift.sampling import SampleRng

CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # deviation from the per-channel mean kept
ELASTIC_ALPHA = tuple(250 * f for f in (0.05, 0.065, 0.085, 0.1, 0.12))  # displacement gain
ELASTIC_SIGMA = 0.01  # smoothing sigma, as a share of the height (rows) and width (columns)
ELASTIC_MAX = 0.005  # raw displacement bound, as a share of the height
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # downsampling factor
JPEG_QUALITY = (25, 18, 15, 10, 7)
SATURATE = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))  # saturation * a + b


def contrast(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    c = CONTRAST[severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def _symmetric(i: torch.Tensor, n: int) -> torch.Tensor:
    """SciPy's ``reflect`` boundary for integer indices (the edge sample repeated: ... b a | a b ...)."""
    if n == 1:
        return torch.zeros_like(i)
    j = i.remainder(2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def elastic_transform(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    n, c, h, w = x.shape
    alpha = ELASTIC_ALPHA[severity - 1]
    bound = h * ELASTIC_MAX
    sigma = (h * ELASTIC_SIGMA, w * ELASTIC_SIGMA)
    fields = []
    for _ in range(2):  # dx, then dy, as the reference draws them
        raw = rng.uniform(-bound, bound, (h, w)).to(x)[:, None]
        fields.append(gaussian(raw, sigma, mode="symmetric", truncate=3.0)[:, 0] * alpha)
    dx, dy = fields
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None] + dy
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :] + dx
    r0, c0 = torch.floor(rows), torch.floor(cols)
    tr, tc = (rows - r0)[:, None], (cols - c0)[:, None]
    r0i, c0i = r0.to(torch.int64), c0.to(torch.int64)
    flat = x.reshape(n, c, h * w)

    def sample(ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        index = (_symmetric(ri, h) * w + _symmetric(ci, w)).reshape(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, index).reshape(n, c, h, w)

    top = (1 - tc) * sample(r0i, c0i) + tc * sample(r0i, c0i + 1)
    bottom = (1 - tc) * sample(r0i + 1, c0i) + tc * sample(r0i + 1, c0i + 1)
    return ((1 - tr) * top + tr * bottom).clamp(0, 1)


@cache
def box_ranges(in_size: int, out_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """PIL's BOX resampling: each output pixel is the mean of the input pixels whose centres fall in its box, a
    half-open interval as PIL's box filter; returns the first and one-past-last input index of each."""
    scale = in_size / out_size
    support = 0.5 * max(scale, 1.0)
    starts, stops = [], []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        inside = [x for x in range(xmin, xmax) if -0.5 < (x - center + 0.5) / max(scale, 1.0) <= 0.5]
        starts.append(inside[0])
        stops.append(inside[-1] + 1)
    return tuple(starts), tuple(stops)


def _box_mean(x: torch.Tensor, in_size: int, out_size: int, dim: int) -> torch.Tensor:
    """Means over PIL's BOX ranges along ``dim``, from a running sum."""
    starts, stops = (torch.as_tensor(v, device=x.device) for v in box_ranges(in_size, out_size))
    total = torch.cumsum(x, dim=dim)
    total = torch.cat([torch.zeros_like(total.narrow(dim, 0, 1)), total], dim=dim)
    width = (stops - starts).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = out_size
    return (total.index_select(dim, stops) - total.index_select(dim, starts)) / width.reshape(shape)


@cache
def nearest_index(in_size: int, out_size: int) -> tuple[int, ...]:
    """PIL's NEAREST resize: output pixel x reads input floor((x + 0.5) * in / out), accumulated as PIL does."""
    step = in_size / out_size
    position = step * 0.5
    out = []
    for _ in range(out_size):
        out.append(min(int(position), in_size - 1))
        position += step
    return tuple(out)


def pixelate(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    small = _box_mean(x, w, sw, 3)  # PIL: the horizontal pass first
    small = _box_mean(small, h, sh, 2)
    rows = torch.as_tensor(nearest_index(sh, h), device=x.device)
    cols = torch.as_tensor(nearest_index(sw, w), device=x.device)
    return small[:, :, rows][:, :, :, cols].clamp(0, 1)


def jpeg_compression(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    samples = torch.round(x * 255).clamp(0, 255)
    return (jpeg(samples, JPEG_QUALITY[severity - 1]).to(x.dtype) / 255).clamp(0, 1)


def saturate(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    if x.shape[1] != 3:
        raise ValueError("saturate changes colour saturation: it needs RGB images (3 channels)")
    a, b = SATURATE[severity - 1]
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * a + b).clamp(0, 1), hsv[:, 2]], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)
