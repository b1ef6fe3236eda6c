"""audit.decide: one Check and one Decision for the gate, the comparison and the stored run verdict."""

from __future__ import annotations

import json

import pytest
from results_factory import make_results

from audit.decide.checks import Check, Decision
from audit.decide.compare import compare_results
from audit.decide.gate import evaluate_policy
from audit.decide.verdict import evaluate_verdict, verdict_record
from audit.policy import parse_compare_policy, parse_policy
from reports.ci import check_table, decision_line


def _checks(*statuses: str) -> tuple[Check, ...]:
    return tuple(Check(f"check {i}", "metric", s, f"message {i}") for i, s in enumerate(statuses))  # type: ignore[arg-type]


@pytest.mark.parametrize(("statuses", "code", "gate_word", "compare_word"), [
    ((), 0, "PASSED", "PASSED"),
    (("pass", "skipped"), 0, "PASSED", "PASSED"),
    (("pass", "fail"), 1, "FAILED", "REGRESSION"),
    (("fail", "missing"), 2, "ERROR", "CANNOT JUDGE"),  # 2 wins over 1
    (("pass", "error", "fail"), 2, "ERROR", "CANNOT JUDGE"),
])
def test_exit_code_and_verdict_words(statuses: tuple[str, ...], code: int, gate_word: str, compare_word: str) -> None:
    gate, compare = Decision("gate", _checks(*statuses)), Decision("compare", _checks(*statuses))
    assert gate.exit_code == compare.exit_code == code
    assert (gate.verdict, compare.verdict) == (gate_word, compare_word)
    assert gate.status == ("pass", "fail", "error")[code]
    assert gate.passed is (code == 0)
    assert gate.failing == tuple(c for c in gate.checks if c.status in ("fail", "missing", "error"))


def test_counts_follow_status_order_and_leave_out_zeros() -> None:
    decision = Decision("gate", _checks("skipped", "fail", "pass", "pass", "error"))
    assert list(decision.counts.items()) == [("pass", 2), ("fail", 1), ("error", 1), ("skipped", 1)]
    assert decision_line(decision) == "gate ERROR (exit 2): 2 pass, 1 fail, 1 error, 1 skipped"
    assert decision_line(Decision("compare", ())) == "compare PASSED (exit 0): no checks"


def test_gate_comparison_and_stored_verdict_share_checks() -> None:
    """The comparison's rules on the candidate are the gate's checks (kind 'rule'), and the stored verdict holds
    the gate decision's checks field by field."""
    policy = {"rules": ["performance.accuracy >= 0.5", "imbalance.balanced_accuracy >= 0.99"]}
    data = make_results(with_error=False)
    gate = evaluate_policy(data, parse_policy(policy))
    comparison = compare_results(data, data, policy=parse_compare_policy(policy))
    rules = [c for c in comparison.checks if c.kind == "rule"]
    assert [(c.name, c.status, c.message, c.value) for c in rules] == \
        [(c.name, c.status, c.message, c.value) for c in gate.checks if c.kind == "metric"]
    data["manifest"]["config"]["gate"] = policy
    record = evaluate_verdict(data, now="2025-01-01T00:00:00+00:00")
    assert record == verdict_record(evaluate_policy(data, parse_policy(policy)), now="2025-01-01T00:00:00+00:00")
    assert record is not None and record["status"] == "fail" and record["exit_code"] == 1
    # the terminal table of both is the one table: RESULT, CHECK, VALUE, DETAIL
    assert check_table(gate)[0].split() == check_table(comparison.decision)[0].split() == \
        ["RESULT", "CHECK", "VALUE", "DETAIL"]


def test_comparison_json_keeps_its_shape() -> None:
    """``nnaudit compare --json``: the decision's checks stand where they always stood, nothing else of it leaks."""
    data = make_results(with_error=False)
    out = compare_results(data, data, policy=parse_compare_policy({"rules": ["performance.accuracy delta >= 0"]}))
    payload = json.loads(json.dumps(out.to_dict(), allow_nan=False))
    assert list(payload) == ["exit_code", "verdict", "base", "candidate", "deltas", "pairing", "checks", "alpha",
                             "resamples", "confidence", "rule_metrics", "n_hypotheses", "differences"]
    assert payload["verdict"] == "PASSED" and payload["exit_code"] == 0
    assert [c["kind"] for c in payload["checks"]] == ["run", "run", "delta", "significance"]
    assert set(payload["checks"][0]) == {"name", "kind", "status", "message", "metric", "op", "threshold", "value"}
