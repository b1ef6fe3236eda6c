"""What every decision returns: ``Check`` (one judged condition) and ``Decision`` (the checks and their sum).

``nnaudit gate``, ``nnaudit compare`` and the run's stored verdict all produce a ``Decision``; the
terminal table, JUnit XML and Markdown (``reports.ci``) render any of them, so they cannot drift.

A failed check that a policy waiver covers (``audit.decide.waive``) has status ``waived`` and carries the waiver
(reason, by, until): it does not fail the decision. The decision also carries every waiver's state (active,
unused, expired, stale) and the run's high and critical findings no policy rule covers (``ungated``).

Exit codes, the same for gate and compare: 0 every check passed (or was skipped or waived); 1 a check failed
(a rule, a findings limit, a significant regression); 2 the decision cannot be made (a metric missing
or not a number, a section errored, a run unfinished): 2 wins over 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

CheckStatus = Literal["pass", "fail", "missing", "error", "skipped", "waived"]
# metric: a rule on a value as the gate (and the stored verdict) names it; rule: the same check in a comparison
# (on the candidate); delta: a rule on candidate - base; significance: a paired test of one metric (or why none)
CheckKind = Literal["run", "section", "metric", "rule", "delta", "findings", "significance"]
DecisionKind = Literal["gate", "compare"]
STATUSES: tuple[CheckStatus, ...] = ("pass", "fail", "missing", "error", "skipped", "waived")
FAILED_STATUSES: tuple[CheckStatus, ...] = ("fail", "missing", "error")
VERDICT_WORDS: dict[DecisionKind, dict[int, str]] = {
    "gate": {EXIT_PASS: "PASSED", EXIT_FAIL: "FAILED", EXIT_ERROR: "ERROR"},
    "compare": {EXIT_PASS: "PASSED", EXIT_FAIL: "REGRESSION", EXIT_ERROR: "CANNOT JUDGE"},
}
_STATUS_BY_EXIT = {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_ERROR: "error"}


@dataclass(frozen=True)
class Check:
    """One check behind an exit code: a run's state, a section, a rule on a value or a delta, a findings limit,
    a metric's significance. ``metric``/``op``/``threshold`` say what a rule compared; ``value`` what it read
    (a delta for delta and significance checks, a count for a findings limit). ``waiver``: the waiver record
    (check or finding, reason, by, until) of a waived check, or of the expired waiver a failed check names."""

    name: str
    kind: CheckKind
    status: CheckStatus
    message: str
    metric: str | None = None
    op: str | None = None
    threshold: float | None = None
    value: float | None = None
    waiver: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class Decision:
    """The checks of one gate or comparison, with what they add up to.

    ``run_title`` and ``findings`` (the high and critical findings, worst first, each with its section) are
    what a gate's summary shows about the run; a comparison leaves them empty. ``waivers``: each policy waiver's
    record with its ``state`` and ``message``; ``ungated``: the high and critical findings no policy rule covers
    and no waiver waives (``audit.decide.waive``).
    """

    kind: DecisionKind
    checks: tuple[Check, ...]
    run_title: str = ""
    findings: tuple[dict[str, Any], ...] = field(default=())
    waivers: tuple[dict[str, Any], ...] = field(default=())
    ungated: tuple[dict[str, Any], ...] = field(default=())

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        if statuses & {"missing", "error"}:
            return EXIT_ERROR
        if "fail" in statuses:
            return EXIT_FAIL
        return EXIT_PASS

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASS

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``error`` (exit 0, 1, 2): the stored run verdict's status."""
        return _STATUS_BY_EXIT[self.exit_code]

    @property
    def verdict(self) -> str:
        """The verdict word: PASSED / FAILED / ERROR for a gate, PASSED / REGRESSION / CANNOT JUDGE for a comparison."""
        return VERDICT_WORDS[self.kind][self.exit_code]

    def count(self, status: CheckStatus) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def counts(self) -> dict[str, int]:
        """Checks per status, in ``STATUSES`` order, statuses no check has left out."""
        return {s: n for s in STATUSES if (n := self.count(s))}

    @property
    def ungated_counts(self) -> dict[str, int]:
        """``{"high": n, "critical": n}``: the ungated findings per severity."""
        return {s: sum(1 for f in self.ungated if f.get("severity") == s) for s in ("high", "critical")}

    @property
    def failing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.failed)
