"""Plain JSON on disk: how numbers JSON cannot hold are stored, values made JSON-able, atomic writes.

A number that is +/- infinity is stored as the string ``"Infinity"`` / ``"-Infinity"``; NaN ("could not
compute") as ``null``. ``decode_number`` is the one reader of stored numbers. Files are written so that
readers see the old file or the new one, never half (``atomic_write_bytes``). ``audit.results`` re-exports
all of it; no torch here.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from audit.errors import ResultsError

Cell = str | float | int | bool | None
Encoded = float | str | None  # a number as results.json stores it
POSITIVE_INFINITY, NEGATIVE_INFINITY = "Infinity", "-Infinity"
_INFINITIES = {POSITIVE_INFINITY: math.inf, NEGATIVE_INFINITY: -math.inf}
BAD_NUMBER = "{value!r} is not a results number: use a number, null, \"Infinity\" or \"-Infinity\""


def encode_number(value: Any) -> Encoded:
    """A number as results.json stores it: finite numbers as they are, +/-inf as "Infinity"/"-Infinity",
    NaN and None as null."""
    if value is None:
        return None
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return POSITIVE_INFINITY if number > 0 else NEGATIVE_INFINITY
    return number


def decode_number(value: Any) -> float | None:
    """The one reader of stored numbers: "Infinity"/"-Infinity" -> +/-inf, null and NaN -> None.

    ``None`` means "could not compute". Accepts in-memory floats too (NaN -> None), so a results
    dict that never went through JSON reads the same. Raises ``ResultsError`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value in _INFINITIES:
            return _INFINITIES[value]
        raise ResultsError(BAD_NUMBER.format(value=value))
    if isinstance(value, bool):
        raise ResultsError(BAD_NUMBER.format(value=value))
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ResultsError(BAD_NUMBER.format(value=value)) from err
    return None if math.isnan(number) else number


def decode_cell(value: Any) -> Cell:
    """A table cell for display: infinities decoded, every other cell as stored."""
    if isinstance(value, str) and value in _INFINITIES:
        return _INFINITIES[value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _clean_cell(value: Any) -> Encoded | int | bool:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        return encode_number(value)
    except (TypeError, ValueError):
        return str(value)


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths to plain JSON values (NaN -> null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist())
    return str(value)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # mkstemp makes it private; results and reports are meant to be read
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
