"""Each of the 19 corruptions against the reference, the ``imagecorruptions`` package, on the same real images:
Fashion-MNIST test images padded to 32x32 (gray) and crops of scikit-learn's two sample photographs (RGB).

Comparisons are in the reference's units: it returns ``uint8(255 * y)``, i.e. 255 * y truncated. So nnaudit's
``255 * y`` must lie in a window above the reference's value, per corruption (``WINDOWS``), widened by
``SLACK`` = 1e-3 levels for float rounding (the reference computes some steps in float32: its displacement field,
zoom, snow; 6e-8 relative on values up to 255 and coordinates up to 32 pixels stays below 1e-3 levels):

- [0, 1): exact up to the reference's truncation (every corruption not listed below);
- jpeg_compression [0, 0]: bit-exact (nnaudit computes libjpeg's integer codec; the reference's PIL runs libjpeg);
- pixelate [-1, 1]: PIL rounds its BOX downsampling to 8 bits in each of its two passes, nnaudit keeps the mean;
- glass_blur [0, 2): the reference stores its first blur as uint8 (truncating up to 1 level) before shuffling and
  blurring again (a mean with weights summing to 1 keeps that error in (-1, 0]), nnaudit does not;
- frost [-1, 2): the texture resized by torch's cubic (a = -0.75, OpenCV's) and rounded to 8 bits differs from
  OpenCV's 11-bit fixed-point resize by one level on ~1e-5 of its pixels; the frost weight is at most 0.75.

Deterministic corruptions are compared directly. Random ones twice:

1. with the reference's own draws (``ReplayRng``: each draw answered by the numpy call the reference makes, in
   the same order), so everything after the draws must match within the window. Gray noise is left to the
   statistical test: the reference draws noise for three channels of a gray image, nnaudit for one.
2. statistically, each drawing its own random numbers: a two-sample Kolmogorov-Smirnov test at a false-alarm rate
   ALPHA = 1e-4 per comparison (~110 comparisons: at most ~1% that a correct implementation fails anywhere; the
   seeds are fixed, so the outcome does not change from run to run). Per-pixel noise: the perturbations of every
   pixel of 4 images x 6 draws, pooled (each pixel appears once per draw in both samples, which makes KS
   conservative; ties of 8-bit values make it more so). Spatially structured corruptions: one value per draw
   (50 draws), the mean |perturbation| and the mean absolute difference between neighbouring pixels (both
   blind to the glass blur's half-level truncation bias, which a mean intensity would see).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import system
import torch
from scipy.stats import ks_2samp
from shift_reference import (
    ReplayRng,
    fashion_images,
    import_reference,
    photo_crops,
    reference,
    reference_function,
    to_tensor,
)

from audit.shift.catalog import IMAGE_CORRUPTIONS, RANDOM, SEVERITIES
from audit.shift.corruptions import corrupt
from audit.shift.sampling import sample_seeds

try:
    import_reference()
except ImportError:  # pragma: no cover - the dev extra installs it; CI (NNAUDIT_REQUIRE_SYSTEM=1) fails instead
    if system.required():
        raise
    pytest.skip("imagecorruptions (and setuptools < 81) needed for the cross-checks", allow_module_level=True)

SLACK = 1e-3
ALPHA = 1e-4
WINDOWS = {"jpeg_compression": (0.0, 0.0), "pixelate": (-1.0, 1.0), "glass_blur": (0.0, 2.0), "frost": (-1.0, 2.0)}
DETERMINISTIC = [n for n in IMAGE_CORRUPTIONS if n not in RANDOM]
REPLAYED = ["gaussian_noise", "shot_noise", "speckle_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
            "elastic_transform", "spatter"]
PER_PIXEL = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]
STRUCTURED = sorted(RANDOM - set(PER_PIXEL))
GRAY_BY_CHANNEL = ["glass_blur", "motion_blur", "snow", "fog", "elastic_transform"]  # gray = each channel of RGB


def in_window(name: str, mine: np.ndarray, ref: np.ndarray) -> np.ndarray:
    low, high = WINDOWS.get(name, (0.0, 1.0))
    diff = 255 * mine - ref
    upper_ok = diff <= high + SLACK if name in ("pixelate", "jpeg_compression") else diff < high + SLACK
    return (diff >= low - SLACK) & upper_ok


def assert_window(name: str, mine: np.ndarray, ref: np.ndarray, what: str) -> None:
    ok = in_window(name, mine, ref)
    if not ok.all():
        diff = 255 * mine - ref
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} values outside {WINDOWS.get(name, (0, 1))} "
                             f"(255*nnaudit - reference from {diff.min():.4f} to {diff.max():.4f})")


def ours(images: np.ndarray, name: str, severity: int, **kwargs: Any) -> np.ndarray:
    """nnaudit's corruption of uint8 images, float64, as (N, H, W, C) or (N, H, W) in [0, 1]."""
    out = corrupt(to_tensor(images), name, severity, pixel_scale=1.0, **kwargs).numpy()
    return out.transpose(0, 2, 3, 1) if images.ndim == 4 else out[:, 0]


