"""The gate: check a finished run against a policy (``audit.policy``). Pure: reads results, writes nothing.

``evaluate_policy(results, policy, run_dir=...)`` returns a ``Decision`` of kind ``gate`` with one
``Check`` per rule, per findings limit, for the run's state and (with ``fail_on_section_error``) per
section. Exit codes: 0 every check passed; 1 a threshold failed or there were too many findings; 2 a
metric is missing or could not be computed (null/NaN), a section errored, or the run did not finish
(running, interrupted, or killed: incomplete) (2 wins over 1). Waivers turn failed checks into ``waived``
(not failing) and ``--strict`` fails on ungated high or critical findings (``audit.decide.waive``).
Metric values are read through
``audit.results.decode_number``: an infinite value (``"Infinity"`` in results.json, e.g. the median
minimal adversarial eps of a model no attack fooled) compares as infinity, so it passes ``>= 0.1`` and
fails ``<= 0.5``; a NaN never passes any rule, ``!=`` included. ``==`` and ``!=`` compare with a
relative tolerance of 1e-9. Never runs a model, never imports torch.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from collections.abc import Mapping
from typing import Any

from audit.decide.checks import Check, CheckStatus, Decision
from audit.decide.waive import (
    findings_limit_checks,
    strict_check,
    today_utc,
    ungated_findings,
    waive_checks,
    waiver_states,
)
from audit.errors import ConfigError
from audit.findings import run_findings, severity_rank
from audit.numbers import format_number
from audit.policy import Policy, Rule, load_policy, parse_policy, run_policy
from audit.results import all_metrics, decode_number
from audit.runs import RunState, run_state, run_title

# -- check messages; tests match these ----------------------------------------------------------------
MISSING_METRIC = "metric {metric!r} is not in the results{hint}"
SKIPPED_METRIC = "metric {metric!r} is not in the results: section {section!r} was skipped"
NULL_METRIC = "metric {metric!r} is null (NaN): the check could not compute it"
SECTION_FAILED_METRIC = "metric {metric!r} is missing because section {section!r} failed: {error}"
SECTION_FAILED = "section {section!r} failed: {error}"
SECTION_OK = "section {section!r} ran without error"
SECTION_SKIPPED = "section {section!r} was skipped"
RUN_INCOMPLETE = "the run is {status}, not finished: {reason}{never_ran}; results are partial{hint}"
RUN_COMPLETE = "the run completed"
RUN_FAILED = "every section ran; {reason}"
NO_POLICY = ("the run carries no gate policy: pass --policy FILE, or give the run one ('gate:' in its config or "
             "`nnaudit run --policy FILE`)")
HIGH = severity_rank("high")
RESUME_HINT = "; finish it with `nnaudit run --resume {run_dir}`"


def gate_policy(results: Mapping[str, Any], policy_path: str | os.PathLike[str] | None) -> Policy:
    """The policy to gate ``results`` with: the file at ``policy_path``, else the one the run carries (config
    ``gate:`` or ``nnaudit run --policy``); ``ConfigError`` when there is none or it is invalid."""
    if policy_path is not None:
        return load_policy(policy_path)
    carried = run_policy(results)
    if carried is None:
        raise ConfigError("--policy", NO_POLICY)
    return parse_policy(carried)


def _section_error_text(section: Mapping[str, Any]) -> str:
    error = section.get("error") or {}
    return f"{error.get('type', 'Error')}: {error.get('message', 'no message recorded')}"


def _owner(metric: str, sections: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """The section a metric belongs to: metric names start with their section's name."""
    candidates = [name for name in sections if metric == name or metric.startswith(name + ".")]
    if not candidates:
        return None
    name = max(candidates, key=len)
    return name, sections[name]


def _rule_check(rule: Rule, status: CheckStatus, message: str, value: float | None = None) -> Check:
    return Check(rule.text, "metric", status, message, rule.metric, rule.op, rule.threshold, value)


