"""Results: plain, versioned JSON. No torch here: reports, app.py and the gate import this.

A run directory holds ``results.json`` (this module's ``RunResult``), ``artifacts/`` and
``report.html``. ``results.json`` is rewritten atomically after every section, so a crash
loses at most the section in flight.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from audit.errors import ResultsError

SCHEMA_VERSION = "1.0"
RESULTS_FILE = "results.json"
ARTIFACTS_DIR = "artifacts"
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["ok", "error", "skipped"]
Cell = str | float | int | bool | None


def _clean_number(value: Any) -> float | None:
    """JSON has no NaN/inf: store them as null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _clean_cell(value: Any) -> Cell:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        return _clean_number(value)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class Finding:
    severity: Severity
    message: str
    code: str | None = None
    metric: str | None = None
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "message": self.message}
        if self.code is not None:
            out["code"] = self.code
        if self.metric is not None:
            out["metric"] = self.metric
        if self.value is not None:
            out["value"] = _clean_number(self.value)
        return out


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[_clean_cell(c) for c in row] for row in self.rows],
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class SectionResult:
    """What one plugin produced. Built by the plugin base class; plugins fill it in."""

    name: str
    plugin: str
    title: str = ""
    status: Status = "ok"
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    error: dict[str, str] | None = None

    # -- helpers plugins use -------------------------------------------------
    def metric(self, name: str, value: Any) -> None:
        """Record a metric. ``name`` is relative to the section unless it already starts with it."""
        full = name if name.startswith(self.name + ".") else f"{self.name}.{name}"
        self.metrics[full] = _clean_number(value)

    def finding(self, severity: Severity, message: str, **kwargs: Any) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        self.findings.append(Finding(severity, message, **kwargs))

    def table(self, name: str, title: str, columns: list[str], rows: list[list[Any]],
              description: str | None = None) -> None:
        self.tables.append(Table(name, title, list(columns), [list(r) for r in rows], description))

    def figure(self, spec: dict[str, Any]) -> None:
        for key in ("name", "title", "kind"):
            if key not in spec:
                raise ValueError(f"figure spec needs '{key}'")
        self.figures.append(_jsonable(spec))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plugin": self.plugin,
            "title": self.title or self.name,
            "status": self.status,
            "params": _jsonable(self.params),
            "metrics": {k: _clean_number(v) for k, v in self.metrics.items()},
            "tables": [t.to_dict() for t in self.tables],
            "figures": [_jsonable(f) for f in self.figures],
            "findings": [f.to_dict() for f in self.findings],
            "artifacts": dict(self.artifacts),
            "notes": list(self.notes),
            "duration_s": round(float(self.duration_s), 6),
            "error": self.error,
        }


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
        return _clean_number(value)
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist())
    return str(value)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"


def load_schema() -> dict[str, Any]:
    text = resources.files("audit").joinpath("schema/results.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_results(data: dict[str, Any]) -> None:
    """Raise ``ResultsError`` listing every schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:20]]
        raise ResultsError("results do not match the nnaudit results schema:\n" + "\n".join(lines))


def resolve_results_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() else p


def load_results(path: str | os.PathLike[str], *, validate: bool = True) -> dict[str, Any]:
    """Read a results.json (or a run directory holding one)."""
    file = resolve_results_path(path)
    if not file.exists():
        raise ResultsError(f"no results file at {file}: pass a run directory written by `nnaudit run` or "
                           "`nnaudit demo`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"cannot read {file}: {err}. Re-run the audit to rewrite it.") from err
    if not isinstance(data, dict):
        raise ResultsError(f"{file} does not hold a JSON object; it is not an nnaudit results file")
    if validate:
        validate_results(data)
    return data


def all_metrics(data: dict[str, Any]) -> dict[str, float | None]:
    """Every metric of every section, by its dotted name."""
    out: dict[str, float | None] = {}
    for section in data.get("sections", {}).values():
        out.update(section.get("metrics", {}))
    return out


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Run directories (those holding results.json) under ``root``, newest first."""
    base = Path(root)
    if (base / RESULTS_FILE).exists():
        return [base]
    if not base.is_dir():
        return []
    runs = [p.parent for p in base.rglob(RESULTS_FILE)]
    return sorted(runs, key=lambda p: (p / RESULTS_FILE).stat().st_mtime, reverse=True)
