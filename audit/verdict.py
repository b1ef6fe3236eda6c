"""A run's verdict: its gate policy, checked when the run ends and stored in results.json.

A run carries its policy in the config (``gate:``, the same mapping as a policy file) or gets
one from ``nnaudit run --policy FILE`` (copied into ``gate:``, so the manifest's config shows
it). When the run ends, whatever its status, the runner evaluates the policy exactly as
``nnaudit gate`` would (``audit.gate.evaluate_policy``) and writes the top-level ``verdict``::

    {"status": "pass" | "fail" | "error", "exit_code": 0 | 1 | 2, "evaluated_at": "...",
     "checks": [{"name", "kind", "status", "message", "metric", "op", "threshold", "value"}, ...]}

A run without a policy has no ``verdict`` key: readers show it as not gated. ``error`` is the
gate's exit 2 (a metric missing or NaN, a section errored, the run did not finish): the policy
cannot say pass or fail. Never imports torch.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from audit.errors import ConfigError
from audit.results import decode_number, encode_number

VerdictStatus = Literal["pass", "fail", "error", "not_gated"]
VERDICT_KEY = "verdict"
NOT_GATED: VerdictStatus = "not_gated"
_BY_EXIT: dict[int, VerdictStatus] = {0: "pass", 1: "fail", 2: "error"}


def check_policy_data(data: Any, *, key: str = "gate") -> dict[str, Any]:
    """Validate a policy mapping (``gate:`` block or policy file); ``ConfigError`` names ``key.<what>``."""
    from audit.gate import parse_policy

    try:
        parse_policy(data)
    except ConfigError as err:
        where = key if err.key in ("policy", "<root>") else f"{key}.{err.key}"
        raise ConfigError(where, err.message) from err
    return dict(data)


def read_policy_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a policy file, validated (``nnaudit run --policy``)."""
    from audit.gate import read_policy_yaml

    data = read_policy_yaml(path, key="--policy", empty_key="--policy")
    return check_policy_data(data, key=f"--policy {Path(path)}")


def run_policy(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The policy mapping a run carries (``manifest.config.gate``), or None when it is not gated."""
    gate = results.get("manifest", {}).get("config", {}).get("gate")
    return dict(gate) if isinstance(gate, Mapping) and gate else None


def _check_record(outcome: Any) -> dict[str, Any]:
    return {"name": outcome.name, "kind": outcome.kind, "status": outcome.status, "message": outcome.message,
            "metric": outcome.metric, "op": outcome.op, "threshold": encode_number(outcome.threshold),
            "value": encode_number(outcome.value)}


def evaluate_verdict(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None, *,
                     now: str | None = None) -> dict[str, Any] | None:
    """The verdict record for ``results`` under the policy it carries; None when it carries none.

    Pure: reads the results (and ``run_dir``'s lock, to tell a dead run from a live one).
    """
    from audit.gate import evaluate_policy, parse_policy

    data = run_policy(results)
    if data is None:
        return None
    report = evaluate_policy(results, parse_policy(data), run_dir=run_dir)
    stamp = now if now is not None else dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"status": _BY_EXIT[report.exit_code], "exit_code": report.exit_code, "evaluated_at": stamp,
            "checks": [_check_record(o) for o in report.outcomes]}


def verdict_status(results: Mapping[str, Any]) -> VerdictStatus:
    """``pass``, ``fail``, ``error`` from the stored verdict; ``not_gated`` without one."""
    record = results.get(VERDICT_KEY)
    if not isinstance(record, Mapping):
        return NOT_GATED
    status = record.get("status")
    return status if status in ("pass", "fail", "error") else NOT_GATED


def failing_checks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks of a verdict record that did not pass (fail, missing, error), values decoded."""
    out = []
    for check in record.get("checks", []):
        if check.get("status") in ("fail", "missing", "error"):
            out.append({**check, "value": decode_number(check.get("value")),
                        "threshold": decode_number(check.get("threshold"))})
    return out
