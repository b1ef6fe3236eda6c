"""Tables: CSV and Parquet files (``data.source: csv | parquet``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit.config import DataConfig
from audit.data.base import AuditData, standardize
from audit.data.targets import task_targets
from audit.errors import ConfigError, DataError


def load_table(config: DataConfig, *, task: str = "auto") -> AuditData:
    import pandas as pd

    assert config.path is not None and config.target is not None  # checked by DataConfig
    targets = [config.target] if isinstance(config.target, str) else list(config.target)
    try:
        frame = pd.read_csv(config.path) if config.source == "csv" else pd.read_parquet(config.path)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"cannot read {config.source} file {config.path}: {err}") from err
    missing = [c for c in [*targets, *config.sensitive, *(config.features or [])] if c not in frame.columns]
    if missing:
        raise ConfigError("data", f"columns {missing} not in {config.path}; it has {list(frame.columns)[:30]}")
    features = config.features or [
        c for c in frame.columns if c not in targets and (config.sensitive_as_features or c not in config.sensitive)
    ]
    categorical = [c for c in features if c in config.categorical]
    numeric = [c for c in features if c not in categorical]
    bad = [c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ConfigError("data.categorical", f"columns {bad} are not numeric; list them under data.categorical")
    num = frame[numeric].to_numpy(dtype=np.float64)
    if config.standardize and numeric:
        num, _, _ = standardize(num, np.arange(len(frame)))
    parts, names = [num], list(numeric)
    if categorical:
        dummies = pd.get_dummies(frame[categorical].astype(str), prefix_sep="=", dtype=np.float64)
        parts.append(dummies.to_numpy())
        names += [str(c) for c in dummies.columns]
    x = np.concatenate(parts, axis=1)
    key = f"data.target column '{targets[0]}'" if len(targets) == 1 else f"data.target columns {targets}"
    found = task_targets(frame[targets[0]].to_numpy() if len(targets) == 1 else frame[targets].to_numpy(),
                         task=task, class_names=config.class_names, key=key, columns=targets)
    return AuditData(
        name=Path(config.path).name,
        x=x,
        y=found.y,
        class_names=found.class_names,
        modality="tabular",
        feature_names=names,
        sensitive={c: frame[c].astype(str).to_numpy() for c in config.sensitive},
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=np.array([n in numeric for n in names]),
        task=found.task,
        task_reason=found.reason,
    )
