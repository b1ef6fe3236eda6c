"""`nnaudit compare`: deltas with directions, paired bootstrap significance, rules on deltas, exit codes,
JUnit and Markdown output (audit/decide/compare.py, audit/decide/stats.py, audit/policy.py, reports/compare.py)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from results_factory import make_results, unfinished_results, write_run

from audit.bootstrap import paired_bootstrap
from audit.cli import main
from audit.decide.compare import DELTA_UNDEFINED, compare_results, compare_run_dirs
from audit.decide.pairing import setup_differences
from audit.decide.stats import holm
from audit.errors import ConfigError
from audit.outcomes import load_all_outcomes, write_outcomes
from audit.policy import ComparePolicy, parse_compare_policy
from audit.results import SectionResult
from reports.compare import compare_to_junit, compare_to_markdown
from reports.text import escape_markdown

ROOT = Path(__file__).resolve().parents[1]
ACC = "performance.accuracy"
ROBUST = "robustness.pgd.linf.eps=0.1.robust_accuracy"
DIRECTIONS = {"performance": {ACC: "higher", "performance.error_rate": "lower", "performance.loss": "lower",
                              "performance.n_samples": None},
              "robustness": {ROBUST: "higher", "robustness.pgd.linf.eps=0.2.robust_accuracy": "higher"}}


def paired_run(root: Path, name: str, correct: np.ndarray, robust: np.ndarray, *, data_sha: str = "cd" * 32,
               title: str = "Toy MLP audit", directions: bool = True, ids: np.ndarray | None = None) -> Path:
    """A factory run whose accuracy and robust accuracy are the means of ``correct`` / ``robust`` (0/1 per
    sample), with those per-sample outcomes saved as the sections save them."""
    data = make_results(title=title, with_error=False)
    data["manifest"]["data"]["sha256"] = data_sha
    data["manifest"]["data"]["n_samples"] = len(correct)
    sections = data["sections"]
    sections["performance"]["metrics"].update({ACC: float(correct.mean()),
                                               "performance.error_rate": float(1 - correct.mean())})
    sections["robustness"]["metrics"][ROBUST] = float(robust.mean())
    if directions:
        for section, declared in DIRECTIONS.items():
            sections[section]["directions"] = {m: d for m, d in declared.items() if m in sections[section]["metrics"]}
    run_dir = write_run(root, name, data)
    for section, values in (("performance", {ACC: correct, "performance.error_rate": 1.0 - correct}),
                            ("robustness", {ROBUST: robust})):
        result = SectionResult.from_dict(sections[section])
        write_outcomes(run_dir, result, data_sha256=data_sha,
                       sample_id=np.arange(len(correct)) if ids is None else ids,
                       values={k: np.asarray(v, dtype=float) for k, v in values.items()})
        sections[section]["artifacts"] = result.artifacts
    (run_dir / "results.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def flip(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[rows] = 1 - out[rows]
    return out


@pytest.fixture
def outcomes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.9).astype(float)
    robust = correct * (rng.random(400) < 0.6)
    return correct, robust


# -- statistics ------------------------------------------------------------------------------------


def _naive_bootstrap(diff: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)])


def test_bootstrap_by_value_counts_equals_resampling_rows() -> None:
    """The multinomial shortcut draws from the same distribution as resampling rows one by one: the
    p-value and interval agree with a plain row-resampling bootstrap within Monte Carlo error."""
    rng = np.random.default_rng(1)
    base = (rng.random(300) < 0.8).astype(float)
    cand = flip(base, rng.choice(300, 12, replace=False))
    resamples = 4000
    ours = paired_bootstrap(base, cand, resamples=resamples, seed=3)
    naive = _naive_bootstrap(cand - base, resamples, seed=4)
    observed = (cand - base).mean()
    p_naive = min(1.0, (np.sum(np.abs(naive - observed) >= abs(observed) - 1e-12) + 1) / (resamples + 1))
    p = (ours.p_value + p_naive) / 2
    assert abs(ours.p_value - p_naive) <= 4 * np.sqrt(2 * p * (1 - p) / resamples)
    step = 1 / 300  # the paired mean moves in steps of 1/n: the quantiles may differ by one step
    assert abs(ours.ci_low - np.quantile(naive, 0.025)) <= step + 1e-12
    assert abs(ours.ci_high - np.quantile(naive, 0.975)) <= step + 1e-12
    # continuous differences take the row-resampling path: same distribution of the mean, so the same spread
    loss_b, loss_c = rng.exponential(1.0, 300), rng.exponential(1.0, 300)
    cont = paired_bootstrap(loss_b, loss_c, resamples=2000, seed=5)
    sd = (loss_c - loss_b).std() / np.sqrt(300)
    assert cont.ci_high - cont.ci_low == pytest.approx(2 * 1.96 * sd, rel=0.15)  # MC + finite-sample skew


def test_bootstrap_p_values_hold_their_level_under_no_change_and_find_a_real_one() -> None:
    """Calibration: 400 pairs of runs that differ only by chance (two independent draws of every sample's
    outcome: most samples almost surely robust or not, some a coin flip, as attack randomness gives) are
    called significant at 0.05 no more often than 5% plus three binomial std."""
    rng = np.random.default_rng(7)
    trials, n = 400, 400
    hits = 0
    for _ in range(trials):
        chance = np.where(rng.random(n) < 0.15, 0.5, np.where(rng.random(n) < 0.7, 0.99, 0.01))
        base = (rng.random(n) < chance).astype(float)
        cand = (rng.random(n) < chance).astype(float)
        hits += paired_bootstrap(base, cand, resamples=1000, seed=int(rng.integers(1 << 30))).p_value <= 0.05
    assert hits / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
    base = (rng.random(n) < 0.9).astype(float)
    worse = flip(base, np.flatnonzero(base == 1)[:30])  # 30 samples lost, none gained
    result = paired_bootstrap(base, worse, resamples=2000)
    assert result.delta == pytest.approx(-30 / n) and result.ci_high < 0 and result.p_value < 0.001
    assert paired_bootstrap(base, base.copy()).p_value == 1.0


def test_holm_matches_its_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4*0.01, max(.., 3*0.03), max(.., 2*0.04), max(.., 0.2)
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])


# -- comparisons -----------------------------------------------------------------------------------


def test_chance_differences_are_not_significant(tmp_path: Path, outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust)
    swapped = np.flatnonzero(correct == 1)[:6]
    cand = paired_run(tmp_path, "cand", correct, flip(robust, swapped))  # 3 robust lost, 3 gained (or so)
    comparison = compare_run_dirs(base / "results.json", cand)  # a run directory or its results.json
    assert comparison.pairing.available and comparison.pairing.n_samples == 400
    assert comparison.exit_code == 0 and not comparison.regressions
    acc = comparison.delta(ACC)
    assert acc is not None and acc.change == "unchanged" and acc.significance is not None
    assert acc.significance.p_value == 1.0


def test_a_real_regression_exits_1_and_names_the_metric(tmp_path: Path,
                                                        outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust)
    lost = np.flatnonzero(robust == 1)[:40]
    cand = paired_run(tmp_path, "cand", correct, flip(robust, lost))
    comparison = compare_run_dirs(base, cand)
    assert comparison.exit_code == 1 and comparison.verdict == "REGRESSION"
    assert [d.metric for d in comparison.regressions] == [ROBUST]
    d = comparison.delta(ROBUST)
    assert d is not None and d.change == "worse" and d.delta == pytest.approx(-40 / 400)
    assert d.significance is not None and d.significance.ci_high < 0
    failing = [c for c in comparison.checks if c.status == "fail"]
    assert [c.metric for c in failing] == [ROBUST] and "significantly worse" in failing[0].message
    # a policy that only reports significant changes, with a tolerance the drop stays within
    report = parse_compare_policy({"rules": [f"{ROBUST} delta >= -0.15"], "significant_regressions": "report"})
    assert compare_run_dirs(base, cand, policy=report).exit_code == 0
    # ... or does not
    strict = parse_compare_policy({"rules": [f"{ROBUST} delta >= -0.02"], "significant_regressions": "report"})
    assert compare_run_dirs(base, cand, policy=strict).exit_code == 1


def test_runs_that_attacked_different_subsets_pair_the_samples_both_cover(
        tmp_path: Path, outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes  # 400 samples of the same data; each run covers 300 of them
    worse = flip(robust, np.flatnonzero(robust == 1)[:60])
    base = paired_run(tmp_path, "base", correct[:300], robust[:300], ids=np.arange(300))
    cand = paired_run(tmp_path, "cand", correct[100:], worse[100:], ids=np.arange(100, 400))
    comparison = compare_run_dirs(base, cand)
    d = comparison.delta(ROBUST)
    assert d is not None and d.significance is not None and d.significance.n_paired == 200
    lost_in_overlap = int(((robust == 1) & (worse == 0))[100:300].sum())
    assert d.significance.delta == pytest.approx(-lost_in_overlap / 200)
    assert d.delta == pytest.approx(worse[100:].mean() - robust[:300].mean())  # the reported metrics' delta
    assert "200 samples of the same data" in comparison.pairing.reason


def test_accuracy_and_error_rate_are_one_test(tmp_path: Path, outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust)
    cand = paired_run(tmp_path, "cand", flip(correct, np.flatnonzero(correct == 1)[:30]), robust * 0 + robust)
    comparison = compare_run_dirs(base, cand)
    acc, err = comparison.delta(ACC), comparison.delta("performance.error_rate")
    assert acc is not None and err is not None and acc.significance and err.significance
    assert comparison.n_hypotheses == 2 and len(comparison.tested) == 3  # accuracy = 1 - error rate: one test
    assert acc.significance.p_adjusted == err.significance.p_adjusted
    assert (err.significance.ci_low, err.significance.ci_high) == pytest.approx(
        (-acc.significance.ci_high, -acc.significance.ci_low))
    assert acc.change == "worse" and err.change == "worse"  # error rate up is worse: its direction is lower


def test_rules_on_deltas_and_absolute_rules() -> None:
    base, cand = make_results(with_error=False, accuracy=0.9), make_results(with_error=False, accuracy=0.87)
    policy = parse_compare_policy({"rules": [
        f"{ACC} delta >= -0.02",
        {"metric": "performance.loss", "delta": True, "op": "<=", "value": 0.0},
        f"{ACC} >= 0.85",
    ]})
    assert [r.metric for r in policy.delta_rules] == [ACC, "performance.loss"] and policy.gate is not None
    comparison = compare_results(base, cand, policy=policy)
    by_name = {c.name: c for c in comparison.checks}
    assert by_name[f"{ACC} delta >= -0.02"].status == "fail"
    assert by_name[f"{ACC} delta >= -0.02"].value == pytest.approx(-0.03)
    assert by_name["performance.loss delta <= 0"].status == "pass"
    assert by_name[f"{ACC} >= 0.85"].status == "pass"
    assert by_name["significance"].status == "skipped"  # no outcomes: rules decide, and the summary says why
    assert "saved per-sample outcomes" in by_name["significance"].message
    assert comparison.exit_code == 1


def test_cannot_judge_cases_exit_2(tmp_path: Path) -> None:
    base = make_results(with_error=False)
    cand = copy.deepcopy(base)
    # a metric a rule names is missing (did-you-mean), null, or infinite in both runs
    cand["sections"]["performance"]["metrics"]["performance.loss"] = None
    base["sections"]["robustness"]["metrics"]["robustness.fmn.linf.median_min_eps"] = "Infinity"
    cand["sections"]["robustness"]["metrics"]["robustness.fmn.linf.median_min_eps"] = "Infinity"
    policy = parse_compare_policy({"rules": ["performance.acuracy delta >= 0", "performance.loss delta <= 0",
                                             "robustness.fmn.linf.median_min_eps delta >= 0"]})
    checks = {c.name: c for c in compare_results(base, cand, policy=policy).checks}
    assert checks["performance.acuracy delta >= 0"].status == "missing"
    assert "did you mean 'performance.accuracy'" in checks["performance.acuracy delta >= 0"].message
    assert checks["performance.loss delta <= 0"].status == "missing"
    assert "null (NaN" in checks["performance.loss delta <= 0"].message
    assert checks["robustness.fmn.linf.median_min_eps delta >= 0"].message == DELTA_UNDEFINED.format(
        metric="robustness.fmn.linf.median_min_eps", value="Infinity")
    # finite -> Infinity is a well-defined delta (+inf): it passes '>= 0'
    base["sections"]["robustness"]["metrics"]["robustness.fmn.linf.median_min_eps"] = 0.2
    ok = compare_results(base, cand, policy=parse_compare_policy(
        {"rules": ["robustness.fmn.linf.median_min_eps delta >= 0"]}))
    assert ok.exit_code == 0
    # no rules and nothing to pair: nothing to judge
    nothing = compare_results(base, cand)
    assert nothing.exit_code == 2 and "nothing to judge" in nothing.checks[-1].message


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_unfinished_runs_cannot_be_compared(tmp_path: Path, status: str) -> None:
    base = write_run(tmp_path, "base", make_results(with_error=False))
    cand = write_run(tmp_path, "cand", unfinished_results(status, interrupted_by="SIGTERM"))
    comparison = compare_run_dirs(base, cand, policy=parse_compare_policy({"rules": [f"{ACC} delta >= -1"]}))
    assert comparison.exit_code == 2
    check = next(c for c in comparison.checks if c.name == "candidate run finished")
    expected = "incomplete" if status == "running" else "interrupted"  # no process holds a lock: it died
    assert check.status == "error" and f"the candidate run is {expected}" in check.message
    assert "never ran: fairness, shap" in check.message


def test_a_failed_section_exits_2_unless_the_policy_allows_it() -> None:
    base, cand = make_results(with_error=False), make_results(with_error=True)
    rules = {"rules": [f"{ACC} delta >= -1"]}
    failed = compare_results(base, cand, policy=parse_compare_policy(rules))
    assert failed.exit_code == 2 and "failed sections (fairness)" in failed.checks[1].message
    allowed = compare_results(base, cand, policy=parse_compare_policy({**rules, "fail_on_section_error": False}))
    assert allowed.exit_code == 0


def test_different_data_says_why_there_is_no_significance(tmp_path: Path,
                                                          outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust, data_sha="aa" * 32)
    cand = paired_run(tmp_path, "cand", correct, robust, data_sha="bb" * 32)
    comparison = compare_run_dirs(base, cand)
    assert not comparison.pairing.available and "audited different data" in comparison.pairing.reason
    assert comparison.exit_code == 2 and not comparison.tested


def test_results_without_directions_or_outcomes_still_compare(tmp_path: Path,
                                                              outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust, directions=False)
    cand = paired_run(tmp_path, "cand", correct, flip(robust, np.flatnonzero(robust == 1)[:40]), directions=False)
    comparison = compare_run_dirs(base, cand, policy=parse_compare_policy({"rules": [f"{ROBUST} delta >= -0.2"]}))
    d = comparison.delta(ROBUST)
    assert d is not None and d.direction is None and d.change == "changed" and d.significance is None
    assert comparison.exit_code == 0  # no direction: no significance test; the rule decides


def test_setup_differences_name_what_changed() -> None:
    base = make_results(with_error=False, seed=0)
    cand = make_results(with_error=False, seed=3)
    cand["sections"]["robustness"]["params"]["eps"] = [0.1]
    del cand["sections"]["shap"]
    assert setup_differences(base, cand) == ["seed 0 -> 3", "sections only in the base run: shap",
                                             "robustness parameters: eps [0.0, 0.05, 0.1, 0.2] -> [0.1]"]
    assert setup_differences(base, copy.deepcopy(base)) == []


def test_policy_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_compare_policy({"rules": ["performance.accuracy delta => 0"]})
    assert info.value.key == "rules[0]" and "delta <op> <number>" in info.value.message
    with pytest.raises(ConfigError) as info:
        parse_compare_policy({"rules": [f"{ACC} delta >= 0", "performance.accuracy => 0.9"]})
    assert info.value.key == "rules[1]" and "cannot read rule" in info.value.message  # the gate's message
    with pytest.raises(ConfigError) as info:
        parse_compare_policy({"rules": [], "significant_regresions": "fail"})
    assert info.value.key == "significant_regresions" and "did you mean 'significant_regressions'" in \
        info.value.message
    with pytest.raises(ConfigError) as info:
        parse_compare_policy({"alpha": 0.9})
    assert info.value.key == "alpha"
    with pytest.raises(ConfigError) as info:
        parse_compare_policy({"rules": [{"metric": ACC, "delta": "yes", "op": ">=", "value": 0}]})
    assert info.value.key == "rules[0].delta"
    assert parse_compare_policy({"alpha": 0.01}) == ComparePolicy(alpha=0.01)


# -- output ----------------------------------------------------------------------------------------

INJECTION = ("![x](http://evil.example/x.png) <img src=x onerror=alert(1)> | **bold** \\| [link](http://a.b) `c` "
             "@someone #12 www.evil.example")


def test_markdown_and_junit_show_result_strings_as_text(tmp_path: Path,
                                                        outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust, title=INJECTION)
    cand = paired_run(tmp_path, "cand", correct, flip(robust, np.flatnonzero(robust == 1)[:40]), title=INJECTION)
    comparison = compare_run_dirs(base, cand)
    markdown = compare_to_markdown(comparison)
    unescaped = re.sub(r"\\.", "", markdown)  # what is left once every backslash escape is taken out
    for raw in ("![", "<img", "http://", "**bold**", "[link]", "\\|", "`c`", "@someone", " #12", "www."):
        assert raw not in unescaped, raw  # each comes through only with its characters escaped
    assert escape_markdown(INJECTION) in markdown
    columns = None
    for line in markdown.splitlines():  # every row of a table has its header's cells: no pipe from the data
        if not line.startswith("|"):
            columns = None
        elif columns is None:
            columns = line.count("|")
        else:
            assert line.count("|") == columns, line
    assert "❌ nnaudit compare: regression" in markdown and "**yes**" in markdown
    root = ET.fromstring(compare_to_junit(comparison))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("errors") == "0"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["base"] == INJECTION and properties["exit_code"] == "1"
    failure = root.find(".//failure")
    assert failure is not None and failure.get("type") == "regression" and ROBUST in (failure.text or "")


def test_compare_junit_replaces_characters_xml_cannot_hold() -> None:
    """A check message holding ESC and NUL (a section's error text) still makes a well-formed JUnit file: the
    comparison goes through the gate's one JUnit writer and its cleanup."""
    base, cand = make_results(with_error=True), make_results(with_error=True)
    base["sections"]["fairness"]["error"]["message"] = "colour \x1b[31mred\x1b[0m and a \x00 byte"
    cand["manifest"]["title"] = "title \x1b[1m"
    comparison = compare_results(base, cand, policy=parse_compare_policy(
        {"rules": ["fairness.parity_gap delta <= 0.1"], "fail_on_section_error": False}))
    check = next(c for c in comparison.checks if c.kind == "delta")
    assert check.status == "error" and "\x1b[31mred" in check.message and "\x00" in check.message
    root = ET.fromstring(compare_to_junit(comparison).encode("utf-8"))  # an ESC or NUL byte would make this raise
    error = root.find(".//testcase[@classname='nnaudit.compare.delta']/error")
    assert error is not None
    assert "colour \ufffd[31mred\ufffd[0m and a \ufffd byte" in (error.get("message") or "")
    assert error.text == error.get("message")
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["candidate"] == "title \ufffd[1m"


def test_escaped_markdown_renders_as_the_same_text() -> None:
    """CommonMark backslash escapes render as the characters: removing them gives the input back."""
    text = "a_b*c <d> [e](f) | g \\ h `i` ~j~ #k !l http://m.n"
    assert re.sub(r"\\(.)", r"\1", escape_markdown(text)) == text


def test_cli_compare_writes_summary_and_junit_and_exits_with_the_verdict(
        tmp_path: Path, outcomes: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust)
    cand = paired_run(tmp_path, "cand", correct, flip(robust, np.flatnonzero(robust == 1)[:40]))
    code = main(["compare", str(base), str(cand), "--summary", str(tmp_path / "s.md"), "--junit",
                 str(tmp_path / "j.xml"), "--resamples", "500"])
    out = capsys.readouterr().out
    assert code == 1 and "compare REGRESSION (exit 1)" in out and ROBUST in out
    assert (tmp_path / "s.md").read_text().startswith("## ❌") and (tmp_path / "j.xml").exists()
    assert main(["compare", str(base), str(cand), "--json", str(tmp_path / "c.json"), "--resamples", "500"]) == 1
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["exit_code"] == 1 and data["verdict"] == "REGRESSION"
    row = next(d for d in data["deltas"] if d["metric"] == ROBUST)
    assert row["regression"] is True and row["direction"] == "higher" and row["significance"]["n_paired"] == 400
    capsys.readouterr()
    assert main(["compare", str(base), str(tmp_path / "nowhere")]) == 2
    assert "no results file" in capsys.readouterr().err
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - performance.accuracy delta >= -0.01\nsignificant_regressions: report\n")
    assert main(["compare", str(base), str(cand), "--policy", str(policy)]) == 0


def test_compare_works_without_torch(tmp_path: Path, outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    base = paired_run(tmp_path, "base", correct, robust)
    cand = paired_run(tmp_path, "cand", correct, flip(robust, np.flatnonzero(robust == 1)[:40]))
    script = textwrap.dedent("""
        import io, sys
        for name in ("torch", "torchvision", "shap", "lime", "captum", "foolbox", "fairlearn"):
            sys.modules[name] = None
        from audit.cli_decide import run_compare
        code = run_compare(sys.argv[1], sys.argv[2], summary=sys.argv[3], stream=io.StringIO(), resamples=200)
        print("exit", code)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", script, str(base), str(cand), str(tmp_path / "s.md")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exit 1"


def test_outcome_files_load_for_every_section_that_saved_one(tmp_path: Path,
                                                             outcomes: tuple[np.ndarray, np.ndarray]) -> None:
    correct, robust = outcomes
    run = paired_run(tmp_path, "base", correct, robust)
    loaded = load_all_outcomes(run, ["performance", "imbalance", "robustness"])
    assert set(loaded) == {"performance", "robustness"}
    assert np.array_equal(loaded["robustness"].values[ROBUST], robust)
