"""Tabular shifts: Gaussian feature noise, missing values and a shift of one named feature, at severities 1-5.

Every shift acts in units of each feature's spread (its standard deviation over the audited rows, or a
declared value) and only on the features that may change (``data.perturbable``; all when undeclared). Values
are not clipped to the observed range: a drift past it is the point.

- ``feature_noise``: x + N(0, (level * spread)^2) on every perturbable feature;
- ``missing_values``: each perturbable value goes missing with probability ``rate``; missing values reach the
  model as NaN when it imputes them itself (``imputation: model``), else they are filled with the feature's
  mean, median or zero over the audited rows;
- ``feature_shift=<feature>``: that feature moved by ``k`` spreads (``mode: shift``) or its deviations from
  its mean multiplied by ``f`` (``mode: scale``): deterministic.

Random draws come from the per-sample generators of ``audit.shift.sampling``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from audit.shift.sampling import SampleRng

NOISE_LEVELS = (0.1, 0.25, 0.5, 0.75, 1.0)  # std of the added noise, in spreads
MISSING_RATES = (0.05, 0.1, 0.2, 0.3, 0.5)  # probability that a perturbable value goes missing
SHIFT_LEVELS = (0.25, 0.5, 1.0, 1.5, 2.0)  # spreads added to the named feature
SCALE_LEVELS = (1.25, 1.5, 2.0, 2.5, 3.0)  # factor on the named feature's deviations from its mean
Imputation = Literal["model", "mean", "median", "zero"]


def shift_name(feature: str) -> str:
    """``feature_shift=<feature>``, the feature's name made metric-safe (runs of other characters, dots included,
    become one _), like ``group=<key>`` in the fairness metrics."""
    return f"feature_shift={re.sub(r'[^A-Za-z0-9_-]+', '_', feature).strip('_') or 'feature'}"


@dataclass(frozen=True)
class TabularSetup:
    """What the tabular shifts need, computed once from the audited rows (flattened features)."""

    spread: np.ndarray  # (F,)
    mean: np.ndarray  # (F,)
    mask: np.ndarray  # (F,) bool: the features that may change
    fill: np.ndarray | None  # (F,) values for missing ones; None: NaN reaches the model
    noise: tuple[float, ...] = NOISE_LEVELS
    missing: tuple[float, ...] = MISSING_RATES
    shift: tuple[float, ...] = SHIFT_LEVELS
    scale: tuple[float, ...] = SCALE_LEVELS
    mode: Literal["shift", "scale"] = "shift"


def make_setup(x: np.ndarray, *, perturbable: np.ndarray | None, feature_names: list[str],
               spreads: dict[str, float], imputation: Imputation, noise: tuple[float, ...] = NOISE_LEVELS,
               missing: tuple[float, ...] = MISSING_RATES, shift: tuple[float, ...] = SHIFT_LEVELS,
               scale: tuple[float, ...] = SCALE_LEVELS, mode: Literal["shift", "scale"] = "shift") -> TabularSetup:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    spread = flat.std(axis=0)
    for name, value in spreads.items():
        spread[feature_names.index(name)] = float(value)
    mask = np.ones(flat.shape[1], bool) if perturbable is None else np.asarray(perturbable, bool).reshape(-1)
    fill = {"model": None, "mean": flat.mean(axis=0), "median": np.median(flat, axis=0),
            "zero": np.zeros(flat.shape[1])}[imputation]
    return TabularSetup(spread=spread, mean=flat.mean(axis=0), mask=mask, fill=fill, noise=tuple(noise),
                        missing=tuple(missing), shift=tuple(shift), scale=tuple(scale), mode=mode)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


def _const(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def feature_noise(x: torch.Tensor, severity: int, rng: SampleRng, setup: TabularSetup) -> torch.Tensor:
    flat = _flat(x)
    level = setup.noise[severity - 1]
    noise = rng.normal(0.0, 1.0, (flat.shape[1],)).to(flat) * level * _const(setup.spread, flat)
    return (flat + noise * _const(setup.mask, flat)).reshape(x.shape)


def missing_values(x: torch.Tensor, severity: int, rng: SampleRng, setup: TabularSetup) -> torch.Tensor:
    flat = _flat(x)
    rate = setup.missing[severity - 1]
    gone = (rng.uniform(0.0, 1.0, (flat.shape[1],)).to(flat.device) < rate) & _const(setup.mask, flat).bool()
    fill = torch.full_like(flat, math.nan) if setup.fill is None else _const(setup.fill, flat).expand_as(flat)
    return torch.where(gone, fill, flat).reshape(x.shape)


def feature_shift(x: torch.Tensor, severity: int, feature: int, setup: TabularSetup) -> torch.Tensor:
    flat = _flat(x).clone()
    column = flat[:, feature]
    if setup.mode == "shift":
        flat[:, feature] = column + setup.shift[severity - 1] * float(setup.spread[feature])
    else:
        centre = float(setup.mean[feature])
        flat[:, feature] = centre + setup.scale[severity - 1] * (column - centre)
    return flat.reshape(x.shape)


def handles_missing(logits_fn: object, x: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the model gives finite scores when perturbable values are NaN (its own imputation): probed on up to
    8 rows, one NaN feature at a time and all at once."""
    rows = np.asarray(x[:8], dtype=np.float32).reshape(min(8, len(x)), -1)
    probes = []
    for j in np.flatnonzero(mask)[:16]:
        probe = rows.copy()
        probe[:, j] = np.nan
        probes.append(probe)
    every = rows.copy()
    every[:, mask] = np.nan
    probes.append(every)
    batch = np.concatenate(probes).reshape(-1, *x.shape[1:])
    try:
        scores = logits_fn(batch)  # type: ignore[operator]
    except Exception:  # a model that refuses NaN inputs does not impute them
        return False
    return bool(torch.isfinite(torch.as_tensor(scores)).all())
