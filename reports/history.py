"""``nnaudit history`` as a terminal table: runs over time, oldest first, with verdict and headline.

Reads the JSON form of the store's runs (``StoredRun.to_dict()``: what ``nnaudit history --json``
prints), so the table and the JSON cannot disagree. Numbers through the one formatter
(``format_value``); text from configs and data has its control characters replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from audit.results import decode_number
from reports.views import format_value

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
BASE_COLUMNS = ("time (UTC)", "run", "model", "version", "seed", "status", "verdict")


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else _CONTROL.sub("?", str(value))


def _time(value: Any) -> str:
    return _text(value)[:16].replace("T", " ") if isinstance(value, str) else "-"


def history_columns(runs: Sequence[Mapping[str, Any]], metric: str | None = None) -> list[str]:
    """The number columns: ``metric`` alone, else every headline label of the runs, in first-seen order."""
    if metric is not None:
        return [metric]
    labels: dict[str, None] = {}
    for run in runs:
        labels.update(dict.fromkeys(run.get("headline", {})))
    return list(labels)


def history_rows(runs: Sequence[Mapping[str, Any]], metric: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the history table (cells as text)."""
    columns = history_columns(runs, metric)
    rows = []
    for run in runs:
        row = [_time(run.get("created_at")), _text(run.get("run_id"))[:8], _text(run.get("model_name")),
               _text(run.get("model_version")), _text(run.get("seed")), _text(run.get("status")),
               _text(run.get("verdict")).upper().replace("_", " ")]
        for column in columns:
            if metric is not None:
                stored = run.get("metrics", {})
                row.append(format_value(decode_number(stored[column])) if column in stored else "n/a")
            else:
                entry = run.get("headline", {}).get(column)
                row.append(format_value(decode_number(entry["value"])) if entry else "n/a")
        rows.append(row)
    return [*BASE_COLUMNS, *columns], rows


def history_table(runs: Sequence[Mapping[str, Any]], metric: str | None = None) -> str:
    """The history as aligned plain text (``n/a``: the run has no such metric; ``—``: could not compute)."""
    header, rows = history_rows(runs, metric)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


# -- trends across a model's runs (the dashboard's history view) -------------------------------------------

_ROBUST = re.compile(r"^robustness\.worst_case\.(?P<norm>[^.]+)\.eps=(?P<eps>.+)\.robust_accuracy$")
_FAITHFUL = re.compile(r"^explanations\.(?P<method>[^.]+)\.deletion_auc$")
_SHIFT = re.compile(r"^(?P<section>[^.]+)\.(?P<name>mean_accuracy|worst_accuracy|mce|relative_mce)$")
TREND_TITLES = {"robust": "Robust accuracy (worst case over attacks)", "disparity": "Worst fairness disparity",
                "faithfulness": "Explanation faithfulness (deletion AUC, lower is better)",
                "shift": "Distribution shift (corruptions)"}


def trend_metric(name: str) -> tuple[str, str] | None:
    """(group, series label) of a metric the history view charts; None for the others. The worst disparity is
    the store's headline (its metric may differ from run to run), not a metric name."""
    if (match := _ROBUST.match(name)) is not None:
        return "robust", f"{match['norm']} eps={match['eps']}"
    if (match := _FAITHFUL.match(name)) is not None:
        return "faithfulness", match["method"]
    if (match := _SHIFT.match(name)) is not None and match["section"] not in ("performance", "imbalance"):
        return "shift", f"{match['section']}.{match['name']}"
    return None


def trend_metrics(names: Sequence[str]) -> list[str]:
    """The metrics of ``names`` that the trends chart, in order."""
    return [name for name in names if trend_metric(name) is not None]


def point_label(run: Mapping[str, Any]) -> str:
    """A run on a trend's x axis: time, version (or id) and seed; unique per run, in time order."""
    version = run.get("model_version") or _text(run.get("run_id"))[:8]
    return f"{_time(run.get('created_at'))} · {_text(version)} · seed {_text(run.get('seed'))}"


def trend_specs(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``line`` figure specs (the kind the report and the dashboard chart) of the runs' trends, oldest first:
    robust accuracy per norm and eps, the worst disparity, faithfulness per method, shift metrics. A run without
    a metric leaves a gap (null). Reads ``StoredRun.to_dict()`` with the trend metrics asked for."""
    xs = [point_label(run) for run in runs]
    groups: dict[str, dict[str, list[float | None]]] = {}
    for index, run in enumerate(runs):
        for name, raw in (run.get("metrics") or {}).items():
            found = trend_metric(name)
            if found is not None:
                group, label = found
                groups.setdefault(group, {}).setdefault(label, [None] * len(runs))[index] = decode_number(raw)
        worst = (run.get("headline") or {}).get("worst disparity")
        if worst:
            label = "worst disparity"
            groups.setdefault("disparity", {}).setdefault(label, [None] * len(runs))[index] = \
                decode_number(worst.get("value"))
    specs = []
    for group in TREND_TITLES:
        if group not in groups:
            continue
        series = [{"label": label, "x": xs, "y": values} for label, values in groups[group].items()]
        ylabel = {"robust": "robust accuracy", "disparity": "difference", "faithfulness": "deletion AUC",
                  "shift": "value"}[group]
        specs.append({"kind": "line", "name": f"trend_{group}", "title": TREND_TITLES[group], "xlabel": "run",
                      "ylabel": ylabel, "series": series})
    return specs


def verdict_timeline(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per run, oldest first: time, version, seed, status, verdict (text, as the history table)."""
    return [{"time (UTC)": _time(run.get("created_at")), "run": _text(run.get("run_id"))[:8],
             "version": _text(run.get("model_version")), "seed": _text(run.get("seed")),
             "status": _text(run.get("status")), "verdict": _text(run.get("verdict")).upper().replace("_", " "),
             "directory": _text(run.get("run_dir"))} for run in runs]
