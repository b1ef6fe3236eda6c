"""Gate outcomes as JUnit XML: one testsuite ``nnaudit.gate``, one testcase per check.

A failed threshold or findings limit is a ``<failure>``; a missing or null metric, an errored
section or an incomplete run is an ``<error>``; a skipped section is ``<skipped>``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from audit.results import atomic_write_text

if TYPE_CHECKING:
    from audit.gate import GateReport, Outcome

SUITE_NAME = "nnaudit.gate"
# characters XML 1.0 cannot hold at all, not even escaped: a class name with an ESC or NUL byte
# would otherwise make the whole file unreadable to the CI server
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: object) -> str:
    """Text for an XML attribute or element: ElementTree escapes markup; this replaces what XML cannot hold."""
    return _NOT_XML.sub("\ufffd", str(text))
_ERROR_TYPES = {"missing": "missing_metric", "error": "error"}


def _testcase(outcome: Outcome) -> ET.Element:
    name, message = xml_text(outcome.name), xml_text(outcome.message)
    case = ET.Element("testcase", {"classname": f"{SUITE_NAME}.{outcome.kind}", "name": name, "time": "0"})
    if outcome.status == "fail":
        child = ET.SubElement(case, "failure", {"message": message, "type": "threshold"})
        child.text = message
    elif outcome.status in _ERROR_TYPES:
        child = ET.SubElement(case, "error", {"message": message, "type": _ERROR_TYPES[outcome.status]})
        child.text = message
    elif outcome.status == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    else:
        ET.SubElement(case, "system-out").text = message
    return case


def gate_to_junit(report: GateReport) -> str:
    """The report as a JUnit XML document (``<testsuites>`` holding one ``<testsuite>``)."""
    counts = {
        "tests": str(len(report.outcomes)),
        "failures": str(report.count("fail")),
        "errors": str(report.count("missing") + report.count("error")),
        "skipped": str(report.count("skipped")),
    }
    root = ET.Element("testsuites", {"name": "nnaudit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts, "time": "0"})
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", {"name": "run", "value": xml_text(report.run_title)})
    ET.SubElement(properties, "property", {"name": "exit_code", "value": str(report.exit_code)})
    suite.extend(_testcase(outcome) for outcome in report.outcomes)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: GateReport, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    atomic_write_text(target, gate_to_junit(report))
    return target
