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


# CommonMark lets a backslash escape any ASCII punctuation: these are the ones with a meaning in
# GitHub-flavoured Markdown (emphasis, links and images, code, headings, lists, tables, strikethrough)
_MARKDOWN_PUNCTUATION = "\\`*_{}[]()#!|~"


def escape_text(text: str) -> str:
    """Plain text safe inside a Markdown table cell or list item: no markup, no cell breaks, no raw HTML.

    Every character with a Markdown meaning is backslash-escaped (the backslash first), ``<``,
    ``>`` and ``&`` become entities, and line breaks become spaces: an ``![](http://host/x.png)``
    in a class name reads as those characters, never as an image the reader's browser fetches.
    """
    out = []
    for char in " ".join(str(text).split()):
        if char in _MARKDOWN_PUNCTUATION:
            out.append("\\" + char)
        elif char in _ENTITIES:
            out.append(_ENTITIES[char])
        else:
            out.append(char)
    return "".join(out)


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def code_span(text: str) -> str:
    """Text as inline code inside a table cell: literal, whatever backticks it holds (only ``|`` is escaped)."""
    import re

    text = " ".join(str(text).replace("|", "\\|").split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
        lines += [f"- **{escape_text(str(f['severity']))}** ({escape_text(str(f['section']))}): "
                  f"{escape_text(str(f['message']))}"
                  for f in report.findings]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write_markdown(report: GateReport, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    atomic_write_text(target, gate_to_markdown(report))
    return target
