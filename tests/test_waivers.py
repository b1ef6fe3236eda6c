"""Waivers in the gate policy (a fixed clock), ungated high findings and ``nnaudit gate --strict``, shown in every
renderer: the terminal table, JUnit XML (parsed), Markdown, report.html and the dashboard."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from results_factory import make_results, write_run

from audit.cli_decide import check_new_run_waivers, run_gate, verdict_summary
from audit.decide.checks import EXIT_ERROR, EXIT_FAIL, EXIT_PASS
from audit.decide.gate import evaluate_policy
from audit.decide.verdict import evaluate_verdict, verdict_record
from audit.decide.waive import STRICT_NAME
from audit.errors import ConfigError
from audit.policy import parse_policy
from audit.results import validate_results
from reports.ci import format_gate
from reports.text import escape_markdown

RULE = "performance.accuracy >= 0.95"  # the toy run's accuracy is 0.9: this rule fails
UNTIL = "2027-03-31"
WAIVER = {"check": RULE, "reason": "retraining planned (TICKET-7)", "by": "alice", "until": UNTIL}
LAST_DAY, DAY_AFTER = dt.date(2027, 3, 31), dt.date(2027, 4, 1)
HIGH_FINDING = "robust accuracy collapses at eps=0.2"  # the toy run's one high finding


def _results() -> dict[str, Any]:
    return make_results(with_error=False)


def _policy(**extra: Any) -> dict[str, Any]:
    return {"rules": [RULE], **extra}


# -- parsing: every mistake names its key ------------------------------------------------------------------


@pytest.mark.parametrize(("waiver", "key", "fragment"), [
    ({k: v for k, v in WAIVER.items() if k != "reason"}, "waivers[0].reason", "a waiver needs 'reason'"),
    ({**WAIVER, "by": " "}, "waivers[0].by", "a waiver needs 'by'"),
    ({k: v for k, v in WAIVER.items() if k != "until"}, "waivers[0].until", "waivers expire"),
    ({**WAIVER, "until": "31/03/2027"}, "waivers[0].until", "must be a date YYYY-MM-DD"),
    ({**WAIVER, "until": "2027-02-30"}, "waivers[0].until", "must be a date YYYY-MM-DD"),
    ({k: v for k, v in WAIVER.items() if k != "check"}, "waivers[0]", "a waiver names what it waives"),
    ({**WAIVER, "finding": {"text": "x"}}, "waivers[0]", "it names both"),
    ({**{k: v for k, v in WAIVER.items() if k != "check"}, "finding": {}}, "waivers[0].finding", "'finding' needs"),
    ({**WAIVER, "reasons": "x"}, "waivers[0].reasons", "did you mean 'reason'"),
    ("waive it", "waivers[0]", "a waiver is a mapping"),
])
def test_bad_waivers_name_the_key(waiver: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(_policy(waivers=[waiver]))
    assert err.value.key == key and fragment in err.value.message


def test_waivers_from_yaml_dates_and_in_a_runs_config() -> None:
    """YAML reads ``until: 2027-03-31`` as a date; the run's config keeps it as text (results.json is JSON)."""
    from audit.config import parse_config

    data = yaml.safe_load(f"rules: ['{RULE}']\nwaivers:\n  - {{check: '{RULE}', reason: r, by: b, until: {UNTIL}}}\n")
    assert isinstance(data["waivers"][0]["until"], dt.date)
    assert parse_policy(data).waivers[0].until == LAST_DAY
    config = parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"}, "gate": data})
    assert config.gate is not None and config.gate["waivers"][0]["until"] == UNTIL
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"},
                      "gate": _policy(waivers=[{**WAIVER, "until": "soon"}])})
    assert err.value.key == "gate.waivers[0].until"


def test_a_new_run_refuses_an_expired_waiver() -> None:
    gate = _policy(waivers=[WAIVER])
    check_new_run_waivers(gate, "gate", today=LAST_DAY)  # still valid on its last day
    with pytest.raises(ConfigError) as err:
        check_new_run_waivers(gate, "gate", today=DAY_AFTER)
    assert err.value.key == "gate.waivers[0].until"
    assert f"expired on {UNTIL}; a new run cannot carry an expired waiver" in err.value.message


def test_nnaudit_run_refuses_an_expired_waiver_before_running(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}},
                                      "data": {"source": "digits", "limit": 20}, "device": "cpu",
                                      "sections": {"performance": {}},
                                      "gate": _policy(waivers=[{**WAIVER, "until": "2020-01-31"}])}))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "gate.waivers[0].until" in err and "expired on 2020-01-31" in err
    assert not (tmp_path / "run").exists()


