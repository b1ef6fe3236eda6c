"""The CI gate: check a finished run against a threshold policy. Never runs a model, never imports torch.

A policy is YAML::

    rules:
      - performance.accuracy >= 0.9            # '<metric> <op> <number>'
      - metric: imbalance.balanced_accuracy    # or the same as a mapping
        op: ">="
        value: 0.8
    fail_on_section_error: true                # default: an errored section fails the gate (exit 2)
    max_findings: {critical: 0, high: 2}       # optional: findings at that severity or worse

Exit codes: 0 every check passed; 1 a threshold failed or there were too many findings; 2 a
metric is missing or could not be computed (null/NaN), a section errored, or the run did not
finish (running, interrupted, or killed: incomplete) (2 wins over 1). Metric values are read
through ``audit.results.decode_number``: an infinite value (``"Infinity"`` in results.json, e.g.
the median minimal adversarial eps of a model no attack fooled) compares as infinity, so it
passes ``>= 0.1`` and fails ``<= 0.5``; a NaN never passes any rule, ``!=`` included.
``==`` and ``!=`` compare with a relative tolerance of 1e-9.
"""

from __future__ import annotations

import difflib
import math
import operator
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from audit.errors import ConfigError
from audit.results import SEVERITIES, RunState, all_metrics, decode_number, load_results, run_state
from reports.views import all_findings, run_title

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

OutcomeStatus = Literal["pass", "fail", "missing", "error", "skipped"]
OutcomeKind = Literal["metric", "findings", "section", "run"]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": _close,
    "!=": lambda a, b: not _close(a, b),
}
POLICY_KEYS = ("rules", "fail_on_section_error", "max_findings")
RULE_KEYS = ("metric", "op", "value")

# -- policy errors (ConfigError(key, message)); tests match these ------------------------------
POLICY_NOT_FOUND = "no gate policy file at {path}; pass the path of a YAML policy (see `nnaudit gate --help`)"
POLICY_UNREADABLE = "cannot read the policy {path}: {error}"
POLICY_NOT_MAPPING = "a policy is a YAML mapping with 'rules:' at the top level, got {kind}"
POLICY_EMPTY = "the policy checks nothing: add 'rules:' (e.g. '- performance.accuracy >= 0.9') or 'max_findings:'"
UNKNOWN_POLICY_KEY = "unknown key {key!r}{hint}; a policy has only: rules, fail_on_section_error, max_findings"
RULES_NOT_LIST = "'rules' must be a list, one rule per item (e.g. '- performance.accuracy >= 0.9')"
RULE_SYNTAX = ("cannot read rule {text!r}: write '<metric> <op> <number>' such as 'performance.accuracy >= 0.9', "
               "with <op> one of >=, >, <=, <, ==, !=")
RULE_TYPE = "a rule is a string '<metric> <op> <number>' or a mapping with metric, op and value; got {kind}"
UNKNOWN_RULE_KEY = "unknown key {key!r} in a rule{hint}; a rule mapping has only: metric, op, value"
MISSING_RULE_KEYS = "a rule mapping needs metric, op and value; missing: {missing}"
BAD_OPERATOR = "operator {op!r} is not one of >=, >, <=, <, ==, != (quote it in YAML: op: \">=\")"
BAD_THRESHOLD = "threshold {value!r} is not a finite number; write a number such as 0.9"
BAD_METRIC = "metric {metric!r} is not a dotted metric name such as 'performance.accuracy'"
BAD_FLAG = "'fail_on_section_error' must be true or false, got {value!r}"
MAX_FINDINGS_NOT_MAPPING = "'max_findings' maps a severity to the most findings allowed, e.g. {{critical: 0}}"
UNKNOWN_SEVERITY = "unknown severity {severity!r}; use one of info, low, medium, high, critical"
BAD_COUNT = "the most {severity} findings allowed must be an integer >= 0, got {value!r}"

# -- outcome messages -----------------------------------------------------------------------
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
RESUME_HINT = "; finish it with `nnaudit run --resume {run_dir}`"

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE_RE = re.compile(rf"^\s*(?P<metric>\S+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>{_NUMBER})\s*$")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_=+\-.<>]+)+$")


