"""A run's findings read from its results dict: ranked by severity, worst first, each with its section.

The gate counts and lists them (``audit.decide``) and the reports show them (``reports.views``):
both read them here, so a finding is ranked and ordered the same way everywhere. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.results import SEVERITIES

SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """0 for info up to 4 for critical; unknown severities rank lowest."""
    return SEVERITY_RANK.get(severity, -1)


def run_findings(results: Mapping[str, Any], *, min_severity: str = "info") -> list[dict[str, Any]]:
    """Every finding of every section at ``min_severity`` or worse, worst first (the recorded order among
    equals), each as recorded plus ``section`` (its section's name)."""
    floor = severity_rank(min_severity)
    sections: Mapping[str, Any] = results.get("sections", {})
    found = [{**finding, "section": name} for name, section in sections.items()
             for finding in section.get("findings", []) if severity_rank(finding.get("severity", "info")) >= floor]
    return sorted(found, key=lambda f: -severity_rank(f.get("severity", "info")))
