"""A run's own gate policy: config 'gate:' and `nnaudit run --policy`, the stored verdict, the headline card."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from results_factory import make_results

from audit.config import parse_config
from audit.decide.gate import evaluate_policy
from audit.decide.verdict import evaluate_verdict, failing_checks, verdict_status
from audit.errors import ConfigError
from audit.policy import parse_policy, read_policy_file
from audit.results import validate_results
from reports import headline

POLICY = {"rules": ["performance.accuracy >= 0.5", "imbalance.balanced_accuracy >= 0.99"]}
MINIMAL = {"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"}}


def gated(results: dict[str, Any], policy: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(results)
    data["manifest"]["config"]["gate"] = policy if policy is not None else POLICY
    return data


# -- config ---------------------------------------------------------------------------------


def test_config_gate_block_is_validated_with_the_key_named() -> None:
    assert parse_config({**MINIMAL, "gate": POLICY}).gate == POLICY
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "gate": {"rules": ["performance.accuracy >> 0.9"]}})
    assert err.value.key == "gate.rules[0]"
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "gate": {"rule": ["performance.accuracy >= 0.9"]}})
    assert err.value.key == "gate.rule" and "did you mean 'rules'" in err.value.message


def test_policy_file_is_read_and_validated(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text(yaml.safe_dump(POLICY))
    assert read_policy_file(good) == POLICY
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [performance.accuracy >= high]\n")
    with pytest.raises(ConfigError) as err:
        read_policy_file(bad)
    assert err.value.key == f"--policy {bad}.rules[0]"
    with pytest.raises(ConfigError, match="no gate policy file"):
        read_policy_file(tmp_path / "missing.yaml")


# -- verdict --------------------------------------------------------------------------------


def test_verdict_equals_the_gate_on_the_same_policy() -> None:
    data = gated(make_results(with_error=False))
    record = evaluate_verdict(data, now="2025-01-01T00:00:00+00:00")
    assert record is not None
    report = evaluate_policy(data, parse_policy(POLICY))
    assert record["exit_code"] == report.exit_code == 1 and record["status"] == "fail"
    assert [c["name"] for c in record["checks"]] == [c.name for c in report.checks]
    failing = failing_checks(record)
    assert [c["metric"] for c in failing] == ["imbalance.balanced_accuracy"]
    validate_results({**data, "verdict": record})  # the schema takes it
    assert verdict_status({**data, "verdict": record}) == "fail"
    assert verdict_status(data) == "not_gated"


def test_verdict_without_policy_is_not_gated() -> None:
    data = make_results(with_error=False)
    assert evaluate_verdict(data) is None
    view = headline.verdict_view(data)
    assert view["status"] == "not_gated" and view["label"] == "NOT GATED" and view["failing"] == []


def test_verdict_of_an_errored_section_cannot_decide() -> None:
    data = gated(make_results(), {"rules": ["performance.accuracy >= 0.5"]})  # the factory's fairness errored
    view = headline.verdict_view(data)
    assert view["status"] == "error" and view["label"] == "CANNOT DECIDE"
    assert [c["name"] for c in view["failing"]] == ["section fairness"]


def test_verdict_of_an_interrupted_run_cannot_decide() -> None:
    data = gated(make_results(with_error=False), {"rules": ["performance.accuracy >= 0.5"]})
    data["manifest"]["status"] = "interrupted"
    view = headline.verdict_view(data)
    assert view["status"] == "error"
    assert any(c["kind"] == "run" and "interrupted" in c["message"] for c in view["failing"])


def test_infinite_value_round_trips_in_the_stored_verdict() -> None:
    data = gated(make_results(with_error=False), {"rules": ["robustness.median_min_eps >= 0.1"]})
    data["sections"]["robustness"]["metrics"]["robustness.median_min_eps"] = "Infinity"
    record = evaluate_verdict(data)
    assert record is not None and record["status"] == "pass"
    stored = json.loads(json.dumps(record, allow_nan=False))
    assert stored["checks"][0]["value"] == "Infinity"
    assert headline.verdict_view({**data, "verdict": stored})["checks"][0]["value_text"] == "∞"


# -- headline -------------------------------------------------------------------------------


def _disparities(rows: list[list[Any]]) -> dict[str, Any]:
    data = make_results(with_error=False)
    data["sections"]["fairness"] = {
        "name": "fairness", "plugin": "fairness", "status": "ok", "duration_s": 0.1, "params": {}, "metrics": {},
        "findings": [], "figures": [], "artifacts": {}, "notes": [],
        "tables": [{"name": "disparities", "title": "Disparities",
                    "columns": ["grouping", "metric", "value", "ci_low", "ci_high", "enough_rows", "tolerance",
                                "flagged"], "rows": rows}]}
    return data


def test_worst_disparity_is_the_one_furthest_past_its_tolerance() -> None:
    data = _disparities([
        ["sex", "demographic_parity_difference", 0.08, 0.02, 0.12, 0.08, 0.1, False],   # 0.8 of tolerance
        ["sex", "demographic_parity_ratio", 0.75, 0.6, 0.9, 0.75, 0.8, False],          # 1.25
        ["race", "equalized_odds_difference", 0.3, 0.1, 0.4, 0.11, 0.1, False],         # 1.1 on enough rows
        ["race", "accuracy_ratio", 0.5, 0.4, 0.6, None, None, False],                    # no tolerance: ignored
    ])
    worst = headline.worst_disparity(data)
    assert worst is not None
    assert (worst["grouping"], worst["metric"], worst["text"], worst["interval_text"]) == \
        ("sex", "demographic_parity_ratio", "0.750", "[0.600, 0.900]")
    flagged = _disparities([["sex", "demographic_parity_ratio", 0.75, 0.6, 0.9, 0.75, 0.8, False],
                            ["race", "equalized_odds_difference", 0.11, 0.1, 0.4, 0.11, 0.1, True]])
    assert headline.worst_disparity(flagged)["metric"] == "equalized_odds_difference"  # type: ignore[index]


def test_headline_reads_the_metrics_it_names() -> None:
    data = make_results(with_error=False)
    metrics = data["sections"]["robustness"]["metrics"]
    metrics.update({"robustness.worst_case.linf.eps=0.1.robust_accuracy": 0.41234,
                    "robustness.worst_case.l2.eps=0.5.robust_accuracy": 0.2, "robustness.reliable": 0.0})
    data["sections"]["robustness"]["findings"].append(
        {"severity": "high", "message": "numbers NOT reliable: likely masked", "code": "robustness.reliable"})
    view = headline.headline_view(data)
    assert [(r["norm"], r["eps"], r["text"]) for r in view["robustness"]] == [("linf", "0.1", "0.412"),
                                                                             ("l2", "0.5", "0.200")]
    assert view["reliability"] == {"reliable": False, "text": "NOT reliable",
                                   "reason": "numbers NOT reliable: likely masked"}
    assert view["cards"][0]["label"] == "Clean accuracy"
    assert view["cards"][0]["value"] == data["sections"]["performance"]["metrics"]["performance.accuracy"]
    assert sum(view["finding_counts"].values()) == sum(len(s["findings"]) for s in data["sections"].values())


def test_most_faithful_lists_tied_methods() -> None:
    data = make_results(with_error=False)
    data["sections"]["explanations"] = {
        "name": "explanations", "plugin": "explanations", "status": "ok", "duration_s": 0.1, "params": {},
        "metrics": {"explanations.ig.faithfulness_rank": 1, "explanations.lime.faithfulness_rank": 3,
                    "explanations.saliency.faithfulness_rank": 1, "explanations.ig.deletion_auc": 0.3},
        "findings": [], "figures": [], "artifacts": {}, "notes": [], "tables": []}
    faithful = headline.most_faithful(data)
    assert faithful is not None
    assert faithful["methods"] == ["ig", "saliency"] and faithful["tied"]
    assert faithful["deletion_auc_text"] == "0.300"


# -- end to end: the runner stores it, the CLI prints it, the gate reuses it -------------------


def test_run_with_policy_stores_the_verdict_and_gate_reuses_it(tmp_path: Path, digits_cnn: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from audit.cli import main
    from audit.results import load_results

    weights = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), weights)
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
        "data": {"source": "digits", "limit": 60}, "device": "cpu", "sections": {"performance": {}},
        "gate": {"rules": ["performance.accuracy >= 0.01"]}}))
    policy = tmp_path / "strict.yaml"
    policy.write_text(yaml.safe_dump({"rules": ["performance.accuracy >= 1.01"]}))

    assert main(["run", str(config), "--out", str(tmp_path / "a"), "--no-report"]) == 0
    stored = load_results(tmp_path / "a")
    assert stored["verdict"]["status"] == "pass" and stored["verdict"]["exit_code"] == 0
    assert "verdict: PASS" in capsys.readouterr().out
    assert main(["gate", str(tmp_path / "a")]) == 0  # the run's own policy

    assert main(["run", str(config), "--out", str(tmp_path / "b"), "--policy", str(policy)]) == 0
    stored = load_results(tmp_path / "b")
    assert stored["manifest"]["config"]["gate"] == {"rules": ["performance.accuracy >= 1.01"]}
    assert stored["verdict"]["status"] == "fail"
    assert re.search(r"verdict: FAIL: \d+ of \d+ checks passed \(performance\.accuracy = ", capsys.readouterr().out)
    assert main(["gate", str(tmp_path / "b")]) == 1
    html = (tmp_path / "b" / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="headline"') < html.index('id="key-findings"')
    assert 'id="verdict-label">FAIL<' in html


def test_gate_without_policy_on_an_ungated_run_says_what_to_pass(tmp_path: Path) -> None:
    from results_factory import write_run

    from audit.cli_decide import run_gate

    run = write_run(tmp_path, "plain")
    with pytest.raises(ConfigError, match="carries no gate policy"):
        run_gate(run, None)


def test_an_unreadable_carried_policy_still_renders() -> None:
    from reports.html import render_html

    data = gated(make_results(with_error=False), {"rules": ["performance.accuracy >> 1"]})
    view = headline.verdict_view(data)
    assert view["status"] == "error" and "policy the run carries is invalid" in view["failing"][0]["message"]
    assert 'id="verdict-label">CANNOT DECIDE<' in render_html(data)
