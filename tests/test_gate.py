"""The gate (audit.decide.gate, audit.policy): policy parsing, rule evaluation, exit codes and the run_gate entry
point (audit.cli)."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from results_factory import make_results, write_run

from audit import policy as policies
from audit.cli_decide import run_gate
from audit.decide import gate
from audit.decide.checks import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, Decision
from audit.decide.gate import evaluate_policy
from audit.errors import ConfigError, ResultsError
from audit.policy import load_policy, parse_policy
from audit.results import RESULTS_FILE


def _gate(rules: list[Any], data: dict[str, Any] | None = None, **policy: Any) -> Decision:
    results = data if data is not None else make_results(with_error=False)
    return evaluate_policy(results, parse_policy({"rules": rules, **policy}))


def _status(rule: Any, data: dict[str, Any] | None = None) -> str:
    return _gate([rule], data).checks[0].status


# -- operators and rule syntax ----------------------------------------------------------------


@pytest.mark.parametrize(("op", "threshold", "expected"), [
    (">=", 0.9, "pass"), (">=", 0.91, "fail"),
    (">", 0.89, "pass"), (">", 0.9, "fail"),
    ("<=", 0.9, "pass"), ("<=", 0.89, "fail"),
    ("<", 0.91, "pass"), ("<", 0.9, "fail"),
    ("==", 0.9, "pass"), ("==", 0.8, "fail"),
    ("!=", 0.8, "pass"), ("!=", 0.9, "fail"),
])
def test_operators(op: str, threshold: float, expected: str) -> None:
    assert _status(f"performance.accuracy {op} {threshold}") == expected
    assert _status({"metric": "performance.accuracy", "op": op, "value": threshold}) == expected


def test_equality_tolerates_float_noise() -> None:
    data = make_results(with_error=False)
    data["sections"]["performance"]["metrics"]["performance.accuracy"] = 0.1 + 0.2
    assert _status("performance.accuracy == 0.3", data) == "pass"


@pytest.mark.parametrize(("text", "metric", "op", "threshold"), [
    ("performance.accuracy >= 0.9", "performance.accuracy", ">=", 0.9),
    ("performance.accuracy>=0.9", "performance.accuracy", ">=", 0.9),
    ("  imbalance.ece <  .1 ", "imbalance.ece", "<", 0.1),
    ("robustness.pgd.linf.eps=0.1.robust_accuracy >= 0.5", "robustness.pgd.linf.eps=0.1.robust_accuracy", ">=", 0.5),
    ("robustness.pgd.linf.eps=0.1.robust_accuracy>=5e-1", "robustness.pgd.linf.eps=0.1.robust_accuracy", ">=", 0.5),
    ("performance.n_samples != -3", "performance.n_samples", "!=", -3.0),
])
def test_parse_rule_string(text: str, metric: str, op: str, threshold: float) -> None:
    assert policies.parse_rule(text) == policies.Rule(metric, op, threshold)


@pytest.mark.parametrize("text", ["performance.accuracy => 0.9", "performance.accuracy = 0.9",
                                  "performance.accuracy >= high", "performance.accuracy >= 0.9 extra",
                                  ">= 0.9", "performance.accuracy"])
def test_bad_rule_syntax(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy({"rules": ["performance.accuracy >= 0.5", text]})
    assert info.value.key == "rules[1]"
    assert info.value.message == policies.RULE_SYNTAX.format(text=text)


# -- exit codes -------------------------------------------------------------------------------


def test_all_pass_exits_0() -> None:
    report = _gate(["performance.accuracy >= 0.9", "imbalance.balanced_accuracy > 0.8"])
    assert report.exit_code == EXIT_PASS
    assert report.passed and report.verdict == "PASSED"


def test_threshold_failure_exits_1() -> None:
    report = _gate(["performance.accuracy >= 0.95", "imbalance.balanced_accuracy > 0.8"])
    assert report.exit_code == EXIT_FAIL
    failed = [o for o in report.checks if o.status == "fail"]
    assert [(o.metric, o.value, o.threshold) for o in failed] == [("performance.accuracy", 0.9, 0.95)]
    assert failed[0].message == "performance.accuracy = 0.9 does not meet >= 0.95"


def test_missing_metric_exits_2_and_suggests() -> None:
    report = _gate(["performance.acuracy >= 0.9"])
    assert report.exit_code == EXIT_ERROR
    outcome = report.checks[0]
    assert outcome.status == "missing"
    assert "'performance.accuracy'" in outcome.message and "did you mean" in outcome.message


def test_null_metric_exits_2() -> None:
    report = _gate(["imbalance.roc_auc_ovr >= 0.5"])
    assert report.exit_code == EXIT_ERROR
    assert report.checks[0].message == gate.NULL_METRIC.format(metric="imbalance.roc_auc_ovr")


def test_section_error_exits_2() -> None:
    report = _gate(["performance.accuracy >= 0.9"], make_results(with_error=True))
    assert report.exit_code == EXIT_ERROR
    sections = {o.name: o.status for o in report.checks if o.kind == "section"}
    assert sections == {"section performance": "pass", "section imbalance": "pass", "section robustness": "pass",
                        "section explain": "pass", "section fairness": "error", "section shap": "skipped"}


def test_error_beats_failure() -> None:
    report = _gate(["performance.accuracy >= 0.99", "nope.metric >= 1"])
    assert {o.status for o in report.checks} >= {"fail", "missing"}
    assert report.exit_code == EXIT_ERROR


def test_fail_on_section_error_false_ignores_errored_sections() -> None:
    data = make_results(with_error=True)
    data["manifest"]["status"] = "failed"
    report = _gate(["performance.accuracy >= 0.9"], data, fail_on_section_error=False)
    assert report.exit_code == EXIT_PASS
    assert [(o.kind, o.status) for o in report.checks] == [("metric", "pass"), ("run", "pass")]
    assert report.checks[1].message == gate.RUN_FAILED.format(reason="1 section(s) failed: fairness")


def test_metric_of_an_errored_section_is_an_error() -> None:
    report = _gate(["fairness.parity_gap <= 0.1"], make_results(with_error=True), fail_on_section_error=False)
    outcome = report.checks[0]
    assert outcome.status == "error"
    assert outcome.message == gate.SECTION_FAILED_METRIC.format(
        metric="fairness.parity_gap", section="fairness",
        error="DataError: sensitive attribute 'group' has a single value")
    assert report.exit_code == EXIT_ERROR


def test_metric_of_a_skipped_section_is_missing() -> None:
    outcome = _gate(["shap.mean_abs >= 0"]).checks[0]
    assert outcome.status == "missing"
    assert outcome.message == gate.SKIPPED_METRIC.format(metric="shap.mean_abs", section="shap")


def test_incomplete_run_exits_2() -> None:
    data = make_results(with_error=False)
    data["manifest"]["status"] = "running"
    report = _gate(["performance.accuracy >= 0.9"], data)
    assert report.exit_code == EXIT_ERROR
    assert [o.message for o in report.checks if o.kind == "run"] == [gate.RUN_INCOMPLETE.format(
        status="running", reason="stored as running; no run directory to check whether it still runs", never_ran="",
        hint="")]


@pytest.mark.parametrize("fail_on_section_error", [True, False])
def test_unfinished_runs_exit_2_whatever_the_policy(tmp_path: Path, fail_on_section_error: bool) -> None:
    """Interrupted or killed (stored as running, its process gone): exit 2 naming the sections that never ran."""
    data = make_results(with_error=False)
    data["manifest"]["config"]["sections"] = {name: {"plugin": name, "enabled": True, "params": {}}
                                              for name in [*data["sections"], "fairness"]}
    data["manifest"].update(status="interrupted", interrupted_by="SIGTERM", current_section="fairness")
    report = _gate(["performance.accuracy >= 0.9"], data, fail_on_section_error=fail_on_section_error)
    assert report.exit_code == EXIT_ERROR
    run = next(o for o in report.checks if o.kind == "run")
    assert run.message == gate.RUN_INCOMPLETE.format(
        status="interrupted", reason="stopped by SIGTERM while 'fairness' ran",
        never_ran="; sections that never ran: fairness", hint="")
    # killed: stored as running, no live process holds the run directory's lock
    data["manifest"]["status"] = "running"
    run_dir = write_run(tmp_path, "killed", data)
    stream = io.StringIO()
    code = run_gate(run_dir, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n"), stream=stream)
    assert code == EXIT_ERROR
    assert ("the run is incomplete, not finished: no process is writing it and it never finished while 'fairness' ran "
            f"(killed or crashed); sections that never ran: fairness; results are partial; finish it with "
            f"`nnaudit run --resume {run_dir}`") in stream.getvalue()


# -- non-finite values ------------------------------------------------------------------------


def _with_metric(name: str, value: Any) -> dict[str, Any]:
    data = make_results(with_error=False)
    data["sections"]["robustness"]["metrics"][name] = value
    return data


MIN_EPS = "robustness.fmn.linf.median_min_eps"


@pytest.mark.parametrize("value", ["Infinity", float("inf")])  # as stored in results.json, and in memory
@pytest.mark.parametrize(("rule", "expected"), [
    (f"{MIN_EPS} >= 0.1", "pass"), (f"{MIN_EPS} > 1000", "pass"), (f"{MIN_EPS} != 0", "pass"),
    (f"{MIN_EPS} <= 0.5", "fail"), (f"{MIN_EPS} < 1000", "fail"), (f"{MIN_EPS} == 0.3", "fail"),
])
def test_infinity_compares_as_infinity(value: Any, rule: str, expected: str) -> None:
    """A robust model (no adversarial example found: median minimal eps infinite) passes '>=', fails '<='."""
    report = _gate([rule], _with_metric(MIN_EPS, value))
    assert report.checks[0].status == expected
    assert report.exit_code == (EXIT_PASS if expected == "pass" else EXIT_FAIL)
    assert report.checks[0].value == float("inf")
    assert "= Infinity " in report.checks[0].message


def test_negative_infinity() -> None:
    data = _with_metric(MIN_EPS, "-Infinity")
    assert _status(f"{MIN_EPS} <= 0", data) == "pass" and _status(f"{MIN_EPS} >= 0", data) == "fail"


@pytest.mark.parametrize("value", [None, float("nan")])  # stored (null) and in-memory NaN
@pytest.mark.parametrize("rule", [f"{MIN_EPS} != 0", f"{MIN_EPS} >= 0", f"{MIN_EPS} <= 1", f"{MIN_EPS} == 0"])
def test_nan_never_passes_and_exits_2(value: Any, rule: str) -> None:
    report = _gate([rule], _with_metric(MIN_EPS, value))
    assert report.exit_code == EXIT_ERROR
    assert report.checks[0].status == "missing"
    assert report.checks[0].message == gate.NULL_METRIC.format(metric=MIN_EPS)


def test_non_finite_metrics_survive_the_round_trip(tmp_path: Path) -> None:
    """SectionResult -> results.json (strict JSON, schema-valid) -> gate: inf stays inf, NaN becomes null."""
    from audit.results import SectionResult, dumps, load_results, validate_results

    section = SectionResult(name="robustness", plugin="robustness")
    section.metric("fmn.linf.median_min_eps", float("inf"))
    section.metric("fmn.linf.mean_min_eps", float("nan"))
    section.metric("fmn.l2.median_min_eps", -float("inf"))
    section.finding("info", "no adversarial example found", metric=MIN_EPS, value=float("inf"))
    section.table("t", "T", ["eps"], [[float("inf")], [float("nan")], [0.5]])
    data = make_results(with_error=False)
    data["sections"]["robustness"] = section.to_dict()
    text = dumps(data)  # allow_nan=False: raises on a bare NaN/inf
    assert '"robustness.fmn.linf.median_min_eps": "Infinity"' in text
    assert '"robustness.fmn.linf.mean_min_eps": null' in text
    run = write_run(tmp_path, "run", json.loads(text))
    loaded = load_results(run)
    validate_results(loaded)
    assert SectionResult.from_dict(loaded["sections"]["robustness"]).to_dict() == loaded["sections"]["robustness"]
    report = evaluate_policy(loaded, parse_policy({"rules": [f"{MIN_EPS} >= 0.1",
                                                             "robustness.fmn.l2.median_min_eps <= 0"]}))
    assert report.exit_code == EXIT_PASS
    nan = evaluate_policy(loaded, parse_policy({"rules": ["robustness.fmn.linf.mean_min_eps != 0"]}))
    assert nan.exit_code == EXIT_ERROR and "robustness.fmn.linf.mean_min_eps" in nan.checks[0].message


def test_newer_schema_names_the_writer(tmp_path: Path) -> None:
    data = make_results(with_error=False)
    data["schema_version"] = "7.1"
    data["manifest"]["nnaudit_version"] = "9.9.0"
    run = write_run(tmp_path, "run", data)
    with pytest.raises(ResultsError) as info:
        run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n"), stream=io.StringIO())
    from audit import __version__
    from audit.results import NEWER_SCHEMA, SCHEMA_VERSION

    assert str(info.value) == NEWER_SCHEMA.format(file=run / RESULTS_FILE, writer="9.9.0", version="7.1",
                                                  ours=__version__, supported=SCHEMA_VERSION)
    assert "Upgrade nnaudit" in str(info.value) and "regex" not in str(info.value)


def test_schema_1_files_still_read(tmp_path: Path) -> None:
    data = make_results(with_error=False)
    data["schema_version"] = "1.0"
    run = write_run(tmp_path, "run", data)
    assert run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n"),
                    stream=io.StringIO()) == EXIT_PASS


@pytest.mark.parametrize(("limits", "code"), [
    ({"critical": 0}, EXIT_PASS),
    ({"high": 1}, EXIT_PASS),
    ({"high": 0}, EXIT_FAIL),  # one high finding
    ({"medium": 1}, EXIT_FAIL),  # medium or worse: one medium + one high
    ({"medium": 2, "critical": 0}, EXIT_PASS),
    ({"info": 3}, EXIT_FAIL),  # four findings in all
])
def test_max_findings(limits: dict[str, int], code: int) -> None:
    report = evaluate_policy(make_results(with_error=False), parse_policy({"max_findings": limits}))
    assert report.exit_code == code
    assert [o.name for o in report.checks if o.kind == "findings"] == [f"max_findings.{s} <= {n}"
                                                                        for s, n in limits.items()]


# -- bad policies -----------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "key", "message"), [
    ({"rules": ["performance.accuracy >= 0.9"], "thresholds": {}}, "thresholds",
     policies.UNKNOWN_POLICY_KEY.format(key="thresholds", hint="")),
    ({"rules": "performance.accuracy >= 0.9"}, "rules", policies.RULES_NOT_LIST),
    ({"rules": [{"metric": "performance.accuracy", "op": ">=", "value": 0.9, "threshold": 1}]}, "rules[0].threshold",
     policies.UNKNOWN_RULE_KEY.format(key="threshold", hint="")),
    ({"rules": [{"metric": "performance.accuracy", "value": 0.9}]}, "rules[0]",
     policies.MISSING_RULE_KEYS.format(missing="op")),
    ({"rules": [{"metric": "performance.accuracy", "op": "=>", "value": 0.9}]}, "rules[0].op",
     policies.BAD_OPERATOR.format(op="=>")),
    ({"rules": [{"metric": "performance.accuracy", "op": ">=", "value": "high"}]}, "rules[0].value",
     policies.BAD_THRESHOLD.format(value="high")),
    ({"rules": [{"metric": "performance.accuracy", "op": ">=", "value": True}]}, "rules[0].value",
     policies.BAD_THRESHOLD.format(value=True)),
    ({"rules": [{"metric": "performance.accuracy", "op": ">=", "value": float("nan")}]}, "rules[0].value",
     policies.BAD_THRESHOLD.format(value=float("nan"))),
    ({"rules": [{"metric": "accuracy", "op": ">=", "value": 0.9}]}, "rules[0].metric",
     policies.BAD_METRIC.format(metric="accuracy")),
    ({"rules": [42]}, "rules[0]", policies.RULE_TYPE.format(kind="int")),
    ({"rules": ["performance.accuracy >= 0.9"], "fail_on_section_error": "yes please"}, "fail_on_section_error",
     policies.BAD_FLAG.format(value="yes please")),
    ({"max_findings": {"severe": 0}}, "max_findings.severe", policies.UNKNOWN_SEVERITY.format(severity="severe")),
    ({"max_findings": {"high": -1}}, "max_findings.high", policies.BAD_COUNT.format(severity="high", value=-1)),
    ({"max_findings": [0]}, "max_findings", policies.MAX_FINDINGS_NOT_MAPPING),
    ({"rules": []}, "rules", policies.POLICY_EMPTY),
    (["performance.accuracy >= 0.9"], "policy", policies.POLICY_NOT_MAPPING.format(kind="list")),
])
def test_bad_policy(policy: Any, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(policy)
    assert info.value.key == key
    assert info.value.message == message
    assert key in str(info.value)


def test_load_policy_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - performance.accuracy >= 0.9\n  - metric: imbalance.balanced_accuracy\n"
                    "    op: \">=\"\n    value: 0.8\nfail_on_section_error: false\nmax_findings: {critical: 0}\n",
                    encoding="utf-8")
    policy = load_policy(path)
    assert policy.rules == (policies.Rule("performance.accuracy", ">=", 0.9),
                            policies.Rule("imbalance.balanced_accuracy", ">=", 0.8))
    assert policy.fail_on_section_error is False
    assert dict(policy.max_findings) == {"critical": 0}


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ("", "rules", "checks nothing"),
    ("rules: [unclosed", "policy", "cannot read the policy"),
    ("- performance.accuracy >= 0.9\n", "policy", "a policy is a YAML mapping"),
])
def test_load_policy_errors(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.key == key and fragment in info.value.message


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no gate policy file"):
        load_policy(tmp_path / "nope.yaml")


# -- run_gate ---------------------------------------------------------------------------------


def _policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_run_gate_writes_outputs(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", make_results(with_error=False))
    policy = _policy_file(tmp_path, "rules:\n  - performance.accuracy >= 0.95\n  - imbalance.ece <= 0.1\n")
    stream = io.StringIO()
    code = run_gate(run, policy, junit=tmp_path / "ci" / "junit.xml", summary=tmp_path / "ci" / "summary.md",
                    stream=stream)
    assert code == EXIT_FAIL
    text = stream.getvalue()
    assert re.search(r"^FAIL +performance\.accuracy >= 0\.95 +0\.9 +performance\.accuracy = 0\.9 does not meet", text,
                     re.MULTILINE)
    assert re.search(r"^PASS +imbalance\.ece <= 0\.1 +0\.07 ", text, re.MULTILINE)
    # the toy run's high robustness finding is named by no rule and counted by no findings limit
    assert text.rstrip().endswith("gate FAILED (exit 1): 6 pass, 1 fail, 1 skipped; 1 high finding is not gated")
    suite = ET.parse(tmp_path / "ci" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    assert "❌ nnaudit gate FAILED" in (tmp_path / "ci" / "summary.md").read_text(encoding="utf-8")


def test_run_gate_passes_and_prints_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path, "run", make_results(with_error=False))
    assert run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n")) == EXIT_PASS
    assert "gate PASSED (exit 0)" in capsys.readouterr().out


def test_run_gate_on_errored_run(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run")
    code = run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.99']\n"), stream=io.StringIO())
    assert code == EXIT_ERROR


def test_run_gate_invalid_results(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run")
    (run / RESULTS_FILE).write_text(json.dumps({"schema_version": "1.0"}), encoding="utf-8")
    with pytest.raises(ResultsError, match="schema"):
        run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n"), stream=io.StringIO())


def test_gate_never_needs_a_model(tmp_path: Path) -> None:
    """The gate reads results only: a config pointing at a model that does not exist is fine."""
    data = make_results(with_error=False)
    data["manifest"]["config"] = {"model": {"factory": "no.such.module:build"}}
    run = write_run(tmp_path, "run", data)
    assert run_gate(run, _policy_file(tmp_path, "rules: ['performance.accuracy >= 0.9']\n"),
                    stream=io.StringIO()) == EXIT_PASS
