"""Waivers: a gate policy's record of failures a team has looked at and accepted, with who, why and until when.

A policy (a policy file or a run's ``gate:`` block) may hold::

    waivers:
      - check: performance.accuracy >= 0.95     # a check's name, or the metric key a rule names
        reason: known gap, retraining planned (JIRA-123)
        by: alice@example.com
        until: 2027-03-31                       # the last day it holds (YYYY-MM-DD)
      - finding: {metric: defenses.squeeze.adaptive_evasion, text: evaded}   # or a finding: metric and/or text
        reason: the detector is not relied upon
        by: bob
        until: 2027-01-15

``reason``, ``by`` and ``until`` are required. A ``check`` waiver matches a check whose name or metric is
the given text; a ``finding`` waiver matches a finding whose ``metric`` (or ``code``) equals ``metric`` and
whose message contains ``text`` (case-insensitive); at least one of the two. What a waiver does to a
decision is ``audit.decide.waive``; this module only parses and validates (engine level: the config's
``gate:`` block is checked when the config loads). A new run refuses a waiver that has already expired
(``check_waivers_current``); a finished run gated after the expiry fails the waived check instead.
Never imports torch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.errors import ConfigError

WAIVER_KEYS = ("check", "finding", "reason", "by", "until")
FINDING_KEYS = ("metric", "text")

# -- errors (ConfigError(key, message)); tests match these ----------------------------------------------
WAIVERS_NOT_LIST = ("'waivers' is a list of waivers, each with check (or finding), reason, by and until, e.g. "
                    "'- {check: performance.accuracy >= 0.9, reason: ..., by: alice, until: 2027-03-31}'")
WAIVER_NOT_MAPPING = "a waiver is a mapping with check (or finding), reason, by and until; got {kind}"
UNKNOWN_WAIVER_KEY = "unknown key {key!r} in a waiver{hint}; a waiver has only: check, finding, reason, by, until"
WAIVER_TARGET = ("a waiver names what it waives: 'check: <check name or metric>' or 'finding: {{metric: ..., "
                 "text: ...}}' (one of the two){got}")
WAIVER_TEXT = "a waiver needs '{key}': {what} (a non-empty text)"
WAIVER_WHAT = {"reason": "why the failure is accepted", "by": "who accepted it",
               "check": "the name of a check (e.g. 'performance.accuracy >= 0.9') or a metric key"}
WAIVER_NO_UNTIL = "a waiver needs 'until': the last day it holds, a date such as 2027-03-31; waivers expire"
WAIVER_BAD_DATE = "'until' must be a date YYYY-MM-DD such as 2027-03-31, got {value!r}"
FINDING_NOT_MAPPING = "'finding' matches a finding by 'metric' and/or 'text' (a mapping), got {kind}"
UNKNOWN_FINDING_KEY = "unknown key {key!r} in a waiver's finding; it has only: metric, text"
FINDING_EMPTY = "'finding' needs 'metric' (the finding's metric key) or 'text' (part of its message), or both"
WAIVER_EXPIRED_AT_CREATION = ("the waiver of {target} (by {by}: {reason}) expired on {until}; a new run cannot "
                              "carry an expired waiver: renew it (a later 'until' and a fresh reason) or remove it")


@dataclass(frozen=True)
class Waiver:
    """One waiver: what it matches (``check``, or ``finding_metric`` / ``finding_text``), why, who, until when."""

    reason: str
    by: str
    until: dt.date
    check: str | None = None
    finding_metric: str | None = None
    finding_text: str | None = None

    @property
    def target(self) -> str:
        """What it waives, for messages: ``check 'X'`` or ``finding metric 'M', text 'T'``."""
        if self.check is not None:
            return f"check {self.check!r}"
        parts = [f"metric {self.finding_metric!r}" if self.finding_metric else "",
                 f"text {self.finding_text!r}" if self.finding_text else ""]
        return "finding " + ", ".join(p for p in parts if p)

    def expired(self, today: dt.date) -> bool:
        """True after ``until`` (a waiver holds through its last day)."""
        return today > self.until

    def record(self) -> dict[str, Any]:
        """The waiver as results.json stores it (``until`` as YYYY-MM-DD)."""
        out: dict[str, Any] = {}
        if self.check is not None:
            out["check"] = self.check
        else:
            out["finding"] = {k: v for k, v in (("metric", self.finding_metric), ("text", self.finding_text)) if v}
        return {**out, "reason": self.reason, "by": self.by, "until": self.until.isoformat()}

    def matches_finding(self, finding: Mapping[str, Any]) -> bool:
        if self.check is not None:
            return False
        if self.finding_metric and self.finding_metric not in (finding.get("metric"), finding.get("code")):
            return False
        return not self.finding_text or self.finding_text.casefold() in str(finding.get("message", "")).casefold()


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"


def _text(item: Mapping[str, Any], name: str, key: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}.{name}", WAIVER_TEXT.format(key=name, what=WAIVER_WHAT[name]))
    return value.strip()


def parse_until(value: Any, key: str) -> dt.date:
    """A waiver's ``until``: a YAML date or a ``YYYY-MM-DD`` string."""
    if value is None:
        raise ConfigError(key, WAIVER_NO_UNTIL)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            if len(value.strip()) == 10:
                return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(key, WAIVER_BAD_DATE.format(value=value if not isinstance(value, dt.date) else str(value)))


