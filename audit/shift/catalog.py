"""What the corruptions section can apply, without importing torch: names, families, which data each one
fits, and the did-you-mean for a misspelt name.

Image corruptions follow Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ImageNet-C / CIFAR-10-C), as the ``imagecorruptions`` package implements them:
15 corruptions in four families, plus four held-out ones (``EXTRAS``: one per family) that Hendrycks keeps out
of the mCE. Tabular shifts are nnaudit's own (docs/shift.md).
"""

from __future__ import annotations

import difflib
import importlib.util
from functools import cache
from pathlib import Path

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# the ImageNet-C order (imagecorruptions.get_corruption_names('common'), then 'validation')
COMMON: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRAS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
IMAGE_CORRUPTIONS: tuple[str, ...] = COMMON + EXTRAS

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}

# corruptions that draw random numbers (seeded per sample); the others are deterministic functions of the image
RANDOM: frozenset[str] = frozenset({
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow", "frost",
    "fog", "elastic_transform", "spatter",
})
COLOR_ONLY: frozenset[str] = frozenset({"saturate"})  # changes colour saturation: nothing to change on gray images
NEEDS_FROST_TEXTURES: frozenset[str] = frozenset({"frost"})

# tabular shifts: feature noise and missing values on every perturbable feature, a shift of one named feature
TABULAR_SHIFTS: tuple[str, ...] = ("feature_noise", "missing_values", "feature_shift")
TABULAR_FAMILY = "tabular"

FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_PACKAGE = "imagecorruptions"


def family(name: str) -> str:
    """The family of a corruption (noise, blur, weather, digital) or ``tabular``."""
    base = shift_base(name)
    for fam, members in FAMILIES.items():
        if base in members:
            return fam
    return TABULAR_FAMILY


def shift_base(name: str) -> str:
    """``feature_shift=age`` -> ``feature_shift``; other names unchanged."""
    return name.split("=", 1)[0]


def in_mce(name: str) -> bool:
    """Whether a corruption counts in the mCE and the mean corrupted accuracy (Hendrycks keeps the extras out)."""
    return name not in EXTRAS


@cache
def frost_texture_dir() -> Path | None:
    """The folder of the frost textures the ``imagecorruptions`` package ships (the images ImageNet-C's frost
    overlays), found without importing the package; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(FROST_PACKAGE)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(base) / "frost"
        if all((folder / name).is_file() for name in FROST_FILES):
            return folder
    return None


def image_defaults(channels: int) -> list[str]:
    """Every image corruption that applies to images with ``channels`` channels here (frost needs the textures)."""
    out = list(IMAGE_CORRUPTIONS)
    if channels == 1:
        out = [c for c in out if c not in COLOR_ONLY]
    if frost_texture_dir() is None:
        out = [c for c in out if c not in NEEDS_FROST_TEXTURES]
    return out


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# out-of-distribution detectors of the ood section (audit.shift.ood), by what they need from the model
LOGIT_DETECTORS: tuple[str, ...] = ("msp", "max_logit", "energy")
GRADIENT_DETECTORS: tuple[str, ...] = ("odin",)
FEATURE_DETECTORS: tuple[str, ...] = ("mahalanobis", "knn")
INPUT_DETECTORS: tuple[str, ...] = ("autoencoder",)
DETECTORS: tuple[str, ...] = (*LOGIT_DETECTORS, *GRADIENT_DETECTORS, *FEATURE_DETECTORS, *INPUT_DETECTORS)