def _closest(name: str, names: list[str]) -> list[str]:
    """The names nearest ``name`` (a typo), only those about as close as the best one."""
    scored = sorted(((difflib.SequenceMatcher(None, name, other).ratio(), other) for other in names), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    best = scored[0][0]
    return [other for ratio, other in scored[:3] if ratio >= max(0.6, best - 0.03)]


def _missing_check(rule: Rule, metrics: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> Check:
    owner = _owner(rule.metric, sections)
    if owner is not None and owner[1].get("status") == "error":
        return _rule_check(rule, "error", SECTION_FAILED_METRIC.format(
            metric=rule.metric, section=owner[0], error=_section_error_text(owner[1])))
    if owner is not None and owner[1].get("status") == "skipped":
        return _rule_check(rule, "missing", SKIPPED_METRIC.format(metric=rule.metric, section=owner[0]))
    close = _closest(rule.metric, list(metrics))
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return _rule_check(rule, "missing", MISSING_METRIC.format(metric=rule.metric, hint=hint))


def evaluate_rule(rule: Rule, metrics: Mapping[str, float | None],
                  sections: Mapping[str, Mapping[str, Any]] | None = None) -> Check:
    """One rule on a value against the run's metrics; ``sections`` explains a missing metric."""
    if rule.metric not in metrics:
        return _missing_check(rule, metrics, sections or {})
    value = decode_number(metrics[rule.metric])  # in-memory results may hold NaN: it reads as None
    if value is None:
        return _rule_check(rule, "missing", NULL_METRIC.format(metric=rule.metric))
    ok = rule.check(value)
    verb = "meets" if ok else "does not meet"
    message = f"{rule.metric} = {format_number(value)} {verb} {rule.op} {format_number(rule.threshold)}"
    return _rule_check(rule, "pass" if ok else "fail", message, value)


def _run_check(state: RunState, run_dir: str | os.PathLike[str] | None) -> Check:
    """The run's own check: a run that did not finish is an error whatever the policy says."""
    if state.status == "complete":
        return Check("run completed", "run", "pass", RUN_COMPLETE)
    if state.status == "failed":
        return Check("run completed", "run", "pass", RUN_FAILED.format(reason=state.reason))
    never = f"; sections that never ran: {', '.join(state.never_ran)}" if state.never_ran else ""
    hint = RESUME_HINT.format(run_dir=run_dir) if run_dir is not None and state.status != "running" else ""
    return Check("run completed", "run", "error",
                 RUN_INCOMPLETE.format(status=state.status, reason=state.reason, never_ran=never, hint=hint))


def _section_checks(results: Mapping[str, Any]) -> list[Check]:
    checks = []
    for name, section in results.get("sections", {}).items():
        status = section.get("status", "ok")
        if status == "error":
            check = Check(f"section {name}", "section", "error",
                          SECTION_FAILED.format(section=name, error=_section_error_text(section)))
        elif status == "skipped":
            check = Check(f"section {name}", "section", "skipped", SECTION_SKIPPED.format(section=name))
        else:
            check = Check(f"section {name}", "section", "pass", SECTION_OK.format(section=name))
        checks.append(check)
    return checks


def evaluate_policy(results: Mapping[str, Any], policy: Policy, *,
                    run_dir: str | os.PathLike[str] | None = None, strict: bool = False,
                    today: dt.date | None = None) -> Decision:
    """Check ``results`` (a loaded results dict) against ``policy``: the gate's ``Decision``. Pure.

    ``run_dir`` (where the results came from) tells a run still being written from one whose
    process died; without it a run stored as running is simply not finished. Either way it exits 2.
    Waivers (``audit.decide.waive``) act on ``today`` (default: the current UTC date). ``strict`` adds a
    check that fails on high or critical findings no rule covers and no waiver waives.
    """
    day = today if today is not None else today_utc()
    metrics = all_metrics(dict(results))
    sections = results.get("sections", {})
    findings = run_findings(results)
    checks = [evaluate_rule(rule, metrics, sections) for rule in policy.rules]
    checks += findings_limit_checks(findings, policy.max_findings, policy.waivers, today=day)
    checks.append(_run_check(run_state(dict(results), run_dir), run_dir))
    if policy.fail_on_section_error:
        checks += _section_checks(results)
    checks = waive_checks(checks, policy.waivers, today=day)
    ungated = ungated_findings(findings, policy, today=day)
    if strict:
        checks.append(strict_check(ungated))
    return Decision("gate", tuple(checks), run_title=run_title(results),
                    findings=tuple(f for f in findings if severity_rank(f.get("severity", "info")) >= HIGH),
                    waivers=tuple(waiver_states(checks, findings, policy.waivers, today=day)),
                    ungated=tuple(ungated))