def _finding(value: Any, key: str) -> tuple[str | None, str | None]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, FINDING_NOT_MAPPING.format(kind=_kind(value)))
    for name in value:
        if name not in FINDING_KEYS:
            raise ConfigError(f"{key}.{name}", UNKNOWN_FINDING_KEY.format(key=name))
    found = []
    for name in FINDING_KEYS:
        item = value.get(name)
        if item is not None and (not isinstance(item, str) or not item.strip()):
            raise ConfigError(f"{key}.{name}", FINDING_EMPTY)
        found.append(item.strip() if isinstance(item, str) else None)
    if not any(found):
        raise ConfigError(key, FINDING_EMPTY)
    return found[0], found[1]


def parse_waiver(item: Any, key: str) -> Waiver:
    """One waiver from its mapping; ``key`` (``waivers[0]``) names it in errors."""
    import difflib

    if not isinstance(item, Mapping):
        raise ConfigError(key, WAIVER_NOT_MAPPING.format(kind=_kind(item)))
    for name in item:
        if name not in WAIVER_KEYS:
            close = difflib.get_close_matches(str(name), WAIVER_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}.{name}", UNKNOWN_WAIVER_KEY.format(key=name, hint=hint))
    has_check, has_finding = "check" in item, "finding" in item
    if has_check == has_finding:
        raise ConfigError(key, WAIVER_TARGET.format(got="; it names both" if has_check else ""))
    reason, by = _text(item, "reason", key), _text(item, "by", key)
    until = parse_until(item.get("until"), f"{key}.until")
    if has_check:
        return Waiver(reason=reason, by=by, until=until, check=_text(item, "check", key))
    metric, text = _finding(item["finding"], f"{key}.finding")
    return Waiver(reason=reason, by=by, until=until, finding_metric=metric, finding_text=text)


def parse_waivers(value: Any) -> tuple[Waiver, ...]:
    """The ``waivers:`` list of a policy (None or absent: no waivers)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("waivers", WAIVERS_NOT_LIST)
    return tuple(parse_waiver(item, f"waivers[{i}]") for i, item in enumerate(value))


def check_waivers_current(waivers: tuple[Waiver, ...], *, today: dt.date, key: str = "gate") -> None:
    """Refuse a waiver that has already expired on ``today`` (a new run carrying the policy): ``ConfigError``
    at ``<key>.waivers[i].until``."""
    for i, waiver in enumerate(waivers):
        if waiver.expired(today):
            raise ConfigError(f"{key}.waivers[{i}].until", WAIVER_EXPIRED_AT_CREATION.format(
                target=waiver.target, by=waiver.by, reason=waiver.reason, until=waiver.until.isoformat()))


def json_safe_waivers(data: Mapping[str, Any]) -> dict[str, Any]:
    """A policy mapping with each waiver's ``until`` as ``YYYY-MM-DD`` text (YAML reads a date; JSON has none)."""
    out = dict(data)
    if isinstance(out.get("waivers"), list):
        out["waivers"] = [{**w, "until": w["until"].isoformat()} if isinstance(w, Mapping)
                          and isinstance(w.get("until"), dt.date) else w for w in out["waivers"]]
    return out
