"""Gate outcomes as a Markdown summary (for a pull request comment or ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from audit.results import atomic_write_text

if TYPE_CHECKING:
    from audit.gate import GateReport, Outcome

_VERDICT_ICONS = {0: "✅", 1: "❌", 2: "⚠️"}
_OUTCOME_TEXT = {"pass": "✅ pass", "fail": "❌ fail", "missing": "⚠️ missing", "error": "⚠️ error",
                 "skipped": "⏭️ skipped"}


def escape_text(text: str) -> str:
    """Plain text safe inside a Markdown table cell: no markup, no cell breaks."""
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*"), ("_", "\\_"),
                      ("`", "\\`"), ("[", "\\["), ("]", "\\]")):
        text = text.replace(raw, safe)
    return " ".join(text.split())


def code_span(text: str) -> str:
    """Text as inline code inside a table cell (only the pipe needs escaping there)."""
    text = " ".join(text.replace("|", "\\|").split())
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def _row(outcome: Outcome) -> str:
    from audit.gate import format_number

    value = "" if outcome.value is None else format_number(outcome.value)
    threshold = "" if outcome.op is None else f"{outcome.op} {format_number(outcome.threshold)}"
    cells = [code_span(outcome.name), value, escape_text(threshold), _OUTCOME_TEXT[outcome.status],
             escape_text(outcome.message)]
    return "| " + " | ".join(cells) + " |"


def gate_to_markdown(report: GateReport) -> str:
    """A heading with the verdict, a table of every check, then the high and critical findings."""
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("pass", "fail", "missing", "error", "skipped")
                       if report.count(s))
    lines = [
        f"## {_VERDICT_ICONS[report.exit_code]} nnaudit gate {report.verdict}",
        "",
        f"Run: **{escape_text(report.run_title or 'unnamed run')}** · exit code {report.exit_code} · "
        f"{counts or 'no checks'}",
        "",
        "| Check | Value | Threshold | Outcome | Detail |",
        "| --- | ---: | --- | --- | --- |",
        *(_row(o) for o in report.outcomes),
        "",
        "### High and critical findings",
        "",
    ]
    if report.findings:
        lines += [f"- **{f['severity']}** ({escape_text(str(f['section']))}): {escape_text(f['message'])}"
                  for f in report.findings]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write_markdown(report: GateReport, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    atomic_write_text(target, gate_to_markdown(report))
    return target
