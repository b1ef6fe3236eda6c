"""Policies: what a policy file (or a run's ``gate:`` block) says, parsed and checked. Reads YAML, never results.

One grammar for ``nnaudit gate``, ``nnaudit compare`` and a run's own policy. A gate policy::

    rules:
      - performance.accuracy >= 0.9            # '<metric> <op> <number>': a rule on a value
      - metric: imbalance.balanced_accuracy    # or the same as a mapping
        op: ">="
        value: 0.8
    fail_on_section_error: true                # default: an errored section fails the gate (exit 2)
    max_findings: {critical: 0, high: 2}       # optional: findings at that severity or worse
    waivers:                                   # optional: accepted failures, with reason, author and expiry
      - {check: performance.accuracy >= 0.9, reason: ..., by: alice, until: 2027-03-31}

(waivers: ``audit.waivers`` parses them, ``audit.decide.waive`` applies them).

A compare policy is a gate policy whose rules may also be rules on deltas (candidate - base), with two
more keys::

    rules:
      - robustness.worst_case.linf.eps=0.1.robust_accuracy delta >= -0.02
      - {metric: performance.accuracy, delta: true, op: ">=", value: -0.01}
    significant_regressions: fail              # fail (default) | report
    alpha: 0.05                                # family-wise error rate of the significance tests

Every mistake is a ``ConfigError(key, message)`` naming the key to change (with a did-you-mean for a
misspelt one); the tests match the messages below. The policy is engine-level (the decisions in
``audit.decide`` evaluate it) because the run config's ``gate:`` block is checked with it when the
config loads, before anything runs. Never imports torch.
"""

from __future__ import annotations

import difflib
import math
import operator
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audit.errors import ConfigError
from audit.numbers import format_number
from audit.results import SEVERITIES
from audit.waivers import Waiver, json_safe_waivers, parse_waivers

RegressionMode = Literal["fail", "report"]
DEFAULT_ALPHA = 0.05


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
POLICY_KEYS = ("rules", "fail_on_section_error", "max_findings", "waivers")
COMPARE_KEYS = ("significant_regressions", "alpha")
RULE_KEYS = ("metric", "op", "value")

# -- errors (ConfigError(key, message)); tests match these ----------------------------------------------
POLICY_NOT_FOUND = "no gate policy file at {path}; pass the path of a YAML policy (see `nnaudit gate --help`)"
POLICY_UNREADABLE = "cannot read the policy {path}: {error}"
POLICY_NOT_MAPPING = "a policy is a YAML mapping with 'rules:' at the top level, got {kind}"
POLICY_EMPTY = "the policy checks nothing: add 'rules:' (e.g. '- performance.accuracy >= 0.9') or 'max_findings:'"
UNKNOWN_POLICY_KEY = ("unknown key {key!r}{hint}; a policy has only: rules, fail_on_section_error, max_findings, "
                      "waivers")
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
BAD_REGRESSION_MODE = "'significant_regressions' is fail or report, got {value!r}"
BAD_ALPHA = "'alpha' is the family-wise error rate, a number between 0 and 0.5, got {value!r}"
DELTA_RULE_SYNTAX = ("cannot read rule {text!r}: write '<metric> delta <op> <number>' such as "
                     "'robustness.worst_case.linf.eps=0.1.robust_accuracy delta >= -0.02'")
UNKNOWN_COMPARE_KEY = "unknown key {key!r}{hint}; a compare policy has only: {known}"
BAD_DELTA_FLAG = "'delta' in a rule is true (a rule on candidate - base) or false (on the candidate), got {value!r}"

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE_RE = re.compile(rf"^\s*(?P<metric>\S+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>{_NUMBER})\s*$")
_DELTA_RE = re.compile(r"^\s*(?P<metric>\S+?)\s+delta\s*(?P<rest>(?:>=|<=|==|!=|>|<).*)$")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_=+\-.<>]+)+$")


@dataclass(frozen=True)
class Rule:
    """``metric op threshold``: on the metric's value, or (in a compare policy's ``delta_rules``) on its delta."""

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
    """A gate policy: rules on values, findings limits, and whether an errored section fails the gate."""

    rules: tuple[Rule, ...] = ()
    fail_on_section_error: bool = True
    max_findings: Mapping[str, int] = field(default_factory=dict)
    waivers: tuple[Waiver, ...] = ()


@dataclass(frozen=True)
class ComparePolicy:
    """Rules on deltas, a gate policy for the candidate (rules on values, findings), and how to treat
    significant regressions."""

    delta_rules: tuple[Rule, ...] = ()
    gate: Policy | None = None  # rules on values and max_findings, evaluated on the candidate
    fail_on_section_error: bool = True
    significant_regressions: RegressionMode = "fail"
    alpha: float = DEFAULT_ALPHA

    @property
    def has_rules(self) -> bool:
        return bool(self.delta_rules) or self.gate is not None


# -- parsing ------------------------------------------------------------------------------------------


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


def _section_error_flag(data: Mapping[str, Any]) -> bool:
    flag = data.get("fail_on_section_error", True)
    if not isinstance(flag, bool):
        raise ConfigError("fail_on_section_error", BAD_FLAG.format(value=flag))
    return flag