# -- a waived check passes the gate until its expiry (a fixed clock) ----------------------------------------


def test_waived_check_passes_until_its_last_day_then_fails() -> None:
    results, policy = _results(), parse_policy(_policy(waivers=[WAIVER]))
    assert evaluate_policy(results, parse_policy(_policy())).exit_code == EXIT_FAIL  # without the waiver

    waived = evaluate_policy(results, policy, today=LAST_DAY)
    assert waived.exit_code == EXIT_PASS and waived.verdict == "PASSED"
    check = next(c for c in waived.checks if c.name == RULE)
    assert check.status == "waived" and not check.failed
    assert check.waiver == WAIVER
    assert check.message.endswith(f"; WAIVED by alice until {UNTIL}: retraining planned (TICKET-7)")
    assert [w["state"] for w in waived.waivers] == ["active"]

    expired = evaluate_policy(results, policy, today=DAY_AFTER)
    assert expired.exit_code == EXIT_FAIL
    check = next(c for c in expired.checks if c.name == RULE)
    assert check.status == "fail"
    assert check.message.endswith(f"; its waiver (by alice: retraining planned (TICKET-7)) expired on {UNTIL}")
    assert [(w["state"], w["message"]) for w in expired.waivers] == [
        ("expired", f"expired on {UNTIL}: the check '{RULE}' fails")]
    assert "gate FAILED (exit 1)" in format_gate(expired) and f"expired on {UNTIL}" in format_gate(expired)


def test_a_waiver_on_the_metric_key_and_never_on_an_error() -> None:
    results = _results()
    by_metric = evaluate_policy(results, parse_policy(_policy(waivers=[{**WAIVER, "check": "performance.accuracy"}])),
                                today=LAST_DAY)
    assert by_metric.exit_code == EXIT_PASS and by_metric.count("waived") == 1
    missing = parse_policy({"rules": ["performance.nope >= 1"],
                            "waivers": [{**WAIVER, "check": "performance.nope >= 1"}]})
    decision = evaluate_policy(results, missing, today=LAST_DAY)
    assert decision.exit_code == EXIT_ERROR  # a waiver does not make a missing metric judgeable
    assert decision.waivers[0]["state"] == "unused"


def test_stale_and_unused_waivers_are_reported_and_do_not_fail() -> None:
    policy = parse_policy({"rules": [RULE, "imbalance.ece <= 0.1"], "waivers": [
        WAIVER, {**WAIVER, "check": "performance.acuracy >= 0.95"}, {**WAIVER, "check": "imbalance.ece <= 0.1"},
        {**{k: v for k, v in WAIVER.items() if k != "check"}, "finding": {"text": "no such finding"}}]})
    decision = evaluate_policy(_results(), policy, today=LAST_DAY)
    assert decision.exit_code == EXIT_PASS
    states = [(w["state"], w["message"]) for w in decision.waivers]
    assert states == [
        ("active", f"waives the failed check '{RULE}'"),
        ("stale", f"matches no check of the policy (did you mean '{RULE}'?): remove it or fix its name"),
        ("unused", "matches 'imbalance.ece <= 0.1', which did not fail: the waiver is not needed"),
        ("stale", "matches no finding of the run: remove it or fix its metric/text")]
    text = format_gate(decision)
    assert "waiver: STALE waiver of check 'performance.acuracy >= 0.95' (by alice until 2027-03-31" in text


# -- findings: waived, gated, ungated, --strict --------------------------------------------------------------


def test_a_finding_waiver_keeps_the_finding_out_of_the_limit_and_the_ungated_list() -> None:
    results = _results()
    limit = {"rules": [], "max_findings": {"high": 0}}
    assert evaluate_policy(results, parse_policy(limit)).exit_code == EXIT_FAIL
    finding_waiver = {"finding": {"metric": "robustness.pgd.linf.eps=0.2.robust_accuracy", "text": "COLLAPSES"},
                      "reason": "attack budget beyond the threat model", "by": "bob", "until": UNTIL}
    decision = evaluate_policy(results, parse_policy({**limit, "waivers": [finding_waiver]}), today=LAST_DAY)
    assert decision.exit_code == EXIT_PASS
    check = next(c for c in decision.checks if c.kind == "findings")
    assert check.status == "waived" and check.waiver == finding_waiver
    assert "1 waived, 0 counted; WAIVED by bob" in check.message
    assert decision.waivers[0]["state"] == "active" and decision.waivers[0]["matched"] == [HIGH_FINDING]
    assert evaluate_policy(results, parse_policy({**limit, "waivers": [finding_waiver]}),
                           today=DAY_AFTER).exit_code == EXIT_FAIL
    # without any limit the waived finding is not ungated; --strict passes
    strict = evaluate_policy(results, parse_policy({"rules": ["performance.accuracy >= 0.5"],
                                                    "waivers": [finding_waiver]}), today=LAST_DAY, strict=True)
    assert strict.ungated == () and strict.exit_code == EXIT_PASS


