"""Arrays: NPZ files, IDX files (MNIST / Fashion-MNIST format) and torch tensors saved with ``torch.save``
(``data.source: npz | idx | torch``). torch is imported by the ``torch`` source alone, and loads with
``weights_only=True``."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from audit.config import DataConfig
from audit.data.base import AuditData, image_or_tabular
from audit.data.targets import task_targets
from audit.errors import ConfigError, DataError

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


def load_arrays(config: DataConfig, *, task: str = "auto") -> AuditData:
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
    y = np.asarray(y)
    key = f"{label_key} in {Path(config.path).name}"
    if y.ndim > 2 or (y.ndim == 2 and len(y) != len(x)):
        y = y.reshape(-1)  # e.g. labels stored (1, N): as before, one label per row
    found = task_targets(y, task=task, class_names=config.class_names, key=key)
    missing = [c for c in config.sensitive if c not in stored]
    if missing:
        raise ConfigError("data.sensitive", f"{missing} not in {config.path}, which holds {holds or 'only x and y'}; "
                          "store one value per row under each name (an npz file or a torch dict), or use csv/parquet")
    modality = image_or_tabular(x)
    return AuditData(
        name=Path(config.path).name,
        x=x,
        y=found.y,
        class_names=found.class_names,
        modality=modality,
        feature_names=None if modality == "image" else [f"x{i}" for i in range(x.shape[1])],
        sensitive={c: np.asarray(stored[c]).reshape(-1).astype(str) for c in config.sensitive},
        lower=None,
        upper=None,
        task=found.task,
        task_reason=found.reason,
    )
