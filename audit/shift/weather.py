"""Weather corruptions: snow, frost, fog and brightness (spatter, the fourth family member, is in spatter.py).

Images are (N, C, H, W) in [0, 1]. Parameters per severity are the reference's (Hendrycks & Dietterich 2019,
``imagecorruptions``). Lengths in pixels (snow flake size and streak length, the frost texture's scale) are
multiplied by ``scale``; fog's plasma map spans the image whatever its size, as in the reference.

Frost overlays one of the reference's frost photographs. They ship inside the ``imagecorruptions`` package;
nnaudit reads them from its installed folder (never copies them) and refuses frost when they are not there.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from audit.shift.catalog import FROST_FILES, frost_texture_dir
from audit.shift.filters import LUMA, LUMA_REFERENCE, clipped_zoom, hsv_to_rgb, luminance, motion_blur, rgb_to_hsv
from audit.shift.sampling import SampleRng

# loc, scale of the flake noise, flake zoom, threshold, streak radius, streak sigma, mix of the original
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
SNOW_ANGLE = (-135.0, -45.0)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # weight of the image, of the frost
FROST_CHOICES = 5  # the reference draws randint(5): the sixth texture is never used
FROST_MARGIN = 1.1  # the texture is scaled to 1.1x what covers the image, then cropped at random
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # strength, wibble decay of the plasma
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value


class FrostTexturesMissing(RuntimeError):
    """The frost textures (inside the imagecorruptions package) are not installed."""


def snow(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    loc, spread, zoom, threshold, radius, sigma, mix = SNOW[severity - 1]
    _n, c, h, w = x.shape
    layer = rng.normal(loc, spread, (h, w)).to(x)[:, None]
    layer = clipped_zoom(layer, max(1.0, zoom * scale))
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = rng.uniform(*SNOW_ANGLE, ()).double().cpu().tolist()
    layer = motion_blur(layer, max(1, round(radius * scale)), sigma * scale, angles)
    layer = torch.round(layer * 255) / 255  # the reference keeps the flakes as 8-bit values
    layer = layer[..., :h, :w]
    gray = luminance(x, LUMA) if c == 3 else x
    x = mix * x + (1 - mix) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, dims=(-2, -1))).clamp(0, 1)


@cache
def _texture_rgb(index: int) -> torch.Tensor:
    """Frost texture ``index`` (0-based) as (3, H, W) 0..255 floats, decoded by PIL (alpha dropped)."""
    from PIL import Image

    folder = frost_texture_dir()
    if folder is None:
        raise FrostTexturesMissing("frost needs the frost textures of the imagecorruptions package: "
                                   "pip install imagecorruptions (or leave frost out of the corruptions list)")
    with Image.open(folder / FROST_FILES[index]) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


@cache
def frost_texture(index: int, height: int, width: int, scale: float) -> torch.Tensor:
    """Texture ``index`` resized as the reference does for an (height, width) image: by 1.1x the factor that
    makes it cover the image (at least ``scale``), bicubic (a = -0.75, OpenCV's INTER_CUBIC; antialiased when
    it shrinks), rounded to 8 bits. (3, h, w) on the CPU."""
    tex = _texture_rgb(index)
    th, tw = tex.shape[1:]
    factor = max(scale, height / th, width / tw) * FROST_MARGIN
    size = (math.ceil(th * factor), math.ceil(tw * factor))
    resized = F.interpolate(tex[None].double(), size=size, mode="bicubic", align_corners=False,
                            antialias=factor < 1)[0]
    return torch.round(resized).clamp(0, 255).float()


def frost(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    keep, amount = FROST[severity - 1]
    _n, c, h, w = x.shape
    choice = rng.randint(0, FROST_CHOICES, ()).cpu().tolist()
    textures = [frost_texture(int(i), h, w, float(scale)) for i in choice]
    rows = rng.randint_each(0, [t.shape[1] - h for t in textures]).cpu().tolist()
    cols = rng.randint_each(0, [t.shape[2] - w for t in textures]).cpu().tolist()
    crops = torch.stack([t[:, r : r + h, q : q + w] for t, r, q in zip(textures, rows, cols, strict=True)])
    crops = crops.to(x)
    if c == 1:
        crops = luminance(crops, LUMA_REFERENCE)
    return (keep * x + amount * crops / 255).clamp(0, 1)


def next_power_of_2(v: int) -> int:
    return 1 if v <= 1 else 1 << (v - 1).bit_length()


def plasma(rng: SampleRng, size: int, decay: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The reference's diamond-square plasma fractal: (N, size, size) in [0, 1], ``size`` a power of two."""
    n = len(rng)
    grid = torch.zeros((n, size, size), dtype=dtype, device=device)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        k = size // step
        corners = grid[:, 0:size:step, 0:size:step]
        squares = corners + torch.roll(corners, -1, dims=1)
        squares = squares + torch.roll(squares, -1, dims=2)
        grid[:, half:size:step, half:size:step] = squares / 4 + wibble * rng.uniform(-wibble, wibble, (k, k)).to(grid)
        centres = grid[:, half:size:step, half:size:step]
        corners = grid[:, 0:size:step, 0:size:step]
        left = (centres + torch.roll(centres, 1, dims=1)) + (corners + torch.roll(corners, -1, dims=2))
        grid[:, 0:size:step, half:size:step] = left / 4 + wibble * rng.uniform(-wibble, wibble, (k, k)).to(grid)
        top = (centres + torch.roll(centres, 1, dims=2)) + (corners + torch.roll(corners, -1, dims=1))
        grid[:, half:size:step, 0:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, (k, k)).to(grid)
        step //= 2
        wibble /= decay
    grid = grid - grid.amin(dim=(1, 2), keepdim=True)
    return grid / grid.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, severity: int, rng: SampleRng, scale: float = 1.0) -> torch.Tensor:
    strength, decay = FOG[severity - 1]
    _n, _c, h, w = x.shape
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    fractal = plasma(rng, next_power_of_2(max(h, w)), decay, dtype=x.dtype, device=x.device)[:, None, :h, :w]
    return ((x + strength * fractal) * peak / (peak + strength)).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, rng: SampleRng | None = None, scale: float = 1.0) -> torch.Tensor:
    c = BRIGHTNESS[severity - 1]
    if x.shape[1] == 1:
        return (x + c).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)
