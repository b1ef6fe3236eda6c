"""What must equal between a resumed (or re-chunked) run and an uninterrupted one, and the few things that may
not: shared by the kill, chunk-kill and lifecycle tests (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import re
from typing import Any

# wall-clock columns: they differ between any two runs of the same thing
TIMING_COLUMNS = frozenset({"seconds", "ms per sample"})
TIMING = "<timing>"
# notes only a resumed run writes: the chunks it kept from the interrupted attempt
RESUME_NOTES = (re.compile(r"\d+ of \d+ chunks kept from the interrupted run( \(artifacts/[^)]+\))?"),)


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    """Every section of a results dict as it must compare: status, params, metrics, directions, tables, figures,
    findings, notes, artifacts, error and fingerprint. Left out: ``duration_s``, the cells of timing columns,
    and the notes only a resumed run writes."""
    return {name: comparable_section(section) for name, section in results["sections"].items()}


def comparable_section(section: Any) -> dict[str, Any]:
    """One section (a results dict entry or a ``SectionResult``) as it must compare."""
    data = section if isinstance(section, dict) else section.to_dict()
    out = {key: value for key, value in data.items() if key != "duration_s"}
    out["tables"] = [_untimed(table) for table in data["tables"]]
    out["notes"] = [note for note in data["notes"] if not any(p.fullmatch(note) for p in RESUME_NOTES)]
    return out


def resume_notes(section: Any) -> list[str]:
    """The notes ``comparable_section`` leaves out."""
    data = section if isinstance(section, dict) else section.to_dict()
    return [note for note in data["notes"] if any(p.fullmatch(note) for p in RESUME_NOTES)]


def _untimed(table: dict[str, Any]) -> dict[str, Any]:
    timed = [i for i, column in enumerate(table["columns"]) if column in TIMING_COLUMNS]
    if not timed:
        return table
    rows = [[TIMING if i in timed else cell for i, cell in enumerate(row)] for row in table["rows"]]
    return {**table, "rows": rows}
