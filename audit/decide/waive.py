"""Waivers applied to a gate's checks, and the findings no policy rule covers. Pure; never imports torch.

A policy's waivers (``audit.waivers``) act on ``today`` (a parameter, so tests use a fixed clock; by
default the current UTC date). A waiver holds through its ``until`` day.

- A **check** waiver matches a check whose name or metric equals its ``check``. A matched check that
  failed becomes ``waived`` (it does not fail the decision) and carries the waiver; an errored or missing
  check stays as it is (the gate cannot judge it, a waiver does not change that).
- A **finding** waiver matches findings by metric (or code) and message text. Waived findings are not
  counted by ``max_findings`` (a limit that fails only because of them is ``waived``) and are never
  ungated.
- An **expired** waiver waives nothing: the check it matches fails (or the findings count) with a message
  saying the waiver expired on its date.

Each waiver's state: ``active`` (it waives a failed check or at least one finding), ``unused`` (what it
matches passes: the waiver is not needed), ``expired`` and ``stale`` (it matches no check or finding:
a renamed check, a fixed finding, a typo). Only an expired waiver can make the gate fail, through the
check it no longer waives.

**Ungated findings**: a high or critical finding is *covered* by the policy when a ``max_findings`` limit
counts it (a limit at its severity or a milder one) or a rule names its metric (the finding's ``metric``
or ``code``); a finding neither covered nor waived is ungated. The verdict names them ("3 high findings
are not gated"); ``nnaudit gate --strict`` adds a check that fails on them.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from audit.decide.checks import Check, CheckStatus
from audit.findings import severity_rank
from audit.policy import Policy
from audit.waivers import Waiver

UNGATED_SEVERITIES = ("critical", "high")

# -- messages; tests match these -----------------------------------------------------------------------
WAIVED_NOTE = "; WAIVED by {by} until {until}: {reason}"
EXPIRED_NOTE = "; its waiver (by {by}: {reason}) expired on {until}"
STATE_ACTIVE_CHECK = "waives the failed check {names}"
STATE_ACTIVE_FINDINGS = "waives {n} finding{s}: {messages}"
STATE_UNUSED = "matches {names}, which did not fail: the waiver is not needed"
STATE_EXPIRED = "expired on {until}{effect}"
STATE_STALE_CHECK = "matches no check of the policy{hint}: remove it or fix its name"
STATE_STALE_FINDING = "matches no finding of the run: remove it or fix its metric/text"
STRICT_NAME = "no ungated high/critical findings"
STRICT_PASS = "every high and critical finding is gated by a rule or a findings limit, or waived"
STRICT_FAIL = "{line} (--strict): {listing}"


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def ungated_text(counts: Mapping[str, int]) -> str:
    """``3 high findings are not gated`` / ``1 critical and 2 high findings are not gated``; "" for none."""
    parts = [f"{counts[s]} {s}" for s in UNGATED_SEVERITIES if counts.get(s)]
    if not parts:
        return ""
    total = sum(counts.get(s, 0) for s in UNGATED_SEVERITIES)
    return f"{' and '.join(parts)} finding{'' if total == 1 else 's'} {'is' if total == 1 else 'are'} not gated"


def _names(items: Sequence[str]) -> str:
    return ", ".join(repr(i) for i in items)


# -- findings ----------------------------------------------------------------------------------------------


def finding_waivers(findings: Sequence[Mapping[str, Any]], waivers: Sequence[Waiver], *,
                    today: dt.date) -> dict[int, Waiver]:
    """Index of each finding an active (not expired) finding waiver covers -> that waiver (the first listed)."""
    out: dict[int, Waiver] = {}
    for i, finding in enumerate(findings):
        waiver = next((w for w in waivers if not w.expired(today) and w.matches_finding(finding)), None)
        if waiver is not None:
            out[i] = waiver
    return out


def findings_limit_checks(findings: Sequence[Mapping[str, Any]], limits: Mapping[str, int],
                          waivers: Sequence[Waiver], *, today: dt.date) -> list[Check]:
    """One check per ``max_findings`` limit; waived findings are not counted (a limit that fails only because of
    them is ``waived``), findings of expired waivers are, with a note."""
    waived = finding_waivers(findings, waivers, today=today)
    checks = []
    for severity, limit in limits.items():
        scope_idx = [i for i, f in enumerate(findings)
                     if severity_rank(f.get("severity", "info")) >= severity_rank(severity)]
        total = len(scope_idx)
        kept = sum(1 for i in scope_idx if i not in waived)
        scope = severity if severity == "critical" else f"{severity} or worse"
        message = f"{total} finding{'' if total == 1 else 's'} at {scope}; at most {limit} allowed"
        status: CheckStatus = "pass" if total <= limit else "fail"
        waiver, value = None, total
        if total > limit and kept < total:
            used = next(waived[i] for i in scope_idx if i in waived)
            message += f"; {total - kept} waived, {kept} counted"
            if kept <= limit:
                status, waiver = "waived", used.record()
                message += WAIVED_NOTE.format(by=used.by, until=used.until.isoformat(), reason=used.reason)
            else:
                value = kept
        if status == "fail":
            expired = [w for w in waivers if w.expired(today) and any(w.matches_finding(findings[i])
                                                                       for i in scope_idx)]
            if expired:
                waiver = expired[0].record()
                message += "".join(EXPIRED_NOTE.format(by=w.by, reason=w.reason, until=w.until.isoformat())
                                   for w in expired)
        checks.append(Check(f"max_findings.{severity} <= {limit}", "findings", status, message,
                            f"findings.{severity}", "<=", float(limit), float(value), waiver))
    return checks


def ungated_findings(findings: Sequence[Mapping[str, Any]], policy: Policy, *, today: dt.date) -> list[dict[str, Any]]:
    """The high and critical findings no rule or findings limit covers and no active waiver waives."""
    waived = finding_waivers(findings, policy.waivers, today=today)
    rule_metrics = {rule.metric for rule in policy.rules}
    floor = min((severity_rank(s) for s in policy.max_findings), default=None)
    out = []
    for i, finding in enumerate(findings):
        rank = severity_rank(finding.get("severity", "info"))
        if finding.get("severity") not in UNGATED_SEVERITIES or i in waived:
            continue
        if floor is not None and rank >= floor:
            continue
        if {finding.get("metric"), finding.get("code")} & rule_metrics:
            continue
        out.append(dict(finding))
    return out


# -- checks ------------------------------------------------------------------------------------------------


def _matches(waiver: Waiver, check: Check) -> bool:
    return waiver.check is not None and waiver.check in (check.name, check.metric)


def waive_checks(checks: Sequence[Check], waivers: Sequence[Waiver], *, today: dt.date) -> list[Check]:
    """``checks`` with each failed check an active check waiver matches as ``waived`` (carrying the waiver), and
    each failed check only expired waivers match saying so. Findings limits are waived by finding waivers
    (``findings_limit_checks``) or by a check waiver naming them."""
    out = []
    for check in checks:
        matching = [w for w in waivers if _matches(w, check)]
        if check.status != "fail" or not matching:
            out.append(check)
            continue
        active = [w for w in matching if not w.expired(today)]
        if active:
            w = active[0]
            note = WAIVED_NOTE.format(by=w.by, until=w.until.isoformat(), reason=w.reason)
            out.append(replace(check, status="waived", message=check.message + note, waiver=w.record()))
        else:
            notes = "".join(EXPIRED_NOTE.format(by=w.by, reason=w.reason, until=w.until.isoformat())
                            for w in matching)
            out.append(replace(check, message=check.message + notes, waiver=matching[0].record()))
    return out


def waiver_states(checks: Sequence[Check], findings: Sequence[Mapping[str, Any]], waivers: Sequence[Waiver], *,
                  today: dt.date) -> list[dict[str, Any]]:
    """Each waiver's record with ``state`` (active, unused, expired, stale), ``message`` and ``matched`` (the
    check names or finding messages it matches), for the decision and the stored verdict."""
    names = [c.name for c in checks] + [c.metric for c in checks if c.metric]
    out = []
    for waiver in waivers:
        if waiver.check is not None:
            hits = [c for c in checks if _matches(waiver, c)]
            matched = [c.name for c in hits]
            failing = [c.name for c in hits if c.status in ("fail", "waived")]
            close = difflib.get_close_matches(waiver.check, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            stale = STATE_STALE_CHECK.format(hint=hint)
            active = STATE_ACTIVE_CHECK.format(names=_names(failing))
            effect = f": the check {_names(failing)} fails" if failing else ": what it matches passes without it"
        else:
            hits_f = [f for f in findings if waiver.matches_finding(f)]
            matched = [str(f.get("message", "")) for f in hits_f]
            failing = matched
            stale = STATE_STALE_FINDING
            active = STATE_ACTIVE_FINDINGS.format(n=len(matched), s="" if len(matched) == 1 else "s",
                                                  messages="; ".join(matched[:3]) + ("; ..." if len(matched) > 3
                                                                                    else ""))
            effect = f": {len(matched)} matching finding(s) count again" if matched else ""
        if not matched:
            state, message = "stale", stale
        elif waiver.expired(today):
            state, message = "expired", STATE_EXPIRED.format(until=waiver.until.isoformat(), effect=effect)
        elif failing:
            state, message = "active", active
        else:
            state, message = "unused", STATE_UNUSED.format(names=_names(matched))
        out.append({**waiver.record(), "state": state, "message": message, "matched": matched})
    return out


def strict_check(ungated: Sequence[Mapping[str, Any]]) -> Check:
    """``nnaudit gate --strict``: fails when a high or critical finding is neither gated nor waived."""
    if not ungated:
        return Check(STRICT_NAME, "findings", "pass", STRICT_PASS, "findings.ungated", "<=", 0.0, 0.0)
    counts = {s: sum(1 for f in ungated if f.get("severity") == s) for s in UNGATED_SEVERITIES}
    listing = "; ".join(f"[{f.get('severity')}] {f.get('section', '')}: {f.get('message', '')}" for f in ungated)
    return Check(STRICT_NAME, "findings", "fail", STRICT_FAIL.format(line=ungated_text(counts), listing=listing),
                 "findings.ungated", "<=", 0.0, float(len(ungated)))
