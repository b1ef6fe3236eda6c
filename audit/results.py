"""Results: plain, versioned JSON. No torch here: reports, app.py and the gate import this.

A run directory holds ``results.json``, ``artifacts/`` and ``report.html`` (and, while a run
writes it, ``.nnaudit.lock``). ``results.json`` is rewritten atomically when a section starts
and after it ends, so a crash loses at most the section in flight.

Numbers that JSON cannot hold: a metric, finding value or table cell that is +/- infinity is
written as the string ``"Infinity"`` / ``"-Infinity"`` (e.g. the median minimal adversarial eps
of a model no attack fooled); NaN ("could not compute") is written as ``null``. Every reader
decodes through ``decode_number`` (or ``all_metrics``, which uses it), so the gate, the reports
and the dashboard read the same values. Figure data drops non-finite points (``null``): a
figure cannot draw them. The encoding and the atomic writes live in ``audit.jsonio`` and are
re-exported here; how a run stands (running, finished, dead) is ``audit.runs``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from audit.errors import ResultsError
from audit.jsonio import BAD_NUMBER as BAD_NUMBER
from audit.jsonio import NEGATIVE_INFINITY as NEGATIVE_INFINITY
from audit.jsonio import POSITIVE_INFINITY as POSITIVE_INFINITY
from audit.jsonio import Cell as Cell
from audit.jsonio import Encoded as Encoded
from audit.jsonio import _clean_cell, _jsonable
from audit.jsonio import atomic_write_bytes as atomic_write_bytes
from audit.jsonio import atomic_write_text as atomic_write_text
from audit.jsonio import decode_cell as decode_cell
from audit.jsonio import decode_number as decode_number
from audit.jsonio import dumps as dumps
from audit.jsonio import encode_number as encode_number

# 2.3: verdict waivers, ungated findings, check status waived; 2.2: manifest run_id and git;
# 2.1: verdict, directions, figure kinds image_grid/tree/small_multiples; 2.0: "Infinity"
SCHEMA_VERSION = "2.3"
RESULTS_FILE = "results.json"
ARTIFACTS_DIR = "artifacts"
VERDICT_KEY = "verdict"  # the top-level run verdict (audit.decide.verdict builds it, the runner stores it)
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["ok", "error", "skipped"]
Direction = Literal["higher", "lower"] | None  # which way a metric is better; None: neither (a count, a setting)
DIRECTIONS: tuple[str, ...] = ("higher", "lower")

NEWER_SCHEMA = ("{file} was written by nnaudit {writer} with results schema {version}; this nnaudit ({ours}) reads "
                "results schema up to {supported}. Upgrade nnaudit (pip install -U nnaudit) to read it")
BAD_SCHEMA_VERSION = ("{file} has schema_version {version!r}, not a version such as {supported!r}; "
                      "it is not an nnaudit results file, or it was edited by hand")


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
            out["value"] = encode_number(self.value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(data["severity"], data["message"], code=data.get("code"), metric=data.get("metric"),
                   value=decode_number(data.get("value")))


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        return cls(data["name"], data["title"], list(data["columns"]), [list(r) for r in data["rows"]],
                   data.get("description"))


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
    # set by the runner: what the section's results depend on (a resumed run keeps the section when
    # it is unchanged), and where the outputs it left for later sections were saved
    fingerprint: str | None = None
    context: str | None = None
    # metric name -> the direction of better its section declares ("higher", "lower", None: neither); set by
    # the plugin base class from the plugin's ``metric_directions``. Metrics it does not name have no direction.
    directions: dict[str, Direction] = field(default_factory=dict)

    # -- helpers plugins use -------------------------------------------------
    def metric(self, name: str, value: Any) -> None:
        """Record a metric. ``name`` is relative to the section unless it already starts with it."""
        full = name if name.startswith(self.name + ".") else f"{self.name}.{name}"
        self.metrics[full] = decode_number(encode_number(value))

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
        out = {
            "name": self.name,
            "plugin": self.plugin,
            "title": self.title or self.name,
            "status": self.status,
            "params": _jsonable(self.params),
            "metrics": {k: encode_number(v) for k, v in self.metrics.items()},
            "tables": [t.to_dict() for t in self.tables],
            "figures": [_jsonable(f) for f in self.figures],
            "findings": [f.to_dict() for f in self.findings],
            "artifacts": dict(self.artifacts),
            "notes": list(self.notes),
            "duration_s": round(float(self.duration_s), 6),
            "error": self.error,
        }
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        if self.context is not None:
            out["context"] = self.context
        if self.directions:
            out["directions"] = dict(self.directions)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SectionResult:
        """The inverse of ``to_dict`` (a resumed run rebuilds the sections it keeps)."""
        return cls(
            name=data["name"], plugin=data["plugin"], title=data.get("title", ""), status=data["status"],
            params=dict(data.get("params", {})),
            metrics={k: decode_number(v) for k, v in data.get("metrics", {}).items()},
            tables=[Table.from_dict(t) for t in data.get("tables", [])],
            figures=[dict(f) for f in data.get("figures", [])],
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            artifacts=dict(data.get("artifacts", {})), notes=list(data.get("notes", [])),
            duration_s=float(data.get("duration_s", 0.0)), error=data.get("error"),
            fingerprint=data.get("fingerprint"), context=data.get("context"),
            directions=dict(data.get("directions", {})),
        )


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
    check_schema_version(data, file)
    if validate:
        validate_results(data)
    return data


def _version_tuple(text: str) -> tuple[int, int] | None:
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def check_schema_version(data: dict[str, Any], file: str | os.PathLike[str] = "results") -> None:
    """Refuse a file from a newer results schema with a message naming the nnaudit that wrote it."""
    version = data.get("schema_version")
    if version is None:
        return  # the schema check names the missing key
    parsed = _version_tuple(version) if isinstance(version, str) else None
    if parsed is None:
        raise ResultsError(BAD_SCHEMA_VERSION.format(file=file, version=version, supported=SCHEMA_VERSION))
    if parsed > _version_tuple_or_raise(SCHEMA_VERSION):
        from audit import __version__

        manifest = data.get("manifest")
        writer = manifest.get("nnaudit_version") if isinstance(manifest, dict) else None
        raise ResultsError(NEWER_SCHEMA.format(file=file, writer=writer or "(unknown version)", version=version,
                                               ours=__version__, supported=SCHEMA_VERSION))


def _version_tuple_or_raise(text: str) -> tuple[int, int]:
    parsed = _version_tuple(text)
    if parsed is None:  # pragma: no cover - SCHEMA_VERSION is a constant
        raise ValueError(text)
    return parsed


def all_metrics(data: dict[str, Any]) -> dict[str, float | None]:
    """Every metric of every section, by its dotted name, decoded (inf as float, "could not compute" as None)."""
    out: dict[str, float | None] = {}
    for section in data.get("sections", {}).values():
        out.update({name: decode_number(value) for name, value in section.get("metrics", {}).items()})
    return out


def resolve_directions(patterns: Mapping[str, Direction], section: str,
                       metrics: Mapping[str, Any]) -> dict[str, Direction]:
    """The direction of better of each metric, from a plugin's ``metric_directions``.

    ``patterns`` maps shell-style patterns of metric names relative to the section (``accuracy``,
    ``*.robust_accuracy``, ``*.ci_low``) to "higher", "lower" or None; the first pattern that matches a
    metric wins (so list exceptions such as ``*.ci_low`` first). Metrics no pattern matches are left out.
    """
    for direction in patterns.values():
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"metric direction must be 'higher', 'lower' or None, got {direction!r}")
    out: dict[str, Direction] = {}
    prefix = section + "."
    for name in metrics:
        relative = name.removeprefix(prefix)
        for pattern, direction in patterns.items():
            if fnmatchcase(relative, pattern):
                out[name] = direction
                break
    return out


def metric_direction(data: Mapping[str, Any], metric: str) -> Direction:
    """The direction of better the run's results declare for ``metric`` (None: neither, or not recorded:
    results written before schema 2.1 carry no directions)."""
    for section in data.get("sections", {}).values():
        directions = section.get("directions") if isinstance(section, Mapping) else None
        if isinstance(directions, Mapping) and metric in directions:
            value = directions[metric]
            return value if value in DIRECTIONS else None
    return None


def all_directions(data: Mapping[str, Any]) -> dict[str, Direction]:
    """Every declared direction of every section, by metric name (empty for results without directions)."""
    out: dict[str, Direction] = {}
    for section in data.get("sections", {}).values():
        directions = section.get("directions") if isinstance(section, Mapping) else None
        if isinstance(directions, Mapping):
            out.update({str(k): v if v in DIRECTIONS else None for k, v in directions.items()})
    return out
