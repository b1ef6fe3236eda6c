"""Decisions rendered for people and CI servers: the terminal table, JUnit XML and the Markdown summary.

Every renderer here reads an ``audit.decide.Decision`` (a gate's, a comparison's): the terminal table
and the JUnit writer are the same for both, so they cannot drift; the gate's Markdown summary is here
and the comparison's (with its delta tables) is in ``reports.compare``, built from the same rows,
status words, escaper (``reports.text``) and number formatter (``audit.numbers``).

JUnit: one ``<testsuite>`` (``nnaudit.gate`` or ``nnaudit.compare``), one testcase per check. A failed
check is a ``<failure>``; a missing or null metric, an errored section or an unfinished run is an
``<error>``; a skipped check is ``<skipped>``. A waived check (a failure a policy waiver accepts) is a passing
testcase: it does not fail the CI job, but its ``<system-out>`` starts with ``WAIVED by ... until ...: reason``
and its ``<properties>`` hold ``waiver.reason``, ``waiver.by`` and ``waiver.until``; the suite's properties
name every waiver with its state (``waiver`` = ``ACTIVE check '...': ...``) and the ungated high and critical
findings (``ungated_findings``). Characters XML 1.0 cannot hold (an ESC or NUL byte in a
class name or an error message) are replaced, so the file always parses. Never imports torch.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.numbers import NumberStyle, format_number
from audit.results import atomic_write_text
from reports.text import code_span, escape_markdown

if TYPE_CHECKING:
    from audit.decide.checks import Check, Decision

GATE_SUITE, COMPARE_SUITE = "nnaudit.gate", "nnaudit.compare"
STATUS_MARKS = {"pass": "PASS", "fail": "FAIL", "missing": "MISSING", "error": "ERROR", "skipped": "SKIP",
                "waived": "WAIVED"}
STATUS_TEXT = {"pass": "✅ pass", "fail": "❌ fail", "missing": "⚠️ missing", "error": "⚠️ error",
               "skipped": "⏭️ skipped", "waived": "🟡 WAIVED"}
VERDICT_ICONS = {0: "✅", 1: "❌", 2: "⚠️"}
SIGNED_KINDS = ("delta", "significance")  # their value is a change: shown with its sign
# the gate's numbers are exact (10 significant digits, as in its messages); a comparison's are plain (4)
_NUMBER_STYLES: dict[str, NumberStyle] = {"gate": "exact", "compare": "plain"}
# characters XML 1.0 cannot hold at all, not even escaped: a class name with an ESC or NUL byte
# would otherwise make the whole file unreadable to the CI server
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ERROR_TYPES = {"missing": "missing_metric", "error": "error"}
_COMPARE_FAILURE_TYPES = {"delta": "delta_rule", "rule": "threshold", "findings": "findings",
                          "significance": "regression", "run": "run", "section": "section"}


# -- numbers and counts ------------------------------------------------------------------------------


def check_value(decision: Decision, check: Check) -> str:
    """The value a check read, as its decision shows numbers ("" when it read none)."""
    if check.value is None:
        return ""
    return format_number(check.value, style=_NUMBER_STYLES[decision.kind], signed=check.kind in SIGNED_KINDS)


def counts_text(decision: Decision) -> str:
    """``6 pass, 1 fail, 1 skipped``: the checks per status (``no checks`` when there are none)."""
    return ", ".join(f"{n} {status}" for status, n in decision.counts.items()) or "no checks"


# -- terminal --------------------------------------------------------------------------------------------


def check_table(decision: Decision) -> list[str]:
    """The checks as aligned plain-text lines: RESULT, CHECK, VALUE, then the message."""
    rows = [(STATUS_MARKS[c.status], c.name, check_value(decision, c), c.message) for c in decision.checks]
    header = ("RESULT", "CHECK", "VALUE", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
            for row in [header, *rows]]


def ungated_line(decision: Decision) -> str:
    """``3 high findings are not gated`` ("" when none): high and critical findings outside the policy."""
    from audit.decide.waive import ungated_text

    return ungated_text(decision.ungated_counts)


def waiver_line(waiver: Mapping[str, Any]) -> str:
    """``EXPIRED waiver of check 'X' (by alice until 2027-03-31: reason): expired on ...``: one waiver's state."""
    target = (f"check {waiver['check']!r}" if "check" in waiver else
              "finding " + ", ".join(f"{k} {v!r}" for k, v in waiver.get("finding", {}).items()))
    return (f"{str(waiver.get('state', '')).upper()} waiver of {target} (by {waiver.get('by')} until "
            f"{waiver.get('until')}: {waiver.get('reason')}): {waiver.get('message', '')}")


def decision_line(decision: Decision) -> str:
    """``gate PASSED (exit 0): 14 pass; 3 high findings are not gated``: the closing line of the terminal text."""
    ungated = ungated_line(decision)
    return (f"{decision.kind} {decision.verdict} (exit {decision.exit_code}): {counts_text(decision)}"
            + (f"; {ungated}" if ungated else ""))


def format_gate(decision: Decision) -> str:
    """A gate's decision as plain text for the terminal and CI logs: the run, the table, each waiver's state,
    the ungated findings, the verdict line."""
    lines = [f"nnaudit gate: {decision.run_title}" if decision.run_title else "nnaudit gate"]
    lines += check_table(decision)
    lines += [f"waiver: {waiver_line(w)}" for w in decision.waivers]
    lines += [f"not gated: [{f.get('severity')}] {f.get('section', '')}: {f.get('message', '')}"
              for f in decision.ungated]
    lines.append(decision_line(decision))
    return "\n".join(lines) + "\n"


# -- JUnit -----------------------------------------------------------------------------------------------