# -- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {format_number(self.threshold)}"

    def check(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    fail_on_section_error: bool = True
    max_findings: Mapping[str, int] = field(default_factory=dict)


def format_number(value: float | None) -> str:
    if value is None:
        return "null"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _did_you_mean(word: Any, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"


def _threshold(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, BAD_THRESHOLD.format(value=value))
    return float(value)


def _metric_name(metric: Any, key: str) -> str:
    if not isinstance(metric, str) or not _METRIC_RE.match(metric):
        raise ConfigError(key, BAD_METRIC.format(metric=metric))
    return metric


def parse_rule(item: Any, key: str = "rules[0]") -> Rule:
    """One rule from its string or mapping form; ``key`` names it in errors."""
    if isinstance(item, str):
        match = _RULE_RE.match(item)
        if match is None:
            raise ConfigError(key, RULE_SYNTAX.format(text=item))
        metric = _metric_name(match["metric"], key)
        return Rule(metric, match["op"], _threshold(float(match["value"]), key))
    if not isinstance(item, Mapping):
        raise ConfigError(key, RULE_TYPE.format(kind=_kind(item)))
    for name in item:
        if name not in RULE_KEYS:
            raise ConfigError(f"{key}.{name}", UNKNOWN_RULE_KEY.format(key=name, hint=_did_you_mean(name, RULE_KEYS)))
    missing = [name for name in RULE_KEYS if name not in item]
    if missing:
        raise ConfigError(key, MISSING_RULE_KEYS.format(missing=", ".join(missing)))
    if item["op"] not in OPERATORS:
        raise ConfigError(f"{key}.op", BAD_OPERATOR.format(op=item["op"]))
    return Rule(_metric_name(item["metric"], f"{key}.metric"), str(item["op"]),
                _threshold(item["value"], f"{key}.value"))


def _max_findings(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("max_findings", MAX_FINDINGS_NOT_MAPPING)
    limits: dict[str, int] = {}
    for severity, count in value.items():
        if severity not in SEVERITIES:
            raise ConfigError(f"max_findings.{severity}", UNKNOWN_SEVERITY.format(severity=severity))
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"max_findings.{severity}", BAD_COUNT.format(severity=severity, value=count))
        limits[str(severity)] = count
    return limits


def parse_policy(data: Any) -> Policy:
    """A ``Policy`` from the parsed YAML; ``ConfigError(key, message)`` names what to change."""
    if not isinstance(data, Mapping):
        raise ConfigError("policy", POLICY_NOT_MAPPING.format(kind=_kind(data)))
    for key in data:
        if key not in POLICY_KEYS:
            raise ConfigError(str(key), UNKNOWN_POLICY_KEY.format(key=key, hint=_did_you_mean(key, POLICY_KEYS)))
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ConfigError("rules", RULES_NOT_LIST)
    rules = tuple(parse_rule(item, f"rules[{i}]") for i, item in enumerate(raw_rules))
    flag = data.get("fail_on_section_error", True)
    if not isinstance(flag, bool):
        raise ConfigError("fail_on_section_error", BAD_FLAG.format(value=flag))
    limits = _max_findings(data.get("max_findings"))
    if not rules and not limits:
        raise ConfigError("rules", POLICY_EMPTY)
    return Policy(rules=rules, fail_on_section_error=flag, max_findings=limits)


def read_policy_yaml(path: str | os.PathLike[str], *, key: str = "policy", empty_key: str = "rules") -> Any:
    """The parsed YAML of a policy file (gate, compare and ``nnaudit run --policy`` read it the same way): a
    missing, unreadable or empty file is a ConfigError at ``key`` (``empty_key`` for an empty one)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(key, POLICY_NOT_FOUND.format(path=file))
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(key, POLICY_UNREADABLE.format(path=file, error=err)) from err
    if data is None:
        raise ConfigError(empty_key, POLICY_EMPTY)
    return data


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check a YAML policy file."""
    return parse_policy(read_policy_yaml(path))


# -- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One check of the gate: a threshold rule, a findings limit, a section or the run status."""

    name: str
    kind: OutcomeKind
    status: OutcomeStatus
    message: str
    metric: str | None = None
    op: str | None = None
    threshold: float | None = None
    value: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "missing", "error")


@dataclass(frozen=True)
class GateReport:
    """Every outcome, plus what the summaries show about the run."""

    outcomes: tuple[Outcome, ...]
    run_title: str = ""
    findings: tuple[dict[str, Any], ...] = ()

    @property
    def exit_code(self) -> int:
        statuses = {o.status for o in self.outcomes}
        if statuses & {"missing", "error"}:
            return EXIT_ERROR
        if "fail" in statuses:
            return EXIT_FAIL
        return EXIT_PASS

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASS

    def count(self, status: OutcomeStatus) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "PASSED", EXIT_FAIL: "FAILED", EXIT_ERROR: "ERROR"}[self.exit_code]


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


