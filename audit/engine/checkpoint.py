"""What a section leaves in memory for later sections, saved to its run's artifacts and reloaded on resume.

Generic: any value that is a numpy array, a JSON scalar, or a dataclass whose fields are those
(``AdversarialOutcome``, ``AttributionSet``) is saved; the runner calls this after every
section, so no section writes its own checkpoint. One NPZ per section (no pickles): the arrays,
plus a JSON index saying which store (``adversarial``, ``attributions``), key,
dataclass and field each array belongs to. An array memory-mapped from a whole ``.npy`` file of the
run's artifacts (the robustness section's adversarial examples) is saved as a reference to that
file, not copied, and comes back memory-mapped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audit.jsonio import atomic_write_bytes

FORMAT = "nnaudit.context/1"
_SCALARS = (str, int, float, bool, type(None))


class NotPersistable(TypeError):
    """A value a section left for later ones has a type this module cannot save."""


def _npy_reference(value: np.ndarray, base: Path) -> str | None:
    """The path of the ``.npy`` file ``value`` maps in full, relative to ``base``'s parent (the run's artifacts)."""
    filename = getattr(value, "filename", None)
    if not isinstance(value, np.memmap) or not filename or not value.flags.c_contiguous:
        return None
    file = Path(filename).resolve()
    if not file.name.endswith(".npy") or base.parent not in file.parents:
        return None
    try:
        whole = np.load(file, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if whole.shape != value.shape or whole.dtype != value.dtype or value.offset != whole.offset:
        return None
    return os.path.relpath(file, base)


def _entry(value: Any, prefix: str, arrays: dict[str, np.ndarray], base: Path) -> dict[str, Any]:
    if isinstance(value, np.ndarray):
        reference = _npy_reference(value, base)
        if reference is not None:
            return {"kind": "npy", "path": reference}
        if value.dtype == object:
            raise NotPersistable(f"{prefix}: object arrays cannot be saved without pickle")
        arrays[prefix] = value
        return {"kind": "array", "array": prefix}
    if isinstance(value, np.generic):
        return {"kind": "scalar", "value": value.item()}
    if isinstance(value, _SCALARS):
        return {"kind": "scalar", "value": value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _entry(getattr(value, f.name), f"{prefix}.{f.name}", arrays, base)
                  for f in dataclasses.fields(value)}
        return {"kind": "dataclass", "type": f"{type(value).__module__}:{type(value).__qualname__}",
                "fields": fields}
    raise NotPersistable(f"{prefix}: a {type(value).__name__} cannot be saved (use arrays, scalars or a dataclass "
                         "of them)")


def save(path: Path, stores: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``{store: {key: value}}`` to ``path`` (NPZ, atomically). Raises ``NotPersistable``."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, Any]] = {}
    base = Path(path).resolve().parent
    for store, entries in stores.items():
        index[store] = {}
        for n, (key, value) in enumerate(entries.items()):
            index[store][key] = _entry(value, f"{store}.{n}", arrays, base)
    meta = json.dumps({"format": FORMAT, "stores": index}, allow_nan=False)
    buffer = io.BytesIO()
    np.savez(buffer, __index__=np.array(meta), **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def _resolve(type_name: str, types: Mapping[str, type]) -> type:
    cls = types.get(type_name.rsplit(":", 1)[-1])
    if cls is None:
        raise ValueError(f"the checkpoint holds a {type_name}, which this nnaudit does not know")
    return cls


def _value(entry: Mapping[str, Any], npz: Any, types: Mapping[str, type], base: Path) -> Any:
    kind = entry.get("kind")
    if kind == "array":
        return npz[entry["array"]]
    if kind == "npy":
        return np.load(base / entry["path"], mmap_mode="c")
    if kind == "scalar":
        return entry["value"]
    if kind == "dataclass":
        cls = _resolve(entry["type"], types)
        return cls(**{name: _value(field, npz, types, base) for name, field in entry["fields"].items()})
    raise ValueError(f"unknown checkpoint entry kind {kind!r}")


def load(path: str | os.PathLike[str], types: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """Read what ``save`` wrote. ``types`` maps dataclass names to classes. Raises ``ValueError``/``OSError``."""
    with np.load(Path(path), allow_pickle=False) as npz:
        meta = json.loads(str(npz["__index__"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not an nnaudit context checkpoint ({meta.get('format')!r})")
        base = Path(path).parent
        return {store: {key: _value(entry, npz, types, base) for key, entry in entries.items()}
                for store, entries in meta["stores"].items()}
