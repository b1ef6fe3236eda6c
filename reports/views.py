"""View models: pure functions from a results dict to plain dicts and lists.

The HTML report (``reports.html``) and the dashboard (``app.py``) both read these, so a number is
formatted (``audit.numbers``) and a finding is ordered (``audit.findings``) the same way everywhere.
Nothing here draws, writes files or imports torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from audit.findings import run_findings, severity_rank
from audit.numbers import MISSING_TEXT, format_number
from audit.results import SEVERITIES, all_metrics, decode_cell, decode_number
from audit.runs import RunState, run_state, run_title

SEVERITIES_WORST_FIRST: tuple[str, ...] = tuple(reversed(SEVERITIES))
STATUS_ORDER: tuple[str, ...] = ("ok", "error", "skipped")
# how each run state reads in a report or the dashboard: (badge text, one-line meaning)
RUN_STATUS_TEXT: dict[str, tuple[str, str]] = {
    "complete": ("complete", "every section ran without error"),
    "failed": ("failed", "every section ran, and at least one failed"),
    "interrupted": ("interrupted", "stopped before the end; the sections below are the ones that finished"),
    "incomplete": ("incomplete", "its process stopped without finishing; the sections below are the ones that "
                                 "finished"),
    "running": ("running", "still running; the sections below are the ones finished so far"),
}

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


# -- formatting -----------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A metric or table cell as text, one rule everywhere (report, dashboard, summaries).

    Numbers in the short style of ``audit.numbers.format_number``: 3 significant digits in plain
    decimal notation for ordinary magnitudes (1e-4 <= |x| < 1e6): ``0.963``, ``0.0500``, ``12.3``,
    ``0.000549``, and whole units from 1000 up (``123457``); whole numbers from 2 up as integers
    (``1797``); beyond that range 2 significant digits in scientific notation (``1.1e-16``,
    ``2.5e+07``), since such values are not ordinary; ``—`` for null/NaN, ``∞``. Booleans read
    true/false; anything else as its text.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (int, float)):
        return format_number(value, style="short")
    return str(value)


def format_duration(seconds: float | None) -> str:
    """Wall time as text: ``850 ms``, ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING_TEXT
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def slugify(text: str) -> str:
    """An HTML id fragment: letters, digits, ``_`` and ``-``."""
    slug = _SLUG_UNSAFE.sub("-", text).strip("-")
    return slug or "section"


def short_hash(digest: str | None, length: int = 12) -> str:
    if not digest:
        return MISSING_TEXT
    return digest[:length]


# -- findings -------------------------------------------------------------------------------


def finding_view(finding: Mapping[str, Any], section: str | None = None, anchor: str | None = None) -> dict[str, Any]:
    value = decode_number(finding.get("value"))
    return {
        "severity": finding.get("severity", "info"),
        "message": finding.get("message", ""),
        "code": finding.get("code"),
        "metric": finding.get("metric"),
        "value": value,
        "value_text": None if value is None else format_value(value),
        "section": section,
        "anchor": anchor or ("section-" + slugify(section) if section else None),
    }


