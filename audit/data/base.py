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

Modality = Literal["image", "tabular", "text"]
Task = Literal["classification", "regression", "multilabel"]
InputKind = Literal["continuous", "tokens"]
TASKS: tuple[str, ...] = ("classification", "regression", "multilabel")
INPUT_KINDS: tuple[str, ...] = ("continuous", "tokens")
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass
class AuditData:
    """Inputs in raw space (what attacks perturb), targets, and what is known about them.

    ``task`` says what ``y`` holds: ``classification``, class indices int64 (N,) and ``class_names`` the K
    classes; ``regression``, float64 targets (N,) and ``class_names`` the one output's name; ``multilabel``,
    0/1 int64 (N, L) and ``class_names`` the L labels. ``num_classes`` is the model's output width either way.
    Text data (``texts`` set, ``modality`` "text", ``input_kind`` "tokens"): ``x`` holds the token ids, float32
    (N, max_length), padded with the tokenizer's pad id, and ``texts`` the raw strings they came from.
    """

    name: str
    x: np.ndarray  # float32, (N, *input_shape); text: token ids (N, max_length)
    y: np.ndarray  # classification: int64 (N,); regression: float64 (N,); multilabel: int64 (N, L)
    class_names: list[str]
    modality: Modality
    feature_names: list[str] | None = None
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (N,) str
    lower: np.ndarray | None = None  # per-feature lower bound, shape input_shape (None: model bounds)
    upper: np.ndarray | None = None
    perturbable: np.ndarray | None = None  # bool mask, shape input_shape; None = all
    positive_class: int | None = None  # the favourable outcome's class, where the dataset has one (fairness)
    task: Task = "classification"
    texts: list[str] | None = None  # text data: the raw strings of x's token ids (row i -> texts[i])
    task_reason: str | None = None  # why this task (model.task, or what auto saw in the target): the manifest's

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"{self.name}: task '{self.task}' is not one of {', '.join(TASKS)} (model.task)")
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        if self.task == "regression":
            self.y = np.asarray(self.y, dtype=np.float64)
        else:
            self.y = np.asarray(self.y, dtype=np.int64)
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels; they must match")
        if self.x.shape[0] == 0:
            raise DataError(f"{self.name}: no samples to audit")
        if not np.isfinite(self.x).all():
            bad = int((~np.isfinite(self.x)).reshape(len(self.x), -1).any(axis=1).sum())
            raise DataError(f"{self.name}: {bad} samples hold NaN or infinite values; clean or drop them first")
        if self.texts is not None and len(self.texts) != self.x.shape[0]:
            raise DataError(f"{self.name}: {len(self.texts)} texts but {self.x.shape[0]} rows of token ids")
        self._check_targets()
        for key, values in self.sensitive.items():
            if len(values) != len(self.y):
                raise DataError(f"sensitive column '{key}' has {len(values)} rows, expected {len(self.y)}")

    def _check_targets(self) -> None:
        """The targets fit the task: class indices, finite numbers, or 0/1 per label."""
        if self.task == "regression":
            if self.y.ndim != 1:
                raise DataError(f"{self.name}: a regression target must be one number per sample, got shape "
                                f"{list(self.y.shape)}")
            bad = int((~np.isfinite(self.y)).sum())
            if bad:
                raise DataError(f"{self.name}: {bad} regression targets are NaN or infinite; drop those rows or "
                                "fill them before the audit")
            return
        if self.task == "multilabel":
            if self.y.ndim != 2 or self.y.shape[1] != len(self.class_names):
                raise DataError(f"{self.name}: multi-label targets must be (N, {len(self.class_names)}) 0/1, one "
                                f"column per label in class_names; got shape {list(self.y.shape)}")
            if not np.isin(self.y, (0, 1)).all():
                raise DataError(f"{self.name}: multi-label targets must be 0 or 1, found "
                                f"{sorted(set(np.unique(self.y).tolist()) - {0, 1})[:5]}")
            return
        if self.positive_class is not None and not 0 <= self.positive_class < len(self.class_names):
            raise DataError(f"{self.name}: positive_class {self.positive_class} is not a class index "
                            f"0..{len(self.class_names) - 1}")
        if self.y.min() < 0 or self.y.max() >= len(self.class_names):
            raise DataError(
                f"{self.name}: labels range {self.y.min()}..{self.y.max()} but there are {len(self.class_names)} "
                "class names; labels must be 0..K-1 (set data.class_names to the K classes)"
            )

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """The model's output width: K classes, 1 for regression, L labels."""
        return len(self.class_names)

    @property
    def input_kind(self) -> InputKind:
        """``tokens`` for text (x holds token ids: no L-p perturbation, no input gradients), else ``continuous``."""
        return "tokens" if self.texts is not None else "continuous"

    def sha256(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.x.tobytes())
        digest.update(self.y.tobytes())
        for text in self.texts or ():  # the token ids may map several texts to one (truncation, unknown words)
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
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
            task=self.task,
            texts=[self.texts[int(i)] for i in np.arange(len(self.y))[index]] if self.texts is not None else None,
            task_reason=self.task_reason,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256(),
            "n_samples": self.n_samples,
            "modality": self.modality,
            "task": self.task,
            "task_reason": self.task_reason,
            "input_kind": self.input_kind,
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