def references(images: np.ndarray, name: str, severity: int, seeds: list[int]) -> np.ndarray:
    return np.stack([reference(img, name, severity, seed=s) for img, s in zip(images, seeds, strict=True)]
                    ).astype(np.float64)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruption_equals_reference(name: str) -> None:
    for severity in SEVERITIES:
        rgb = photo_crops()
        assert_window(name, ours(rgb, name, severity), references(rgb, name, severity, [0] * len(rgb)),
                      f"{name} severity {severity} rgb")
        if name != "saturate":  # colour saturation: refused on gray images
            gray = fashion_images(6)
            ref = references(gray, name, severity, [0] * len(gray))  # the reference turns gray into 3 equal channels
            assert np.array_equal(ref[..., 0], ref[..., 2])
            assert_window(name, ours(gray, name, severity), ref[..., 0], f"{name} severity {severity} gray")


@pytest.mark.parametrize("name", REPLAYED)
def test_random_corruption_with_the_reference_draws_equals_reference(name: str) -> None:
    rgb = photo_crops()
    for severity in SEVERITIES:
        seeds = [100 * severity + i for i in range(len(rgb))]
        mine = ours(rgb, name, severity, rng=ReplayRng(seeds))
        ref = references(rgb, name, severity, seeds)
        if name == "spatter":  # no drop formed: the reference divides 0 by 0 and returns black; nnaudit the image
            black = (ref == 0).all(axis=(1, 2, 3)) & (rgb > 0).any(axis=(1, 2, 3))
            np.testing.assert_array_equal(np.round(255 * mine[black]), rgb[black])
            mine, ref = mine[~black], ref[~black]
        assert_window(name, mine, ref, f"{name} severity {severity} rgb")
        if name in GRAY_BY_CHANNEL:
            gray = fashion_images(4)
            assert_window(name, ours(gray, name, severity, rng=ReplayRng(seeds)),
                          references(gray, name, severity, seeds)[..., 0], f"{name} severity {severity} gray")


def test_gray_spatter_equals_the_reference_gray_branch() -> None:
    """``corrupt`` makes gray images RGB; the reference's spatter function itself has a gray branch (luminance of
    the tint), which is nnaudit's definition for 1-channel images."""
    from PIL import Image
    from shift_reference import compatible

    gray = fashion_images(6)
    fn = reference_function("spatter")
    for severity in SEVERITIES:
        seeds = [7 * severity + i for i in range(len(gray))]
        refs = []
        for img, seed in zip(gray, seeds, strict=True):
            with compatible():
                np.random.seed(seed)
                refs.append(np.uint8(fn(Image.fromarray(img), severity)).astype(np.float64))  # type: ignore[operator]
        assert_window("spatter", ours(gray, "spatter", severity, rng=ReplayRng(seeds)), np.stack(refs),
                      f"spatter severity {severity} gray")


