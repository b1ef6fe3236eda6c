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
