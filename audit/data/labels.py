"""Labels of user files as class indices 0..K-1, and their class names."""

from __future__ import annotations

import numpy as np

from audit.errors import ConfigError, DataError


def encode_labels(values: np.ndarray, class_names: list[str] | None,
                   key: str = "data") -> tuple[np.ndarray, list[str]]:
    """Labels -> class indices 0..K-1 and class names. Numbers must already be the model's class indices
    (integers 0..K-1; 1.0 counts as 1); text labels map to data.class_names, or to their sorted values.
    ``key``: the config key that names the labels, for the error message."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        codes = numeric_labels(values, key)
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


def numeric_labels(values: np.ndarray, key: str) -> np.ndarray:
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
