"""Which corruptions the section runs on this model and data, and the errors that say what to change.

Everything here is checked by the section's ``validate`` hook before any section runs, and used again by ``run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from audit.errors import ConfigError
from audit.shift.catalog import (
    COLOR_ONLY,
    IMAGE_CORRUPTIONS,
    NEEDS_FROST_TEXTURES,
    TABULAR_SHIFTS,
    frost_texture_dir,
    image_defaults,
)
from audit.shift.evaluate import ShiftPlan
from audit.shift.tabular import shift_name

if TYPE_CHECKING:
    from audit.data import AuditData
    from audit.model import ModelAdapter

FROST_MISSING = ("frost overlays the frost photographs that ship inside the imagecorruptions package, which is not "
                 "installed here: pip install imagecorruptions (nnaudit reads its textures, it does not import it), "
                 "or leave frost out")


def image_layout(data: AuditData, key: str) -> int:
    """The channel count of image data shaped (C, H, W) or (H, W); a ConfigError for other layouts."""
    shape = data.input_shape
    if len(shape) == 2:
        return 1
    if len(shape) == 3 and shape[0] in (1, 3):
        return int(shape[0])
    raise ConfigError(key, f"image corruptions need inputs shaped (C, H, W) with C = 1 or 3, or (H, W); these are "
                           f"{list(shape)}. Set data.input_shape (channels first)")


def image_bounds(model: ModelAdapter, data: AuditData, key: str) -> tuple[float, float]:
    """The raw input range the corruptions map to the reference's 0..255: the model's input bounds, else the
    data's; a ConfigError when neither is known."""
    if model.bounds is not None:
        return float(model.bounds.lower), float(model.bounds.upper)
    if data.lower is not None and data.upper is not None:
        return float(np.min(data.lower)), float(np.max(data.upper))
    raise ConfigError(key, "image corruptions need the images' value range (black to white): set "
                           "model.input_bounds, e.g. [0.0, 1.0]")


def resolve_names(requested: list[str] | None, data: AuditData, shift_features: list[str], key: str) -> list[str]:
    """The corruption names to run (before feature_shift is split per feature); ConfigError naming ``key`` for one
    that does not apply to this data."""
    if data.modality == "image":
        channels = image_layout(data, key)
        if requested is None:
            return image_defaults(channels)
        for name in requested:
            if name in TABULAR_SHIFTS:
                raise ConfigError(key, f"{name} is a tabular shift and the data are images; use image corruptions "
                                       f"({', '.join(IMAGE_CORRUPTIONS[:3])}, ...)")
            if name in COLOR_ONLY and channels != 3:
                raise ConfigError(key, f"{name} changes colour saturation and these images are gray (1 channel); "
                                       "remove it")
            if name in NEEDS_FROST_TEXTURES and frost_texture_dir() is None:
                raise ConfigError(key, FROST_MISSING)
        return list(dict.fromkeys(requested))
    if data.modality != "tabular":
        raise ConfigError(key, f"the corruptions section has no corruptions for {data.modality} data yet")
    if requested is None:
        return [n for n in TABULAR_SHIFTS if n != "feature_shift" or shift_features]
    for name in requested:
        if name in IMAGE_CORRUPTIONS:
            raise ConfigError(key, f"{name} is an image corruption and the data are tabular; use the tabular shifts "
                                   f"({', '.join(TABULAR_SHIFTS)})")
        if name == "feature_shift" and not shift_features:
            raise ConfigError(key, "feature_shift shifts named features: list them under tabular.shift_features")
    return list(dict.fromkeys(requested))


def feature_names(data: AuditData) -> list[str]:
    count = int(np.prod(data.input_shape))
    return list(data.feature_names) if data.feature_names else [f"x{i}" for i in range(count)]


def perturbable_mask(data: AuditData) -> np.ndarray:
    count = int(np.prod(data.input_shape))
    return np.ones(count, bool) if data.perturbable is None else np.asarray(data.perturbable, bool).reshape(-1)


def check_features(data: AuditData, features: list[str], key: str) -> list[int]:
    """Indices of named features; ConfigError for an unknown or fixed one."""
    names = feature_names(data)
    mask = perturbable_mask(data)
    out = []
    for feature in features:
        if feature not in names:
            from audit.shift.catalog import did_you_mean

            raise ConfigError(key, f"no feature named {feature!r}{did_you_mean(feature, names)}")
        index = names.index(feature)
        if not mask[index]:
            raise ConfigError(key, f"feature {feature!r} is not perturbable (data.perturbable); a shift of it is "
                                   "not what the data allow to change")
        out.append(index)
    return out


def make_plans(names: list[str], severities: list[int], data: AuditData, shift_features: list[str],
               key: str) -> list[ShiftPlan]:
    plans: list[ShiftPlan] = []
    for name in names:
        if name == "feature_shift":
            for feature, index in zip(shift_features, check_features(data, shift_features, key), strict=True):
                plans.append(ShiftPlan(shift_name(feature), tuple(severities), feature=index))
        else:
            plans.append(ShiftPlan(name, tuple(severities)))
    return plans