def xml_text(text: object) -> str:
    """Text for an XML attribute or element: ElementTree escapes markup; this replaces what XML cannot hold."""
    return _NOT_XML.sub("\ufffd", str(text))


def _testcase(suite: str, decision: Decision, check: Check) -> ET.Element:
    name, message = xml_text(check.name), xml_text(check.message)
    case = ET.Element("testcase", {"classname": f"{suite}.{check.kind}", "name": name, "time": "0"})
    if check.status == "fail":
        kind = "threshold" if decision.kind == "gate" else _COMPARE_FAILURE_TYPES[check.kind]
        ET.SubElement(case, "failure", {"message": message, "type": kind}).text = message
    elif check.status in _ERROR_TYPES:
        ET.SubElement(case, "error", {"message": message, "type": _ERROR_TYPES[check.status]}).text = message
    elif check.status == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    elif check.status == "waived" and check.waiver is not None:
        holder = ET.SubElement(case, "properties")
        for key in ("reason", "by", "until"):
            ET.SubElement(holder, "property", {"name": f"waiver.{key}", "value": xml_text(check.waiver.get(key, ""))})
        ET.SubElement(case, "system-out").text = xml_text(
            f"WAIVED by {check.waiver.get('by')} until {check.waiver.get('until')}: {check.waiver.get('reason')}"
            f"\n{check.message}")
    else:
        ET.SubElement(case, "system-out").text = message
    return case


def junit_xml(decision: Decision, *, properties: Sequence[tuple[str, str]] | None = None) -> str:
    """The decision as a JUnit XML document (``<testsuites>`` holding one ``<testsuite>``).

    ``properties``: the suite's name/value pairs (default: the run's title and the exit code).
    """
    suite_name = GATE_SUITE if decision.kind == "gate" else COMPARE_SUITE
    if properties is None:
        properties = [("run", decision.run_title), ("exit_code", str(decision.exit_code))]
    properties = [*properties, *(("waiver", waiver_line(w)) for w in decision.waivers)]
    if decision.ungated:
        properties.append(("ungated_findings", ungated_line(decision)))
    counts = {"tests": str(len(decision.checks)), "failures": str(decision.count("fail")),
              "errors": str(decision.count("missing") + decision.count("error")),
              "skipped": str(decision.count("skipped"))}
    root = ET.Element("testsuites", {"name": "nnaudit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts, "time": "0"})
    holder = ET.SubElement(suite, "properties")
    for name, value in properties:
        ET.SubElement(holder, "property", {"name": name, "value": xml_text(value)})
    suite.extend(_testcase(suite_name, decision, check) for check in decision.checks)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(decision: Decision, path: str | os.PathLike[str], *,
                properties: Sequence[tuple[str, str]] | None = None) -> Path:
    target = Path(path)
    atomic_write_text(target, junit_xml(decision, properties=properties))
    return target


# -- Markdown --------------------------------------------------------------------------------------------


def markdown_row(cells: Iterable[str]) -> str:
    """One table row; every cell must already be Markdown (escaped text, a code span, a plain number)."""
    return "| " + " | ".join(cells) + " |"


def _gate_row(decision: Decision, check: Check) -> str:
    threshold = "" if check.op is None else f"{check.op} {format_number(check.threshold)}"
    return markdown_row([code_span(check.name), check_value(decision, check), escape_markdown(threshold),
                         STATUS_TEXT[check.status], escape_markdown(check.message)])


def gate_to_markdown(decision: Decision) -> str:
    """A heading with the verdict, a table of every check, then the high and critical findings."""
    lines = [
        f"## {VERDICT_ICONS[decision.exit_code]} nnaudit gate {decision.verdict}",
        "",
        f"Run: **{escape_markdown(decision.run_title or 'unnamed run')}** · exit code {decision.exit_code} · "
        f"{counts_text(decision)}" + (f" · **{escape_markdown(ungated_line(decision))}**" if decision.ungated else ""),
        "",
        "| Check | Value | Threshold | Outcome | Detail |",
        "| --- | ---: | --- | --- | --- |",
        *(_gate_row(decision, c) for c in decision.checks),
        "",
        "### High and critical findings",
        "",
    ]
    if decision.findings:
        lines += [f"- **{escape_markdown(f.get('severity', 'info'))}** ({escape_markdown(f.get('section', ''))}): "
                  f"{escape_markdown(f.get('message', ''))}" for f in decision.findings]
    else:
        lines.append("None.")
    if decision.ungated:
        lines += ["", f"**{escape_markdown(ungated_line(decision))}** (no rule or findings limit of the policy covers "
                  "them; `nnaudit gate --strict` fails on them):", ""]
        lines += [f"- **{escape_markdown(f.get('severity', ''))}** ({escape_markdown(f.get('section', ''))}): "
                  f"{escape_markdown(f.get('message', ''))}" for f in decision.ungated]
    if decision.waivers:
        lines += ["", "### Waivers", "", "| State | Waives | By | Until | Reason | Detail |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for w in decision.waivers:
            target = (code_span(str(w["check"])) if "check" in w else
                      "finding " + escape_markdown(", ".join(f"{k} {v!r}" for k, v in w.get("finding", {}).items())))
            lines.append(markdown_row([f"**{escape_markdown(str(w.get('state', '')).upper())}**", target,
                                       escape_markdown(str(w.get("by", ""))), escape_markdown(str(w.get("until", ""))),
                                       escape_markdown(str(w.get("reason", ""))),
                                       escape_markdown(str(w.get("message", "")))]))
    return "\n".join(lines) + "\n"


def write_markdown(decision: Decision, path: str | os.PathLike[str]) -> Path:
    """Write a gate's Markdown summary (a comparison's: ``reports.compare.write_compare_markdown``)."""
    target = Path(path)
    atomic_write_text(target, gate_to_markdown(decision))
    return target