@pytest.mark.parametrize(("policy", "ungated"), [
    ({"rules": ["performance.accuracy >= 0.5"]}, 1),
    ({"rules": ["performance.accuracy >= 0.5"], "max_findings": {"critical": 0}}, 1),  # a critical limit: not high
    ({"rules": ["performance.accuracy >= 0.5"], "max_findings": {"medium": 9}}, 0),  # counts high and worse
    ({"rules": ["robustness.pgd.linf.eps=0.2.robust_accuracy >= 0.2"]}, 0),  # a rule names its metric
])
def test_ungated_findings_and_strict(policy: dict[str, Any], ungated: int) -> None:
    results = _results()
    plain = evaluate_policy(results, parse_policy(policy))
    assert len(plain.ungated) == ungated and plain.exit_code == EXIT_PASS
    strict = evaluate_policy(results, parse_policy(policy), strict=True)
    assert strict.exit_code == (EXIT_FAIL if ungated else EXIT_PASS)
    check = next(c for c in strict.checks if c.name == STRICT_NAME)
    if ungated:
        assert plain.ungated[0]["message"] == HIGH_FINDING
        assert format_gate(plain).rstrip().endswith("; 1 high finding is not gated")
        assert check.message == f"1 high finding is not gated (--strict): [high] robustness: {HIGH_FINDING}"
    else:
        assert "not gated" not in format_gate(plain)


def test_strict_honours_a_waiver_and_the_cli_flag(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", _results())
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": ["performance.accuracy >= 0.5"]}))
    assert run_gate(run, policy, stream=io.StringIO()) == EXIT_PASS
    assert run_gate(run, policy, stream=io.StringIO(), strict=True) == EXIT_FAIL
    policy.write_text(yaml.safe_dump({"rules": ["performance.accuracy >= 0.5"], "waivers": [
        {"finding": {"text": "collapses"}, "reason": "known", "by": "carol", "until": UNTIL}]}))
    assert run_gate(run, policy, stream=io.StringIO(), strict=True, today=LAST_DAY) == EXIT_PASS
    assert run_gate(run, policy, stream=io.StringIO(), strict=True, today=DAY_AFTER) == EXIT_FAIL


# -- WAIVED in every renderer ------------------------------------------------------------------------------


def test_waived_in_terminal_junit_and_markdown(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", _results())
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy(waivers=[WAIVER, {**WAIVER, "check": "gone.metric >= 1"}])))
    stream = io.StringIO()
    code = run_gate(run, policy, junit=tmp_path / "junit.xml", summary=tmp_path / "summary.md", stream=stream,
                    today=LAST_DAY)
    assert code == EXIT_PASS
    text = stream.getvalue()
    row = next(line for line in text.splitlines() if line.startswith("WAIVED"))
    assert RULE in row and "0.9" in row and f"WAIVED by alice until {UNTIL}: retraining planned (TICKET-7)" in row
    assert "waiver: ACTIVE waiver of check" in text and "waiver: STALE waiver of check 'gone.metric >= 1'" in text
    assert text.rstrip().endswith("gate PASSED (exit 0): 5 pass, 1 skipped, 1 waived; 1 high finding is not gated")

    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("errors") == "0"
    case = next(c for c in suite.iter("testcase") if c.get("name") == RULE)
    assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {"waiver.reason": "retraining planned (TICKET-7)", "waiver.by": "alice", "waiver.until": UNTIL}
    out = case.find("system-out")
    assert out is not None and (out.text or "").startswith(f"WAIVED by alice until {UNTIL}: retraining planned")
    suite_props = [(p.get("name"), p.get("value")) for p in suite.find("properties") or []]
    assert ("ungated_findings", "1 high finding is not gated") in suite_props
    assert any(n == "waiver" and (v or "").startswith("STALE waiver of check 'gone.metric >= 1'")
               for n, v in suite_props)

    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| 🟡 WAIVED |" in md and "**1 high finding is not gated**" in md
    assert "### Waivers" in md and f"| **ACTIVE** | `{RULE}` | alice | {escape_markdown(UNTIL)} |" in md
    assert "| **STALE** |" in md


