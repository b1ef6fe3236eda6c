"""A run comparison (``audit.compare.Comparison``) as JUnit XML and as a Markdown summary for a pull request.

Every string that comes from the results (run titles, metric names, messages) is text, never markup:
in Markdown each character that could start markup, a link, an autolink or a table cell becomes a
numeric character reference (shown as itself), and metric names go in code spans.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

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