def _levels(y: np.ndarray) -> np.ndarray:
    """nnaudit's output in the reference's units: 255 * y truncated (the slack absorbs float rounding)."""
    return np.floor(255 * y + SLACK)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", PER_PIXEL)
def test_per_pixel_noise_matches_reference_distribution(name: str, severity: int) -> None:
    draws = 6
    for kind, images in (("rgb", photo_crops()), ("gray", fashion_images(4))):
        stacked = np.repeat(images, draws, axis=0)
        seeds = sample_seeds(1, "test", name, severity, range(len(stacked)))
        mine = _levels(ours(stacked, name, severity, seeds=seeds)) - stacked
        ref = references(stacked, name, severity, [10_000 + i for i in range(len(stacked))])
        ref = ref - (stacked[..., None] if kind == "gray" else stacked)
        result = ks_2samp(mine.ravel(), ref.ravel(), method="asymp")
        assert result.pvalue > ALPHA, f"{name} severity {severity} {kind}: KS D={result.statistic:.4f}"


def _structure(levels: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: mean |perturbation|, and mean |difference| between neighbouring pixels (rows and columns)."""
    axes = tuple(range(1, levels.ndim))
    size = np.abs(levels - image).mean(axis=axes)
    rough = np.abs(np.diff(levels, axis=1)).mean(axis=axes) + np.abs(np.diff(levels, axis=2)).mean(axis=axes)
    return size, rough


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", STRUCTURED)
def test_structured_corruption_matches_reference_distribution(name: str, severity: int) -> None:
    draws = 50
    image = photo_crops()[1]
    stacked = np.repeat(image[None], draws, axis=0)
    mine = _levels(ours(stacked, name, severity, seeds=sample_seeds(2, "test", name, severity, range(draws))))
    ref = references(stacked, name, severity, [20_000 + i for i in range(draws)])
    if name == "spatter":  # the reference's black image where no drop formed (0 / 0): count it as unchanged
        ref[(ref == 0).all(axis=(1, 2, 3))] = image
    for what, a, b in zip(("mean |perturbation|", "roughness"), _structure(mine, image), _structure(ref, image),
                          strict=True):
        result = ks_2samp(a, b, method="exact")
        assert result.pvalue > ALPHA, (f"{name} severity {severity}, {what}: nnaudit {a.mean():.3f} +- {a.std():.3f}, "
                                       f"reference {b.mean():.3f} +- {b.std():.3f}, KS D={result.statistic:.3f}")


def test_float32_path_agrees_with_float64() -> None:
    """What the section runs (float32) against the float64 the cross-checks use, deterministic corruptions: within
    2e-5 of the input range (0.005 levels) except where an 8-bit step rounds differently (JPEG's input rounding)."""
    rgb = to_tensor(photo_crops())
    for name in DETERMINISTIC:
        for severity in SEVERITIES:
            a = corrupt(rgb, name, severity).numpy()
            b = corrupt(rgb.float(), name, severity).double().numpy()
            close = np.abs(a - b) <= 2e-5
            assert close.mean() >= (0.999 if name == "jpeg_compression" else 1.0), (name, severity)


def test_reference_window_check_has_teeth() -> None:
    """The window rejects a corruption one severity off, and an output one level low."""
    rgb = photo_crops()
    ref = references(rgb, "gaussian_blur", 3, [0] * len(rgb))
    assert not in_window("gaussian_blur", ours(rgb, "gaussian_blur", 2), ref).all()
    assert not in_window("gaussian_blur", ours(rgb, "gaussian_blur", 3) - 1 / 255, ref).all()
    assert torch.is_tensor(corrupt(to_tensor(rgb), "gaussian_blur", 3))