def _rule_items(data: Mapping[str, Any]) -> list[Any]:
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ConfigError("rules", RULES_NOT_LIST)
    return raw_rules


def parse_policy(data: Any) -> Policy:
    """A gate ``Policy`` from the parsed YAML; ``ConfigError(key, message)`` names what to change."""
    if not isinstance(data, Mapping):
        raise ConfigError("policy", POLICY_NOT_MAPPING.format(kind=_kind(data)))
    for key in data:
        if key not in POLICY_KEYS:
            raise ConfigError(str(key), UNKNOWN_POLICY_KEY.format(key=key, hint=_did_you_mean(key, POLICY_KEYS)))
    rules = tuple(parse_rule(item, f"rules[{i}]") for i, item in enumerate(_rule_items(data)))
    flag = _section_error_flag(data)
    limits = _max_findings(data.get("max_findings"))
    waivers = parse_waivers(data.get("waivers"))
    if not rules and not limits:
        raise ConfigError("rules", POLICY_EMPTY)
    return Policy(rules=rules, fail_on_section_error=flag, max_findings=limits, waivers=waivers)


def _delta_rule(item: Any, key: str) -> Rule | None:
    """A rule on a delta, or None when ``item`` is a rule on a value."""
    if isinstance(item, str):
        if re.search(r"\sdelta(\s|[<>=!])", item) is None:
            return None
        match = _DELTA_RE.match(item)
        if match is None:
            raise ConfigError(key, DELTA_RULE_SYNTAX.format(text=item))
        return parse_rule(f"{match['metric']} {match['rest']}", key)
    if isinstance(item, Mapping) and "delta" in item:
        flag = item["delta"]
        if not isinstance(flag, bool):
            raise ConfigError(f"{key}.delta", BAD_DELTA_FLAG.format(value=flag))
        rule = parse_rule({k: v for k, v in item.items() if k != "delta"}, key)
        return rule if flag else None
    return None


def parse_compare_policy(data: Any) -> ComparePolicy:
    """A ``ComparePolicy`` from parsed YAML; ``ConfigError(key, message)`` names what to change. Unlike a gate
    policy it may hold no rules at all (then the significance tests alone decide)."""
    if not isinstance(data, Mapping):
        raise ConfigError("policy", POLICY_NOT_MAPPING.format(kind=type(data).__name__))
    known = (*(k for k in POLICY_KEYS if k != "waivers"), *COMPARE_KEYS)  # waivers: the gate and run verdict only
    for key in data:
        if key not in known:
            raise ConfigError(str(key), UNKNOWN_COMPARE_KEY.format(key=key, hint=_did_you_mean(key, known),
                                                                   known=", ".join(known)))
    mode = data.get("significant_regressions", "fail")
    if mode not in ("fail", "report"):
        raise ConfigError("significant_regressions", BAD_REGRESSION_MODE.format(value=mode))
    alpha = data.get("alpha", DEFAULT_ALPHA)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 0.5:
        raise ConfigError("alpha", BAD_ALPHA.format(value=alpha))
    flag = _section_error_flag(data)
    delta_rules: list[Rule] = []
    on_values: list[Any] = []
    for i, item in enumerate(_rule_items(data)):
        rule = _delta_rule(item, f"rules[{i}]")
        if rule is not None:
            delta_rules.append(rule)
        else:
            parse_rule(item, f"rules[{i}]")  # the gate's message, with this rule's own index
            on_values.append(item)
    gate = None
    if on_values or data.get("max_findings"):
        gate = parse_policy({"rules": on_values, "fail_on_section_error": flag,
                             "max_findings": data.get("max_findings")})
    return ComparePolicy(delta_rules=tuple(delta_rules), gate=gate, fail_on_section_error=flag,
                         significant_regressions=mode, alpha=float(alpha))


# -- files and the run's own policy ---------------------------------------------------------------------


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
    """Read and check a gate policy file."""
    return parse_policy(read_policy_yaml(path))


def load_compare_policy(path: str | os.PathLike[str]) -> ComparePolicy:
    """Read and check a compare policy file; the gate's messages for a missing or bad file."""
    return parse_compare_policy(read_policy_yaml(path))


def check_policy_data(data: Any, *, key: str = "gate") -> dict[str, Any]:
    """Validate a gate policy mapping (a config's ``gate:`` block or a policy file); ``ConfigError`` names
    ``key.<what>``. Returns the mapping with waiver dates as ``YYYY-MM-DD`` text (it is stored in JSON)."""
    try:
        parse_policy(data)
    except ConfigError as err:
        where = key if err.key in ("policy", "<root>") else f"{key}.{err.key}"
        raise ConfigError(where, err.message) from err
    return json_safe_waivers(data)


def read_policy_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a policy file, validated (``nnaudit run --policy``: the run carries it in ``gate:``)."""
    data = read_policy_yaml(path, key="--policy", empty_key="--policy")
    return check_policy_data(data, key=f"--policy {Path(path)}")


def run_policy(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The policy mapping a run carries (``manifest.config.gate``), or None when it is not gated."""
    gate = results.get("manifest", {}).get("config", {}).get("gate")
    return dict(gate) if isinstance(gate, Mapping) and gate else None
