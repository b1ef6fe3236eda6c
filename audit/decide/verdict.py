"""The run verdict: the run's own gate policy, decided when the run ends and stored in results.json.

A run carries its policy in the config (``gate:``, the same mapping as a policy file) or gets one from
``nnaudit run --policy FILE`` (copied into ``gate:``, so the manifest's config shows it). When the run
ends, whatever its status, the runner stores the record ``evaluate_verdict`` builds from the gate's
``Decision`` (the application hands this function to ``audit.runner.run_audit``: the engine does not
import decisions) as the top-level ``verdict``::

    {"status": "pass" | "fail" | "error", "exit_code": 0 | 1 | 2, "evaluated_at": "...",
     "checks": [{"name", "kind", "status", "message", "metric", "op", "threshold", "value", "waiver"?}, ...],
     "waivers": [{"check" | "finding", "reason", "by", "until", "state", "message", "matched"}, ...],
     "ungated_findings": {"high": n, "critical": n}, "ungated": [finding, ...]}

A waived check (status ``waived``) carries its ``waiver`` ({check or finding, reason, by, until}); each policy
waiver is listed with its state (active, unused, expired, stale); ``ungated_findings`` counts the high and
critical findings no policy rule covers and no waiver waives, ``ungated`` lists them (``audit.decide.waive``).
Records written before waivers have none of these three keys: readers treat them as empty.

A run without a policy has no ``verdict`` key: readers show it as not gated. ``error`` is the gate's
exit 2 (a metric missing or NaN, a section errored, the run did not finish): the policy cannot say
pass or fail. Never imports torch.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, Literal

from audit.decide.checks import FAILED_STATUSES, Check, Decision
from audit.decide.gate import evaluate_policy
from audit.policy import parse_policy, run_policy
from audit.results import VERDICT_KEY, decode_number, encode_number

VerdictStatus = Literal["pass", "fail", "error", "not_gated"]
NOT_GATED: VerdictStatus = "not_gated"


def check_record(check: Check) -> dict[str, Any]:
    """A check as the stored verdict holds it (numbers encoded as results.json stores them)."""
    record: dict[str, Any] = {
        "name": check.name, "kind": check.kind, "status": check.status, "message": check.message,
        "metric": check.metric, "op": check.op, "threshold": encode_number(check.threshold),
        "value": encode_number(check.value)}
    if check.waiver is not None:
        record["waiver"] = dict(check.waiver)
    return record


_FINDING_FIELDS = ("severity", "section", "message", "metric", "code")


def verdict_record(decision: Decision, *, now: str | None = None) -> dict[str, Any]:
    """The stored run verdict of a gate ``Decision``, stamped ``now`` (default: the current UTC time)."""
    stamp = now if now is not None else dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"status": decision.status, "exit_code": decision.exit_code, "evaluated_at": stamp,
            "checks": [check_record(c) for c in decision.checks],
            "waivers": [dict(w) for w in decision.waivers],
            "ungated_findings": decision.ungated_counts,
            "ungated": [{k: str(f[k]) for k in _FINDING_FIELDS if f.get(k) is not None} for f in decision.ungated]}


def evaluate_verdict(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None, *,
                     now: str | None = None, today: dt.date | None = None) -> dict[str, Any] | None:
    """The run verdict record for ``results`` under the policy it carries; None when it carries none.

    Pure: reads the results (and ``run_dir``'s lock, to tell a dead run from a live one). Waivers act on
    ``today`` (default: the current UTC date).
    """
    data = run_policy(results)
    if data is None:
        return None
    return verdict_record(evaluate_policy(results, parse_policy(data), run_dir=run_dir, today=today), now=now)


def verdict_status(results: Mapping[str, Any]) -> VerdictStatus:
    """``pass``, ``fail``, ``error`` from the stored verdict; ``not_gated`` without one."""
    record = results.get(VERDICT_KEY)
    if not isinstance(record, Mapping):
        return NOT_GATED
    status = record.get("status")
    return status if status in ("pass", "fail", "error") else NOT_GATED


def failing_checks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks of a stored verdict that did not pass (fail, missing, error), values decoded."""
    out = []
    for check in record.get("checks", []):
        if check.get("status") in FAILED_STATUSES:
            out.append({**check, "value": decode_number(check.get("value")),
                        "threshold": decode_number(check.get("threshold"))})
    return out