def sort_findings(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first; the original order among equals (stable sort)."""
    return sorted(findings, key=lambda f: -severity_rank(f["severity"]))


def all_findings(results: Mapping[str, Any], *, min_severity: str = "info") -> list[dict[str, Any]]:
    """Every finding of every section at ``min_severity`` or worse, worst first, with its section
    (``audit.findings.run_findings``, as views)."""
    anchors = section_anchors(results)
    return [finding_view(f, f["section"], anchors[f["section"]])
            for f in run_findings(results, min_severity=min_severity)]


def count_findings(findings: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Counts for every severity (zeros included), worst first."""
    counts = dict.fromkeys(SEVERITIES_WORST_FIRST, 0)
    for finding in findings:
        severity = finding.get("severity", "info")
        if severity in counts:
            counts[severity] += 1
    return counts


def worst_severity(findings: Iterable[Mapping[str, Any]]) -> str | None:
    ranked = [f.get("severity", "info") for f in findings]
    return max(ranked, key=severity_rank) if ranked else None


# -- run summary ----------------------------------------------------------------------------


def _sections(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = results.get("sections", {})
    return sections


def wall_time(results: Mapping[str, Any]) -> float | None:
    """``timings.total`` when the run recorded it, else the sum of section durations."""
    manifest = results.get("manifest", {})
    total = manifest.get("timings", {}).get("total")
    if isinstance(total, (int, float)):
        return float(total)
    durations = [s.get("duration_s", 0.0) for s in _sections(results).values()]
    return float(sum(durations)) if durations else None


def section_overview(name: str, section: Mapping[str, Any], anchor: str) -> dict[str, Any]:
    findings = section.get("findings", [])
    return {
        "name": name,
        "title": section.get("title") or name,
        "status": section.get("status", "ok"),
        "duration_s": section.get("duration_s"),
        "duration_text": format_duration(section.get("duration_s")),
        "n_metrics": len(section.get("metrics", {})),
        "n_findings": len(findings),
        "worst_severity": worst_severity(findings),
        "anchor": anchor,
    }


def section_anchors(results: Mapping[str, Any]) -> dict[str, str]:
    """A unique HTML id per section name."""
    anchors: dict[str, str] = {}
    used: set[str] = set()
    for name in _sections(results):
        base = "section-" + slugify(name)
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        anchors[name] = anchor
    return anchors


def run_summary(results: Mapping[str, Any], state: RunState | None = None) -> dict[str, Any]:
    """The header of a report: what was audited, where, and how it went.

    ``state`` (``audit.runs.run_state`` with the run directory) tells a live run from a dead
    one; without it the stored status is shown.
    """
    state = state if state is not None else run_state(dict(results))
    manifest = results.get("manifest", {})
    model = manifest.get("model", {})
    data = manifest.get("data", {})
    sections = _sections(results)
    anchors = section_anchors(results)
    overview = [section_overview(name, s, anchors[name]) for name, s in sections.items()]
    findings = [f for s in sections.values() for f in s.get("findings", [])]
    status_counts = {status: 0 for status in STATUS_ORDER}
    for item in overview:
        status_counts[item["status"]] = status_counts.get(item["status"], 0) + 1
    seconds = wall_time(results)
    return {
        "title": run_title(results),
        "status": state.status,
        "status_text": RUN_STATUS_TEXT.get(state.status, (state.status, ""))[1],
        "status_reason": state.reason,
        "finished": state.finished,
        "never_ran": list(state.never_ran),
        "in_flight": state.in_flight,
        "nnaudit_version": manifest.get("nnaudit_version", MISSING_TEXT),
        "schema_version": results.get("schema_version", MISSING_TEXT),
        "created_at": manifest.get("created_at", MISSING_TEXT),
        "finished_at": manifest.get("finished_at"),
        "device": manifest.get("device", MISSING_TEXT),
        "seed": manifest.get("seed"),
        "python": manifest.get("python"),
        "platform": manifest.get("platform"),
        "wall_time_s": seconds,
        "wall_time_text": format_duration(seconds),
        "model": _model_view(model),
        "data": _data_view(data),
        "finding_counts": count_findings(findings),
        "n_findings": len(findings),
        "n_metrics": len(all_metrics(dict(results))),
        "section_counts": status_counts,
        "sections": overview,
    }


OUTPUT_WIDTH = {"regression": "one value (regression)", "multilabel": "{} labels (a sigmoid each)"}


def _model_view(model: Mapping[str, Any]) -> dict[str, Any]:
    bounds = model.get("input_bounds")
    return {
        "kind": model.get("kind", MISSING_TEXT),
        "source": model.get("source"),
        "sha256": model.get("sha256"),
        "sha256_short": short_hash(model.get("sha256")),
        "num_classes": model.get("num_classes"),
        "output_kind": model.get("output_kind"),
        "has_gradients": model.get("has_gradients"),
        "num_parameters": model.get("num_parameters"),
        "input_bounds_text": None if bounds is None else f"[{bounds[0]:g}, {bounds[1]:g}]",
        "precision": model.get("precision"),
        "precision_note": (model.get("precision_check") or {}).get("note"),
        "compiled": bool(model.get("compiled")),
        "out_of_memory_backoff": dict(model.get("out_of_memory_backoff") or {}),
    }


def _data_view(data: Mapping[str, Any]) -> dict[str, Any]:
    class_names = list(data.get("class_names", []))
    shape = data.get("input_shape")
    return {
        "name": data.get("name", MISSING_TEXT),
        "sha256": data.get("sha256"),
        "sha256_short": short_hash(data.get("sha256")),
        "n_samples": data.get("n_samples"),
        "modality": data.get("modality"),
        "task": data.get("task") or "classification",
        "task_reason": data.get("task_reason"),
        "class_names": class_names,
        "n_classes": len(class_names),
        "input_shape_text": None if not shape else " × ".join(str(d) for d in shape),
        "feature_names": data.get("feature_names"),
        "sensitive": list(data.get("sensitive", [])),
    }


def manifest_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Label/value pairs describing the run, for a key-value table."""
    summary = run_summary(results)
    model, data = summary["model"], summary["data"]
    rows = [
        ("Model", f"{model['kind']}" + (f" ({model['source']})" if model["source"] else "")),
        ("Model sha256", model["sha256_short"]),
        ("Output", f"{model['output_kind']}, "
                   f"{OUTPUT_WIDTH.get(data['task'], '{} classes').format(model['num_classes'])}, "
                   f"{'gradients' if model['has_gradients'] else 'black-box (no gradients)'}"),
        ("Task", data["task"] + (f" ({data['task_reason']})" if data["task_reason"] else "")),
        ("Data", f"{data['name']} ({data['modality']}, {format_value(data['n_samples'])} samples)"),
        ("Data sha256", data["sha256_short"]),
        ("Device", str(summary["device"])),
        ("Seed", format_value(summary["seed"])),
        ("nnaudit", str(summary["nnaudit_version"])),
        ("Started", str(summary["created_at"])),
        ("Wall time", summary["wall_time_text"]),
    ]
    if model["num_parameters"] is not None:
        rows.insert(3, ("Parameters", f"{model['num_parameters']:,}"))
    if model["precision_note"]:
        rows.append(("Precision", str(model["precision_note"])))
    elif model["precision"] not in (None, "fp32"):
        rows.append(("Precision", str(model["precision"])))
    if model["compiled"]:
        rows.append(("Compiled", "torch.compile"))
    if model["out_of_memory_backoff"]:
        rows.append(("Out-of-memory back-off", "; ".join(f"{what}: {chain}" for what, chain
                                                         in model["out_of_memory_backoff"].items())))
    return rows


# -- sections -------------------------------------------------------------------------------


def metric_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per metric, in recorded order: full dotted name, decoded value (inf as float), text."""
    rows = []
    for name, raw in metrics.items():
        value = decode_number(raw)
        rows.append({"name": name, "value": value, "text": format_value(value)})
    return rows


def table_view(table: Mapping[str, Any]) -> dict[str, Any]:
    rows = [[decode_cell(cell) for cell in row] for row in table.get("rows", [])]
    return {
        "name": table.get("name", ""),
        "title": table.get("title") or table.get("name", ""),
        "description": table.get("description"),
        "columns": list(table.get("columns", [])),
        "rows": [list(row) for row in rows],
        "text_rows": [[format_value(cell) for cell in row] for row in rows],
        "numeric": [_is_numeric_column(rows, i) for i in range(len(table.get("columns", [])))],
    }


def _is_numeric_column(rows: Sequence[Sequence[Any]], index: int) -> bool:
    cells = [row[index] for row in rows if index < len(row) and row[index] is not None]
    return bool(cells) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cells)


def section_view(name: str, section: Mapping[str, Any], *, anchor: str | None = None) -> dict[str, Any]:
    """Everything one section shows, in display order and display form."""
    anchor = anchor or "section-" + slugify(name)
    findings = sort_findings(finding_view(f, name, anchor) for f in section.get("findings", []))
    error = section.get("error")
    return {
        **section_overview(name, section, anchor),
        "plugin": section.get("plugin", MISSING_TEXT),
        "params": dict(section.get("params", {})),
        "metrics": metric_rows(section.get("metrics", {})),
        "tables": [table_view(t) for t in section.get("tables", [])],
        "findings": findings,
        "finding_counts": count_findings(findings),
        "figures": [dict(f) for f in section.get("figures", [])],
        "artifacts": dict(section.get("artifacts", {})),
        "notes": list(section.get("notes", [])),
        "error": None if error is None else {
            "type": error.get("type", "Error"),
            "message": error.get("message", ""),
            "traceback": error.get("traceback"),
        },
    }


def section_views(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    anchors = section_anchors(results)
    return [section_view(name, s, anchor=anchors[name]) for name, s in _sections(results).items()]


# -- comparing runs -------------------------------------------------------------------------


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Suffix repeated labels with ``(2)``, ``(3)``… so they can be column names."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def compare_runs(runs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """A table (schema shape: name, title, columns, rows) of every metric across runs.

    Rows follow the order metrics first appear; a run without a metric has ``None`` there.
    The last column says whether the runs differ on that metric.
    """
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"compare_runs got {len(runs)} runs but {len(labels)} labels; pass one label per run")
    names = unique_labels(list(labels) if labels is not None else [run_title(r) for r in runs])
    per_run = [all_metrics(dict(r)) for r in runs]
    order: dict[str, None] = {}
    for metrics in per_run:
        order.update(dict.fromkeys(metrics))
    rows: list[list[Any]] = []
    for metric in order:
        values = [metrics.get(metric) for metrics in per_run]
        rows.append([metric, *values, len({repr(v) for v in values}) > 1])
    return {
        "name": "compare_runs",
        "title": f"Metrics across {len(runs)} runs",
        "columns": ["metric", *names, "differs"],
        "rows": rows,
    }
