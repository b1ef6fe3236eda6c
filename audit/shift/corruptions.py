"""The image corruptions of Hendrycks & Dietterich (2019) in torch: ``corrupt`` applies one at one severity to a
batch of images in the model's raw input range.

``corrupt(x, name, severity, bounds=(lo, hi), seeds=...)`` takes (N, C, H, W) or (N, H, W) images (C = 1 or 3,
any size), maps ``[lo, hi]`` to [0, 1] (the reference's 0..255 scale), applies the corruption on ``x``'s device
and maps back, clipped to the bounds; shape and dtype are kept. Random corruptions draw from one generator per
sample (``seeds``, see ``audit.shift.sampling``), so a sample's corrupted version does not depend on its batch.

Definitions and parameters per severity are those of the ``imagecorruptions`` package (the reference);
docs/shift.md lists where nnaudit differs and the cross-check tolerances. Lengths in pixels follow
``pixel_scale`` (``auto_pixel_scale``: 1 from 32 pixels a side up, the reference's own sizes; side / 32 below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from audit.shift import blur, digital, noise, spatter, weather
from audit.shift.catalog import COLOR_ONLY, IMAGE_CORRUPTIONS, RANDOM, SEVERITIES, did_you_mean
from audit.shift.sampling import SampleRng, TorchSampleRng

CorruptionFn = Callable[[torch.Tensor, int, SampleRng, float], torch.Tensor]
REFERENCE_SIDE = 32  # the smallest image the reference accepts; smaller images scale lengths in pixels down

FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": noise.gaussian_noise, "shot_noise": noise.shot_noise, "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur, "glass_blur": blur.glass_blur, "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur, "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow, "frost": weather.frost, "fog": weather.fog, "brightness": weather.brightness,
    "spatter": spatter.spatter,
    "contrast": digital.contrast, "elastic_transform": digital.elastic_transform, "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression, "saturate": digital.saturate,
}
if set(FUNCTIONS) != set(IMAGE_CORRUPTIONS):  # pragma: no cover - the catalog and this table must agree
    raise ImportError("audit.shift.corruptions.FUNCTIONS does not match catalog.IMAGE_CORRUPTIONS")


class CorruptionError(ValueError):
    """A corruption cannot be applied to these images (unknown name, severity, channels)."""


@dataclass(frozen=True)
class Bounds:
    lower: float
    upper: float


def auto_pixel_scale(height: int, width: int) -> float:
    """1 for images of at least 32 pixels a side (the reference's lengths, unchanged); min(side) / 32 below, so a
    smaller image is corrupted like a 32-pixel one seen at its resolution."""
    return min(1.0, min(height, width) / REFERENCE_SIDE)


def check(name: str, severity: int, channels: int) -> None:
    if name not in FUNCTIONS:
        raise CorruptionError(f"unknown corruption {name!r}{did_you_mean(name, IMAGE_CORRUPTIONS)}; "
                              f"choose from {list(IMAGE_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CorruptionError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
    if channels not in (1, 3):
        raise CorruptionError(f"image corruptions need 1 (gray) or 3 (RGB) channels, got {channels}")
    if name in COLOR_ONLY and channels != 3:
        raise CorruptionError(f"{name} changes colour saturation: it needs RGB images, these are gray")


def corrupt(x: torch.Tensor, name: str, severity: int, *, bounds: tuple[float, float] = (0.0, 1.0),
            seeds: Sequence[int] | None = None, rng: SampleRng | None = None,
            pixel_scale: float | None = None) -> torch.Tensor:
    """``x`` (N, C, H, W) or (N, H, W) under corruption ``name`` at ``severity`` (1-5). Random corruptions need
    ``seeds`` (one per sample) or an ``rng``; ``pixel_scale`` None: ``auto_pixel_scale``."""
    squeeze = x.ndim == 3
    images = x[:, None] if squeeze else x
    if images.ndim != 4:
        raise CorruptionError(f"images must be (N, C, H, W) or (N, H, W), got shape {list(x.shape)}")
    check(name, severity, int(images.shape[1]))
    lo, hi = float(bounds[0]), float(bounds[1])
    if not hi > lo:
        raise CorruptionError(f"bounds must have lower < upper, got {bounds}")
    if rng is None:
        if name in RANDOM and (seeds is None or len(seeds) != len(images)):
            raise CorruptionError(f"{name} is random: give one seed per image ({len(images)})")
        rng = TorchSampleRng(list(seeds) if seeds is not None else [0] * len(images), device=images.device,
                             dtype=images.dtype if images.dtype.is_floating_point else torch.float32)
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    unit = ((images.to(dtype) - lo) / (hi - lo)).clamp(0, 1)
    scale = auto_pixel_scale(*unit.shape[-2:]) if pixel_scale is None else float(pixel_scale)
    out = FUNCTIONS[name](unit, severity, rng, scale)
    out = (lo + out.clamp(0, 1) * (hi - lo)).clamp(lo, hi).to(images.dtype)
    return out[:, 0] if squeeze else out
