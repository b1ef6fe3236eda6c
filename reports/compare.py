"""A run comparison (``audit.decide.Comparison``) rendered: terminal text, JUnit XML, a Markdown summary for a
pull request, and the rows of the dashboard's compare view.

The checks go through the same table, JUnit writer and Markdown rows as the gate's (``reports.ci``); this
module adds what only a comparison has: the runs, the pairing and the delta tables. Every string that
comes from the results (run titles, metric names, messages) is text, never markup: escaped with
``reports.text.escape_markdown``, metric names in code spans. Never imports torch.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.numbers import format_number
from audit.results import atomic_write_text, decode_number
from reports.ci import (
    STATUS_TEXT,
    VERDICT_ICONS,
    check_table,
    check_value,
    counts_text,
    decision_line,
    junit_xml,
    markdown_row,
    write_junit,
)
from reports.text import code_span, escape_markdown

if TYPE_CHECKING:
    from audit.decide.checks import Check
    from audit.decide.compare import Comparison, MetricDelta

_VERDICT = {0: "no regression", 1: "regression", 2: "cannot judge"}
_PLAIN_NUMBER = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d+)?(?:e[+-]\d+)?|Infinity)|n/a)$")
_CHANGE = {"better": "better", "worse": "worse", "unchanged": "unchanged", "changed": "changed (no direction)",
           "not comparable": "not comparable", "only in base": "only in base", "only in candidate": "only in candidate"}


def _plain(value: float | None, *, signed: bool = False) -> str:
    return format_number(value, style="plain", signed=signed)


def notable_deltas(comparison: Comparison, *, limit: int | None = 20) -> list[MetricDelta]:
    """The deltas worth showing: significant ones and those rules name first, then the largest changes of
    metrics with a direction (``limit`` of those; None: every metric)."""
    if limit is None:
        return list(comparison.deltas)
    first = [d for d in comparison.deltas if d.significant or d.metric in comparison.rule_metrics]
    rest = [d for d in comparison.deltas if d not in first and d.direction is not None and d.change in
            ("better", "worse")]
    rest.sort(key=lambda d: -abs(d.delta) if d.delta is not None and math.isfinite(d.delta) else -math.inf)
    return first + rest[:limit]


# -- terminal ---------------------------------------------------------------------------------------------


def format_comparison(comparison: Comparison, *, limit: int | None = 20) -> str:
    """The comparison as plain text for the terminal and CI logs: runs, pairing, checks, notable deltas."""
    c = comparison
    lines = [f"nnaudit compare: base {c.base.title!r} ({c.base.path}) -> candidate {c.candidate.title!r} "
             f"({c.candidate.path})"]
    lines.append("differs: " + ("; ".join(c.differences) if c.differences else "nothing in the setup (model, data, "
                                "seed, section parameters)"))
    if c.pairing.available:
        lines.append(f"significance: {c.pairing.reason}; paired bootstrap, {c.resamples} resamples, Holm-adjusted "
                     f"over {c.n_hypotheses} distinct tests ({len(c.tested)} metrics) at alpha {_plain(c.alpha)}")
    else:
        lines.append(f"significance unavailable: {c.pairing.reason}")
    lines += check_table(c.decision)
    shown = notable_deltas(c, limit=limit)
    if shown:
        lines.append("")
        lines.append("metric deltas (candidate - base)" + ("" if limit is None else
                     f": significant, named by a rule, then the {limit} largest changes with a direction"))
        table: list[tuple[str, ...]] = [("METRIC", "BASE", "CANDIDATE", "DELTA", "BETTER", "CHANGE", "SIGNIFICANCE")]
        for d in shown:
            s = d.significance
            sig = ("untested" if d.direction is not None else "") if s is None else \
                (f"p(Holm) {_plain(s.p_adjusted)}" + (" significant" if s.significant else ""))
            table.append((d.metric, _plain(d.base), _plain(d.candidate), _plain(d.delta, signed=True),
                          d.direction or "-", d.change + (f" ({d.note})" if d.note else ""), sig))
        table_widths = [max(len(r[i]) for r in table) for i in range(6)]
        for cells in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(cells[:6], table_widths, strict=True)) + "  "
                         + cells[6])
    lines.append(f"{decision_line(c.decision)}; {len(c.regressions)} significant regressions, "
                 f"{len(c.improvements)} significant improvements")
    return "\n".join(lines) + "\n"


# -- JUnit ------------------------------------------------------------------------------------------------


def junit_properties(comparison: Comparison) -> list[tuple[str, str]]:
    c = comparison
    return [("base", c.base.title), ("candidate", c.candidate.title), ("exit_code", str(c.exit_code)),
            ("pairing", c.pairing.reason)]


def compare_to_junit(comparison: Comparison) -> str:
    """One ``<testsuite name="nnaudit.compare">``, one testcase per check (runs, rules, significance tests)."""
    return junit_xml(comparison.decision, properties=junit_properties(comparison))


def write_compare_junit(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    return write_junit(comparison.decision, path, properties=junit_properties(comparison))


# -- Markdown ---------------------------------------------------------------------------------------------


def _num(value: float | None, *, signed: bool = False) -> str:
    text = _plain(value, signed=signed)
    return text if _PLAIN_NUMBER.match(text) else escape_markdown(text)


def _check_row(comparison: Comparison, check: Check) -> str:
    value = check_value(comparison.decision, check)
    name = code_span(check.metric) + " " + escape_markdown(check.name.removeprefix(check.metric or "").strip()) \
        if check.metric else escape_markdown(check.name)
    return markdown_row([name, value if _PLAIN_NUMBER.match(value or "0") else escape_markdown(value),
                         STATUS_TEXT[check.status], escape_markdown(check.message)])


def _delta_row(d: MetricDelta, *, with_significance: bool) -> str:
    direction = {"higher": "↑ higher", "lower": "↓ lower"}.get(d.direction or "", "—")
    cells = [code_span(d.metric), _num(d.base), _num(d.candidate), _num(d.delta, signed=True), direction,
             escape_markdown(_CHANGE[d.change] + (f" ({d.note})" if d.note else ""))]
    if with_significance:
        s = d.significance
        if s is None:
            cells += ["", "", ""]
        else:
            cells += [f"[{_num(s.ci_low, signed=True)}, {_num(s.ci_high, signed=True)}]", _num(s.p_adjusted),
                      "**yes**" if s.significant else "no"]
    return markdown_row(cells)


def _significance_rows(c: Comparison) -> list[str]:
    """The per-metric significance checks folded into one row (the table below lists each metric)."""
    tests = [check for check in c.checks if check.kind == "significance" and check.metric]
    failed = [check for check in tests if check.status == "fail"]
    if failed:
        names = ", ".join(code_span(check.metric) for check in failed)
        return [f"| {escape_markdown(f'{len(failed)} of {len(tests)} metrics tested')} | | {STATUS_TEXT['fail']} | "
                f"significantly worse on the same samples: {names} |"]
    if tests:
        worse = c.regressions
        detail = "significantly worse (reported only: significant_regressions is report): " + ", ".join(
            code_span(d.metric) for d in worse) if worse else escape_markdown("no metric significantly worse")
        return [f"| {escape_markdown(f'{len(tests)} metrics tested')} | | {STATUS_TEXT['pass']} | {detail} |"]
    return []


def compare_to_markdown(comparison: Comparison, *, limit: int = 20) -> str:
    """A pull-request comment: the verdict, the two runs, every check, the significance tests, then the
    largest changes (the full list collapsed)."""
    c = comparison
    lines = [
        f"## {VERDICT_ICONS[c.exit_code]} nnaudit compare: {_VERDICT[c.exit_code]}",
        "",
        f"Base: **{escape_markdown(c.base.title)}** ({escape_markdown(c.base.status)}) · candidate: "
        f"**{escape_markdown(c.candidate.title)}** ({escape_markdown(c.candidate.status)}) · exit code {c.exit_code} "
        f"· {escape_markdown(counts_text(c.decision))} · {len(c.regressions)} significant regressions, "
        f"{len(c.improvements)} significant improvements",
        "",
    ]
    if c.differences:
        lines += ["What differs between the runs:", "", *(f"- {escape_markdown(line)}" for line in c.differences), ""]
    if c.pairing.available:
        lines.append(f"Significance: {escape_markdown(c.pairing.reason)}; paired bootstrap ({c.resamples} "
                     f"resamples), p-values Holm-adjusted over {c.n_hypotheses} distinct tests ({len(c.tested)} "
                     f"metrics), alpha {_num(c.alpha)}.")
    else:
        lines.append(f"Significance unavailable: {escape_markdown(c.pairing.reason)}.")
    lines += ["", "| Check | Value | Outcome | Detail |", "| --- | ---: | --- | --- |"]
    lines += [_check_row(c, check) for check in c.checks if check.kind != "significance" or not check.metric]
    lines += _significance_rows(c)
    tested = c.tested
    if tested:
        lines += ["", f"### Per-sample significance ({round(100 * c.confidence)}% paired bootstrap intervals)", "",
                  "| Metric | Base | Candidate | Delta | Better | Change | CI of delta | p (Holm) | Significant |",
                  "| --- | ---: | ---: | ---: | --- | --- | --- | ---: | --- |"]
        lines += [_delta_row(d, with_significance=True) for d in tested]
    others = [d for d in notable_deltas(c, limit=None) if d.significance is None and d.direction is not None
              and d.change in ("better", "worse")]
    others.sort(key=lambda d: -abs(d.delta) if d.delta is not None and abs(d.delta) != float("inf") else float("-inf"))
    if others:
        lines += ["", f"<details><summary>{len(others)} other metrics with a direction changed (no per-sample "
                  "test; largest first)</summary>", "",
                  "| Metric | Base | Candidate | Delta | Better | Change |", "| --- | ---: | ---: | ---: | --- | --- |"]
        lines += [_delta_row(d, with_significance=False) for d in others[:limit]]
        if len(others) > limit:
            lines.append(f"| {escape_markdown(f'... and {len(others) - limit} more')} | | | | | |")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def write_compare_markdown(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    atomic_write_text(target, compare_to_markdown(comparison))
    return target


# -- view data (the dashboard's compare view) --------------------------------------------------------

CHANGE_ORDER = {"regression": 0, "worse": 1, "not comparable": 2, "only in base": 2, "only in candidate": 2,
                "changed": 3, "improvement": 4, "better": 5, "unchanged": 6}
DIRECTION_TEXT = {"higher": "higher is better", "lower": "lower is better"}
NO_DIRECTION = "no direction"


def _view_number(value: Any, *, signed: bool = False) -> str:
    """A stored number (``Comparison.to_dict()``) as the dashboard shows numbers."""
    return format_number(decode_number(value), style="short", signed=signed)


def _significance_text(row: Mapping[str, Any], pairing: Mapping[str, Any], confidence: float) -> str:
    """What the paired bootstrap says about one metric, or why it could not say anything."""
    s = row.get("significance")
    if isinstance(s, Mapping):
        what = "significantly worse" if row.get("regression") else "significantly better" if \
            row.get("improvement") else "no significant change"
        return (f"{what}: p(Holm) {_view_number(s['p_adjusted'])}, paired delta {_view_number(s['delta'], signed=True)}"
                f", {confidence:.0%} CI [{_view_number(s['ci_low'], signed=True)}, "
                f"{_view_number(s['ci_high'], signed=True)}] over {s['n_paired']} samples")
    change = row.get("change")
    if change in ("only in base", "only in candidate"):
        return f"not tested: {change}"
    if change == "not comparable":
        return f"not tested: {row.get('note') or 'not a number in one run'}"
    if row.get("direction") is None:
        return "not tested: the section declares no direction of better for this metric"
    if not pairing.get("available"):
        return f"unavailable: {pairing.get('reason')}"
    return "not tested: no per-sample outcomes paired for this metric"


def comparison_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """Rows and headline of a comparison, from ``Comparison.to_dict()`` (plain data, no markup).

    Rows come regressions first (significantly worse), then worse, not comparable, changed without a
    direction, improvements, better, unchanged; within each, the largest change first. Each row says
    the direction of better, the change and its significance, or why significance is unavailable.
    """
    pairing: Mapping[str, Any] = data.get("pairing") or {}
    confidence = float(data.get("confidence") or 0.95)
    rows = []
    for d in data.get("deltas", []):
        kind = "regression" if d.get("regression") else "improvement" if d.get("improvement") else str(d["change"])
        delta = decode_number(d.get("delta"))
        rows.append({"metric": str(d["metric"]), "base": _view_number(d.get("base")),
                     "candidate": _view_number(d.get("candidate")), "delta": _view_number(d.get("delta"), signed=True),
                     "direction": DIRECTION_TEXT.get(str(d.get("direction")), NO_DIRECTION),
                     "change": "regression" if kind == "regression" else "improvement" if kind == "improvement"
                     else str(d["change"]),
                     "significance": _significance_text(d, pairing, confidence),
                     "changed": d["change"] != "unchanged", "order": CHANGE_ORDER.get(kind, 3),
                     "size": abs(delta) if delta is not None else -1.0})
    rows.sort(key=lambda r: (r["order"], -r["size"], r["metric"]))
    checks = [c for c in data.get("checks", []) if c.get("status") != "pass"]
    return {"verdict": data.get("verdict"), "exit_code": data.get("exit_code"), "rows": rows,
            "regressions": sum(1 for r in rows if r["change"] == "regression"),
            "improvements": sum(1 for r in rows if r["change"] == "improvement"),
            "changed": sum(1 for r in rows if r["changed"]),
            "pairing": {"available": bool(pairing.get("available")), "reason": str(pairing.get("reason", "")),
                        "n_samples": pairing.get("n_samples", 0)},
            "differences": [str(x) for x in data.get("differences", [])],
            "checks": [{"check": str(c["name"]), "status": str(c["status"]), "message": str(c["message"])}
                       for c in checks],
            "alpha": data.get("alpha"), "resamples": data.get("resamples"), "confidence": confidence}
