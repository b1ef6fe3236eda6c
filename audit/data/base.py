"""``AuditData`` (what every plugin audits) and what the loaders share: the seeded stratified subset, the fixed
train/test split of the built-in datasets, sensitive-column selection and standardization.

Numpy only at import time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from audit.errors import ConfigError, DataError

Modality = Literal["image", "tabular"]
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass
class AuditData:
    """Inputs in raw space (what attacks perturb), integer labels, and what is known about them."""

    name: str
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64, (N,)
    class_names: list[str]
    modality: Modality
    feature_names: list[str] | None = None
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (N,) str
    lower: np.ndarray | None = None  # per-feature lower bound, shape input_shape (None: model bounds)
    upper: np.ndarray | None = None
    perturbable: np.ndarray | None = None  # bool mask, shape input_shape; None = all
    positive_class: int | None = None  # the favourable outcome's class, where the dataset has one (fairness)

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels; they must match")
        if self.x.shape[0] == 0:
            raise DataError(f"{self.name}: no samples to audit")
        if not np.isfinite(self.x).all():
            bad = int((~np.isfinite(self.x)).reshape(len(self.x), -1).any(axis=1).sum())
            raise DataError(f"{self.name}: {bad} samples hold NaN or infinite values; clean or drop them first")
        if self.positive_class is not None and not 0 <= self.positive_class < len(self.class_names):
            raise DataError(f"{self.name}: positive_class {self.positive_class} is not a class index "
                            f"0..{len(self.class_names) - 1}")
        if self.y.min() < 0 or self.y.max() >= len(self.class_names):
            raise DataError(
                f"{self.name}: labels range {self.y.min()}..{self.y.max()} but there are {len(self.class_names)} "
                "class names; labels must be 0..K-1 (set data.class_names to the K classes)"
            )
        for key, values in self.sensitive.items():
            if len(values) != len(self.y):
                raise DataError(f"sensitive column '{key}' has {len(values)} rows, expected {len(self.y)}")

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.x.tobytes())
        digest.update(self.y.tobytes())
        return digest.hexdigest()

    def subset(self, index: np.ndarray) -> AuditData:
        return AuditData(
            name=self.name,
            x=self.x[index],
            y=self.y[index],
            class_names=self.class_names,
            modality=self.modality,
            feature_names=self.feature_names,
            sensitive={k: v[index] for k, v in self.sensitive.items()},
            lower=self.lower,
            upper=self.upper,
            perturbable=self.perturbable,
            positive_class=self.positive_class,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256(),
            "n_samples": self.n_samples,
            "modality": self.modality,
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "sensitive": sorted(self.sensitive),
        }


def stratified_subset(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``limit`` rows keeping class proportions (sorted)."""
    if limit >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / counts.sum() * limit).astype(int)
    quota = np.maximum(quota, np.minimum(counts, 1))  # every class present if possible
    # hand out what rounding left, largest remainders first
    while quota.sum() < limit:
        room = counts - quota
        remainder = counts / counts.sum() * limit - quota
        remainder[room <= 0] = -np.inf
        quota[int(np.argmax(remainder))] += 1
    while quota.sum() > limit:
        quota[int(np.argmax(quota))] -= 1
    picked = [rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def split_indices(y: np.ndarray, split: str) -> np.ndarray:
    """The fixed, seeded, stratified split the built-in datasets use (demo models train on 'train')."""
    if split == "all":
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return np.sort(test if split == "test" else train)


def select_sensitive(dataset: str, provided: dict[str, np.ndarray],
                     wanted: list[str] | None) -> dict[str, np.ndarray]:
    """The sensitive columns ``data.sensitive`` names (all ``provided`` when None or empty), in that order."""
    if not wanted:
        return provided
    unknown = [c for c in wanted if c not in provided]
    if unknown:
        raise ConfigError("data.sensitive", f"dataset '{dataset}' has no sensitive columns {unknown}; "
                          f"it provides {sorted(provided) or 'none'}")
    return {c: provided[c] for c in wanted}


def standardize(frame: Any, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardized values, mean, std), with the mean and std of the rows ``train_idx`` (a constant column: std 1)."""
    values = np.asarray(frame, dtype=np.float64)
    mean = values[train_idx].mean(axis=0)
    std = values[train_idx].std(axis=0)
    std[std == 0] = 1.0
    return (values - mean) / std, mean, std


def image_or_tabular(x: np.ndarray) -> Modality:
    return "image" if x.ndim >= 3 else "tabular"
