"""The ``ood`` section's setup: which detectors apply, the feature layer, the OOD and fit sets (loaded, resized,
checked against the model's input), the row split, and the fitted detectors. Every error names the key to
change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import ConfigError
from audit.shift.catalog import (
    COLOR_ONLY,
    DETECTORS,
    FEATURE_DETECTORS,
    GRADIENT_DETECTORS,
    IMAGE_CORRUPTIONS,
    image_defaults,
    in_mce,
)

if TYPE_CHECKING:
    import torch

    from audit.config import DataConfig
    from audit.context import AuditContext
    from audit.data import AuditData
    from audit.shift.ood_eval import OODInputs


def check_task(ctx: AuditContext, key: str) -> None:
    if ctx.data.modality not in ("image", "tabular"):
        raise ConfigError(key, f"the ood section scores image and tabular classifiers; these data are "
                               f"{ctx.data.modality}")
    if ctx.data.num_classes < 2:
        raise ConfigError(key, "the ood section needs a classifier with at least 2 classes")


def _module(ctx: AuditContext) -> Any:
    return getattr(ctx.model, "module", None)


def applicable(ctx: AuditContext, requested: list[str] | None, key: str, notes: list[str]) -> list[str]:
    """The detectors to run. A requested one that cannot run on this model is a ConfigError at ``key``; a default
    one is skipped with a note."""
    reasons = {}
    if not ctx.model.has_gradients:
        reasons.update({d: f"needs input gradients and the model ({ctx.model.kind}) has none"
                        for d in GRADIENT_DETECTORS})
    if _module(ctx) is None:
        reasons.update({d: f"needs the features of a layer and the model ({ctx.model.kind}) is not a torch network"
                        for d in FEATURE_DETECTORS})
    if requested is not None:
        for name in requested:
            if name in reasons:
                raise ConfigError(key, f"detector {name} does not apply: it {reasons[name]}; remove it")
        return list(dict.fromkeys(requested))
    skipped = [d for d in DETECTORS if d in reasons]
    if skipped:
        notes.append("skipped detectors: " + "; ".join(f"{d} ({reasons[d]})" for d in skipped))
    return [d for d in DETECTORS if d not in reasons]


def feature_layer(ctx: AuditContext, name: str | None, key: str) -> str | None:
    """The module whose output the feature detectors use (None: the last Linear's input, when there is one)."""
    from audit.shift.ood import default_layer, layer_names

    module = _module(ctx)
    if module is None:
        return None
    if name is None:
        return default_layer(module)
    names = layer_names(module)
    if name not in names:
        raise ConfigError(key, f"no layer named {name!r} in the network; valid names: {names}")
    return name


def _tap(ctx: AuditContext, layer: str | None) -> Any:
    from audit.shift.ood import FeatureTap, default_layer

    module = _module(ctx)
    if layer is None:
        default = default_layer(module)
        return FeatureTap(ctx.model.network, module, str(default), input_of=True)  # type: ignore[attr-defined]
    return FeatureTap(ctx.model.network, module, layer, input_of=False)  # type: ignore[attr-defined]


def _check_shape(ctx: AuditContext, x: np.ndarray, key: str, what: str) -> None:
    expected = tuple(ctx.data.input_shape)
    if tuple(x.shape[1:]) != expected:
        hint = " (set resize: [H, W] for images of another size)" if len(expected) == 3 and x.ndim == 4 else ""
        raise ConfigError(key, f"{what} has samples shaped {list(x.shape[1:])}, the model takes "
                               f"{list(expected)}{hint}")


def _resize(x: np.ndarray, size: list[int], channels: int, key: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if len(size) != 2 or min(size) < 1:
        raise ConfigError(key, f"resize is [H, W] in pixels, got {size}")
    t = torch.as_tensor(x, dtype=torch.float32)
    t = t[:, None] if t.ndim == 3 else t
    if t.ndim != 4 or t.shape[1] != channels:
        raise ConfigError(key, f"resize needs images shaped (C, H, W) with the model's {channels} channels, got "
                               f"{list(x.shape[1:])}")
    return F.interpolate(t, size=tuple(size), mode="area").numpy()


def load_ood_set(ctx: AuditContext, *, name: str, config: DataConfig, resize: list[int] | None, key: str,
                 limit: int | None) -> np.ndarray:
    """An OOD set's inputs: loaded like data:, resized, a seeded random subset of ``limit`` rows."""
    from audit.data.load import load_data

    data = load_data(config, seed=ctx.seed)
    x = np.asarray(data.x, np.float32)
    if resize is not None:
        shape = ctx.data.input_shape
        x = _resize(x, resize, int(shape[0]) if len(shape) == 3 else 1, f"{key}.resize")
        if len(ctx.data.input_shape) == 2:
            x = x[:, 0]
    _check_shape(ctx, x, f"{key}.data", f"OOD set {name!r}")
    if limit is not None and len(x) > limit:
        x = x[np.sort(np.random.default_rng(ctx.seed).choice(len(x), limit, replace=False))]
    return x


def load_fit(ctx: AuditContext, config: DataConfig, key: str, limit: int | None) -> AuditData:
    from audit.data.load import load_data

    data = load_data(config, seed=ctx.seed, limit=limit)
    _check_shape(ctx, np.asarray(data.x), key, "fit_data")
    return data


def split_rows(y: np.ndarray, max_samples: int | None, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, evaluated rows) of the audited data: a stratified subset of ``max_samples``, then a
    stratified ``holdout`` share of it."""
    from audit.data import stratified_subset

    index = np.arange(len(y))
    if max_samples is not None and max_samples < len(y):
        index = stratified_subset(y, max_samples, seed)
    n_hold = max(1, min(len(index) - 1, round(holdout * len(index))))
    hold = index[stratified_subset(y[index], n_hold, seed + 1)]
    return hold, np.setdiff1d(index, hold)


def corruption_list(ctx: AuditContext, requested: list[str] | None, default: list[str] | None,
                    key: str) -> list[str]:
    """Corruptions for near-OOD or calibration; none for tabular data (an explicit list there is an error)."""
    if ctx.data.modality != "image":
        if requested:
            raise ConfigError(key, f"corruptions apply to images and these data are {ctx.data.modality}; remove "
                                   "the list")
        return []
    shape = ctx.data.input_shape
    channels = int(shape[0]) if len(shape) == 3 else 1
    if requested is None:
        usable = image_defaults(channels)
        return [c for c in (default or [c for c in IMAGE_CORRUPTIONS if in_mce(c)]) if c in usable]
    for name in requested:
        if name in COLOR_ONLY and channels != 3:
            raise ConfigError(key, f"{name} changes colour saturation and these images are gray; remove it")
        if name not in image_defaults(channels):
            raise ConfigError(key, f"{name} cannot run here (frost needs the imagecorruptions textures); remove it")
    return list(dict.fromkeys(requested))


def ranges(ctx: AuditContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-value lower and upper input bounds (the model's or the data's; tabular: the evaluated rows' range) and
    the corruptions' pixel scale."""
    data = ctx.data
    if data.modality == "image":
        from audit.shift.corruptions import auto_pixel_scale
        from audit.shift.planning import image_bounds

        lo, hi = image_bounds(ctx.model, data, "model.input_bounds")
        return np.float32(lo) * np.ones(1, np.float32), np.float32(hi) * np.ones(1, np.float32), \
            auto_pixel_scale(*data.input_shape[-2:])
    lower = data.lower if data.lower is not None else np.nanmin(x, axis=0)
    upper = data.upper if data.upper is not None else np.nanmax(x, axis=0)
    return np.asarray(lower, np.float32), np.asarray(upper, np.float32), 1.0


def fit_detectors(ctx: AuditContext, shared: OODInputs, x: np.ndarray, y: np.ndarray, *, fit_key: str,
                  layer: str | None, ridge: float, autoencoder: dict[str, Any], notes: list[str], k_key: str,
                  named: bool = True) -> None:
    """Fit Mahalanobis, KNN and the autoencoder on in-distribution ``x``, ``y`` into ``shared``. Too few fit rows
    for Mahalanobis (a class missing) or KNN (fewer rows than k): a ConfigError when the user ``named`` the
    detectors, else the detector is left out of ``shared.detectors`` with a note saying why."""
    from audit.shift.ood import default_layer, fit_mahalanobis, normalize, train_autoencoder

    dets = shared.detectors
    if any(d in FEATURE_DETECTORS for d in dets):
        shared.tap = _tap(ctx, layer)
        feats = _features(shared, x)
        if "mahalanobis" in dets:
            missing = sorted(set(range(ctx.data.num_classes)) - set(np.asarray(y).tolist()))
            why = (f"the in-distribution fit rows lack classes {missing[:10]}: Mahalanobis needs every class's mean; "
                   "give more rows (or fit_data)")
            if missing and named:
                raise ConfigError(fit_key, why)
            if missing:
                _leave_out(shared, "mahalanobis", why, notes)
            else:
                shared.mahalanobis = fit_mahalanobis(feats, y, ctx.data.num_classes, ridge=ridge)
        if "knn" in dets:
            why = (f"k = {shared.knn_k} exceeds the {len(feats)} in-distribution fit rows; lower knn_k or give more "
                   "fit rows")
            if shared.knn_k > len(feats) and named:
                raise ConfigError(k_key, why)
            if shared.knn_k > len(feats):
                _leave_out(shared, "knn", why, notes)
            else:
                shared.knn_bank = normalize(feats)
        notes.append(f"feature detectors on layer {layer or 'input of ' + str(default_layer(_module(ctx)))} "
                     f"({feats.shape[1]} features, 4-d maps averaged over space)")
    if "autoencoder" in dets:
        model, err = train_autoencoder(x, bounds=(float(np.min(shared.lower)), float(np.max(shared.upper))),
                                       seed=ctx.seed, **autoencoder)
        shared.autoencoder = model
        notes.append(f"autoencoder {autoencoder['hidden']} trained {autoencoder['epochs']} epochs on {len(x)} "
                     f"in-distribution rows: final reconstruction error {err:.4g}")


def _features(shared: OODInputs, x: np.ndarray) -> torch.Tensor:
    import torch

    if shared.tap is None:
        raise ValueError("no feature tap set")
    out = []
    for start in range(0, len(x), max(1, shared.batch_size)):
        batch = torch.as_tensor(np.asarray(x[start : start + shared.batch_size]), dtype=torch.float32)
        out.append(shared.tap(batch.to(shared.model.device))[1].cpu())
    return torch.cat(out)


def _leave_out(shared: OODInputs, detector: str, why: str, notes: list[str]) -> None:
    """Drop a default detector that cannot be fitted on these rows, saying why."""
    shared.detectors = tuple(d for d in shared.detectors if d != detector)
    notes.append(f"{detector} left out: {why}")