def test_the_stored_verdict_keeps_the_waivers_and_validates(tmp_path: Path) -> None:
    results = _results()
    results["manifest"]["config"]["gate"] = _policy(waivers=[WAIVER])
    record = evaluate_verdict(results, today=LAST_DAY, now="2027-03-31T12:00:00+00:00")
    assert record is not None and record["status"] == "pass"
    check = next(c for c in record["checks"] if c["name"] == RULE)
    assert check["status"] == "waived" and check["waiver"] == WAIVER
    assert [(w["check"], w["state"], w["by"], w["until"]) for w in record["waivers"]] == [
        (RULE, "active", "alice", UNTIL)]
    assert record["ungated_findings"] == {"high": 1, "critical": 0}
    assert [f["message"] for f in record["ungated"]] == [HIGH_FINDING]
    validate_results({**results, "verdict": record})
    json.dumps(record, allow_nan=False)
    assert verdict_summary(record).startswith("PASS: 5 of 7 checks passed, 1 WAIVED (performance.accuracy = 0.9")
    assert verdict_summary(record).endswith("; 1 high finding is not gated")
    later = evaluate_verdict(results, today=DAY_AFTER)
    assert later is not None and later["status"] == "fail" and later["waivers"][0]["state"] == "expired"
    validate_results({**results, "verdict": later})
    old = copy.deepcopy(record)  # a 2.2 record: no waivers, no ungated findings
    for key in ("waivers", "ungated_findings", "ungated"):
        old.pop(key)
    validate_results({**results, "schema_version": "2.2", "verdict": old})
    assert verdict_record(evaluate_policy(results, parse_policy(_policy())))["waivers"] == []


def _waived_run(root: Path) -> Path:
    """A toy run carrying a policy with a waiver that holds until 2999 (the report and dashboard use today)."""
    data = _results()
    data["manifest"]["config"]["gate"] = _policy(waivers=[{**WAIVER, "until": "2999-12-31"},
                                                          {**WAIVER, "check": "gone.metric >= 1"}])
    return write_run(root, "waived", data)


def test_report_verdict_card_shows_waived_and_ungated(tmp_path: Path) -> None:
    from reports.html import write_report

    html = write_report(_waived_run(tmp_path)).read_text(encoding="utf-8")
    card = html[html.index('id="verdict"'):html.index('id="headline"')]
    assert "5 of 7 checks passed, 1 waived" in card
    assert '<span class="ungated" id="verdict-ungated">1 high finding is not gated</span>' in card
    assert "WAIVED</span>" in card and "waived by alice until 2999-12-31: retraining planned (TICKET-7)" in card
    assert "stale waiver" in card and "gone.metric &gt;= 1" in card
    assert HIGH_FINDING in card[card.index("ungated-list"):]


def test_dashboard_verdict_shows_waived_and_ungated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest
    from test_app import APP, TIMEOUT, plain

    _waived_run(tmp_path / "runs")
    monkeypatch.setattr(sys, "argv", ["app.py", str(tmp_path / "runs")])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [plain(w.value) for w in at.warning][:1] == ["Verdict: PASS · 1 WAIVED · 1 high finding is not gated"]
    assert not at.success
    waived = next(f.value for f in at.dataframe if "by" in f.value.columns)
    assert list(waived["status"]) == ["WAIVED"] and list(waived["by"]) == ["alice"]
    assert list(waived["until"]) == ["2999-12-31"] and list(waived["reason"]) == ["retraining planned (TICKET-7)"]
    captions = [plain(c.value) for c in at.caption]
    assert any(c.startswith("STALE waiver of gone.metric >= 1") for c in captions), captions
    assert any(c.startswith("1 high finding is not gated") and HIGH_FINDING in c for c in captions), captions


# -- the demo: PASS with ungated high findings, --strict fails ----------------------------------------------


def test_demo_verdict_names_its_ungated_findings_and_strict_fails(demo_dir: Path) -> None:
    run = demo_dir / "digits-cnn"
    stream = io.StringIO()
    assert run_gate(run, None, stream=stream) == EXIT_PASS
    last = stream.getvalue().rstrip().splitlines()[-1]
    assert last.startswith("gate PASSED (exit 0)") and last.endswith("high findings are not gated"), last
    strict = io.StringIO()
    assert run_gate(run, None, stream=strict, strict=True) == EXIT_FAIL
    assert any(line.startswith(f"FAIL    {STRICT_NAME}") or (line.startswith("FAIL") and STRICT_NAME in line)
               for line in strict.getvalue().splitlines())
    html = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="verdict-ungated"' in html and "high findings are not gated" in html