def _rule_outcome(rule: Rule, status: OutcomeStatus, message: str, value: float | None = None) -> Outcome:
    return Outcome(rule.text, "metric", status, message, rule.metric, rule.op, rule.threshold, value)


def _closest(name: str, names: list[str]) -> list[str]:
    """The names nearest ``name`` (a typo), only those about as close as the best one."""
    scored = sorted(((difflib.SequenceMatcher(None, name, other).ratio(), other) for other in names), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    best = scored[0][0]
    return [other for ratio, other in scored[:3] if ratio >= max(0.6, best - 0.03)]


def _missing_outcome(rule: Rule, metrics: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> Outcome:
    owner = _owner(rule.metric, sections)
    if owner is not None and owner[1].get("status") == "error":
        return _rule_outcome(rule, "error", SECTION_FAILED_METRIC.format(
            metric=rule.metric, section=owner[0], error=_section_error_text(owner[1])))
    if owner is not None and owner[1].get("status") == "skipped":
        return _rule_outcome(rule, "missing", SKIPPED_METRIC.format(metric=rule.metric, section=owner[0]))
    close = _closest(rule.metric, list(metrics))
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return _rule_outcome(rule, "missing", MISSING_METRIC.format(metric=rule.metric, hint=hint))


def evaluate_rule(rule: Rule, metrics: Mapping[str, float | None],
                  sections: Mapping[str, Mapping[str, Any]] | None = None) -> Outcome:
    """One threshold rule against the run's metrics; ``sections`` explains a missing metric."""
    if rule.metric not in metrics:
        return _missing_outcome(rule, metrics, sections or {})
    value = decode_number(metrics[rule.metric])  # in-memory results may hold NaN: it reads as None
    if value is None:
        return _rule_outcome(rule, "missing", NULL_METRIC.format(metric=rule.metric))
    ok = rule.check(value)
    verb = "meets" if ok else "does not meet"
    message = f"{rule.metric} = {format_number(value)} {verb} {rule.op} {format_number(rule.threshold)}"
    return _rule_outcome(rule, "pass" if ok else "fail", message, value)


def _findings_outcomes(results: Mapping[str, Any], limits: Mapping[str, int]) -> list[Outcome]:
    ranks = {name: i for i, name in enumerate(SEVERITIES)}
    severities = [f.get("severity", "info") for s in results.get("sections", {}).values()
                  for f in s.get("findings", [])]
    outcomes = []
    for severity, limit in limits.items():
        count = sum(1 for s in severities if ranks.get(s, -1) >= ranks[severity])
        scope = severity if severity == "critical" else f"{severity} or worse"
        ok = count <= limit
        message = f"{count} finding{'' if count == 1 else 's'} at {scope}; at most {limit} allowed"
        outcomes.append(Outcome(f"max_findings.{severity} <= {limit}", "findings", "pass" if ok else "fail", message,
                                f"findings.{severity}", "<=", float(limit), float(count)))
    return outcomes


def _run_outcome(state: RunState, run_dir: str | os.PathLike[str] | None) -> Outcome:
    """The run's own check: a run that did not finish is an error whatever the policy says."""
    if state.status == "complete":
        return Outcome("run completed", "run", "pass", RUN_COMPLETE)
    if state.status == "failed":
        return Outcome("run completed", "run", "pass", RUN_FAILED.format(reason=state.reason))
    never = f"; sections that never ran: {', '.join(state.never_ran)}" if state.never_ran else ""
    hint = RESUME_HINT.format(run_dir=run_dir) if run_dir is not None and state.status != "running" else ""
    return Outcome("run completed", "run", "error",
                   RUN_INCOMPLETE.format(status=state.status, reason=state.reason, never_ran=never, hint=hint))


def _section_outcomes(results: Mapping[str, Any]) -> list[Outcome]:
    outcomes = []
    for name, section in results.get("sections", {}).items():
        status = section.get("status", "ok")
        if status == "error":
            outcome = Outcome(f"section {name}", "section", "error",
                              SECTION_FAILED.format(section=name, error=_section_error_text(section)))
        elif status == "skipped":
            outcome = Outcome(f"section {name}", "section", "skipped", SECTION_SKIPPED.format(section=name))
        else:
            outcome = Outcome(f"section {name}", "section", "pass", SECTION_OK.format(section=name))
        outcomes.append(outcome)
    return outcomes


def evaluate_policy(results: Mapping[str, Any], policy: Policy, *,
                    run_dir: str | os.PathLike[str] | None = None) -> GateReport:
    """Check ``results`` (a loaded results dict) against ``policy``. Pure: writes nothing.

    ``run_dir`` (where the results came from) tells a run still being written from one whose
    process died; without it a run stored as running is simply not finished. Either way it exits 2.
    """
    metrics = all_metrics(dict(results))
    sections = results.get("sections", {})
    outcomes = [evaluate_rule(rule, metrics, sections) for rule in policy.rules]
    outcomes += _findings_outcomes(results, policy.max_findings)
    outcomes.append(_run_outcome(run_state(dict(results), run_dir), run_dir))
    if policy.fail_on_section_error:
        outcomes += _section_outcomes(results)
    return GateReport(outcomes=tuple(outcomes), run_title=run_title(results),
                      findings=tuple(all_findings(results, min_severity="high")))


# -- output ---------------------------------------------------------------------------------

_MARKS = {"pass": "PASS", "fail": "FAIL", "missing": "MISSING", "error": "ERROR", "skipped": "SKIP"}


def format_report(report: GateReport) -> str:
    """A plain-text table of the outcomes and a verdict line, for the terminal and CI logs."""
    rows = [(_MARKS[o.status], o.name, "" if o.value is None else format_number(o.value), o.message)
            for o in report.outcomes]
    header = ("RESULT", "CHECK", "VALUE", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"nnaudit gate: {report.run_title}" if report.run_title else "nnaudit gate"]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("pass", "fail", "missing", "error", "skipped")
                       if report.count(s))
    lines.append(f"gate {report.verdict} (exit {report.exit_code}): {counts or 'no checks'}")
    return "\n".join(lines) + "\n"


def run_gate(run_dir: str | os.PathLike[str], policy_path: str | os.PathLike[str] | None, *,
             junit: str | os.PathLike[str] | None = None, summary: str | os.PathLike[str] | None = None,
             stream: TextIO | None = None) -> int:
    """Gate a finished run: print the table, write JUnit XML / Markdown if asked, return the exit code.

    ``policy_path`` None: the policy the run carries (config ``gate:`` or ``nnaudit run --policy``).

    Raises ``ConfigError`` for a bad policy and ``ResultsError`` for missing or invalid results
    (the CLI turns both into exit code 2).
    """
    from reports.junit import write_junit
    from reports.markdown import write_markdown

    results = load_results(run_dir, validate=True)
    if policy_path is not None:
        policy = load_policy(policy_path)
    else:
        from audit.verdict import run_policy

        carried = run_policy(results)
        if carried is None:
            raise ConfigError("--policy", NO_POLICY)
        policy = parse_policy(carried)
    report = evaluate_policy(results, policy, run_dir=run_dir)
    out = stream if stream is not None else sys.stdout
    out.write(format_report(report))
    if junit is not None:
        write_junit(report, Path(junit))
    if summary is not None:
        write_markdown(report, Path(summary))
    return report.exit_code
