"""A run comparison (``audit.compare.Comparison``) as JUnit XML and as a Markdown summary for a pull request.

Every string that comes from the results (run titles, metric names, messages) is text, never markup:
in Markdown each character that could start markup, a link, an autolink or a table cell becomes a
numeric character reference (shown as itself), and metric names go in code spans.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.results import atomic_write_text

if TYPE_CHECKING:
    from audit.compare import Check, Comparison, MetricDelta

SUITE_NAME = "nnaudit.compare"
_ERROR_TYPES = {"missing": "missing_metric", "error": "error"}
_FAILURE_TYPES = {"delta": "delta_rule", "rule": "threshold", "findings": "findings", "significance": "regression",
                  "run": "run", "section": "section"}

# -- JUnit --------------------------------------------------------------------------------------------


def _testcase(check: Check) -> ET.Element:
    case = ET.Element("testcase", {"classname": f"{SUITE_NAME}.{check.kind}", "name": check.name, "time": "0"})
    if check.status == "fail":
        child = ET.SubElement(case, "failure", {"message": check.message, "type": _FAILURE_TYPES[check.kind]})
        child.text = check.message
    elif check.status in _ERROR_TYPES:
        child = ET.SubElement(case, "error", {"message": check.message, "type": _ERROR_TYPES[check.status]})
        child.text = check.message
    elif check.status == "skipped":
        ET.SubElement(case, "skipped", {"message": check.message})
    else:
        ET.SubElement(case, "system-out").text = check.message
    return case


def compare_to_junit(comparison: Comparison) -> str:
    """One ``<testsuite name="nnaudit.compare">``, one testcase per check (runs, rules, significance tests)."""
    c = comparison
    counts = {"tests": str(len(c.checks)), "failures": str(c.count("fail")),
              "errors": str(c.count("missing") + c.count("error")), "skipped": str(c.count("skipped"))}
    root = ET.Element("testsuites", {"name": "nnaudit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts, "time": "0"})
    properties = ET.SubElement(suite, "properties")
    for name, value in (("base", c.base.title), ("candidate", c.candidate.title), ("exit_code", str(c.exit_code)),
                        ("pairing", c.pairing.reason)):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    suite.extend(_testcase(check) for check in c.checks)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_compare_junit(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    atomic_write_text(target, compare_to_junit(comparison))
    return target


# -- Markdown -----------------------------------------------------------------------------------------

# every ASCII character that can start Markdown or HTML, end a table cell, or make an autolink
_MARKUP = set("\\`*_{}[]()#+-.!|~<>&:@=\"'")
_VERDICT = {0: "✅ nnaudit compare: no regression", 1: "❌ nnaudit compare: regression",
            2: "⚠️ nnaudit compare: cannot judge"}
_PLAIN_NUMBER = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d+)?(?:e[+-]\d+)?|Infinity)|n/a)$")
_STATUS = {"pass": "✅ pass", "fail": "❌ fail", "missing": "⚠️ missing", "error": "⚠️ error", "skipped": "⏭️ skipped"}
_CHANGE = {"better": "better", "worse": "worse", "unchanged": "unchanged", "changed": "changed (no direction)",
           "not comparable": "not comparable", "only in base": "only in base", "only in candidate": "only in candidate"}


def md_text(text: object) -> str:
    """Any text as Markdown that renders as exactly that text: markup characters become character references,
    whitespace (newlines included) collapses to single spaces."""
    escaped = "".join(f"&#{ord(ch)};" if ch in _MARKUP else ch for ch in str(text))
    return " ".join(escaped.split())


def md_code(text: object) -> str:
    """Text as an inline code span (rendered literally), safe inside a table cell."""
    body = " ".join(str(text).replace("|", "¦").split())
    run = longest = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _num(value: float | None, *, signed: bool = False) -> str:
    from audit.compare import fmt

    text = fmt(value, signed=signed)
    return text if _PLAIN_NUMBER.match(text) else md_text(text)


def _check_row(check: Check) -> str:
    value = "" if check.value is None else _num(check.value, signed=check.kind in ("delta", "significance"))
    name = md_code(check.metric) + " " + md_text(check.name.removeprefix(check.metric or "").strip()) \
        if check.metric else md_text(check.name)
    return f"| {name} | {value} | {_STATUS[check.status]} | {md_text(check.message)} |"


def _delta_row(d: MetricDelta, *, with_significance: bool) -> str:
    direction = {"higher": "↑ higher", "lower": "↓ lower"}.get(d.direction or "", "—")
    cells = [md_code(d.metric), _num(d.base), _num(d.candidate), _num(d.delta, signed=True), direction,
             md_text(_CHANGE[d.change] + (f" ({d.note})" if d.note else ""))]
    if with_significance:
        s = d.significance
        if s is None:
            cells += ["", "", ""]
        else:
            cells += [f"[{_num(s.ci_low, signed=True)}, {_num(s.ci_high, signed=True)}]", _num(s.p_adjusted),
                      "**yes**" if s.significant else "no"]
    return "| " + " | ".join(cells) + " |"


def compare_to_markdown(comparison: Comparison, *, limit: int = 20) -> str:
    """A pull-request comment: the verdict, the two runs, every check, the significance tests, then the
    largest changes (the full list collapsed)."""
    from audit.compare import notable_deltas

    c = comparison
    counts = ", ".join(f"{c.count(s)} {s}" for s in ("pass", "fail", "missing", "error", "skipped") if c.count(s))
    lines = [
        f"## {_VERDICT[c.exit_code]}",
        "",
        f"Base: **{md_text(c.base.title)}** ({md_text(c.base.status)}) · candidate: **{md_text(c.candidate.title)}** "
        f"({md_text(c.candidate.status)}) · exit code {c.exit_code} · {md_text(counts or 'no checks')} · "
        f"{len(c.regressions)} significant regressions, {len(c.improvements)} significant improvements",
        "",
    ]
    if c.differences:
        lines += ["What differs between the runs:", "", *(f"- {md_text(line)}" for line in c.differences), ""]
    if c.pairing.available:
        lines.append(f"Significance: {md_text(c.pairing.reason)}; paired bootstrap ({c.resamples} resamples), "
                     f"p-values Holm-adjusted over {c.n_hypotheses} distinct tests ({len(c.tested)} metrics), "
                     f"alpha {_num(c.alpha)}.")
    else:
        lines.append(f"Significance unavailable: {md_text(c.pairing.reason)}.")
    lines += ["", "| Check | Value | Outcome | Detail |", "| --- | ---: | --- | --- |"]
    lines += [_check_row(check) for check in c.checks if check.kind != "significance" or not check.metric]
    tests = [check for check in c.checks if check.kind == "significance" and check.metric]
    failed = [check for check in tests if check.status == "fail"]
    if failed:
        names = ", ".join(md_code(check.metric) for check in failed)
        lines.append(f"| {md_text(f'{len(failed)} of {len(tests)} metrics tested')} | | ❌ fail | "
                     f"significantly worse on the same samples: {names} |")
    elif tests:
        worse = [d for d in c.regressions]
        detail = "significantly worse (reported only: significant_regressions is report): " + ", ".join(
            md_code(d.metric) for d in worse) if worse else md_text("no metric significantly worse")
        lines.append(f"| {md_text(f'{len(tests)} metrics tested')} | | ✅ pass | {detail} |")
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
            lines.append(f"| {md_text(f'... and {len(others) - limit} more')} | | | | | |")
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
    from audit.results import decode_number
    from reports.views import format_value

    number = decode_number(value)
    text = format_value(number)
    return f"+{text}" if signed and number is not None and number > 0 else text


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
    from audit.results import decode_number

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
