"""app.py (the shim over reports/dashboard), the Streamlit dashboard, through Streamlit's AppTest.

AppTest.from_file has no way to pass command-line arguments: the script sees the test
process's ``sys.argv``. So the tests set ``sys.argv`` (what ``streamlit run app.py -- DIR``
gives the script) or clear it and set ``NNAUDIT_RUNS_DIR``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from results_factory import make_results, unfinished_results, write_run

from audit.results import RESULTS_FILE

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 60


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_run(root, "baseline", make_results(title="Baseline", accuracy=0.9))
    newer = write_run(root, "candidate", make_results(title="Candidate", accuracy=0.8, with_error=False))
    os.utime(newer / RESULTS_FILE, (2_000_000_000, 2_000_000_000))  # newest first in the list
    return root


def _app(monkeypatch: pytest.MonkeyPatch, runs_dir: Path | None, *, env: Path | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    argv = ["app.py"] if runs_dir is None else ["app.py", str(runs_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    if env is None:
        monkeypatch.delenv("NNAUDIT_RUNS_DIR", raising=False)
    else:
        monkeypatch.setenv("NNAUDIT_RUNS_DIR", str(env))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    return at.run()


def plain(markdown: str) -> str:
    """What Markdown source renders as, for text the page escaped with ``reports.text.escape_markdown``."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def _frames(at: Any) -> list[Any]:
    return [element.value for element in at.dataframe]


def _metric_values(at: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for frame in _frames(at):
        if list(frame.columns) == ["metric", "value"]:
            values.update(zip(frame["metric"], frame["value"], strict=True))
    return values


def _sections_view(at: Any) -> Any:
    return at.radio(key="run_view").set_value("sections").run()


def _charts(at: Any) -> list[Any]:
    return at.get("vega_lite_chart")


def test_lists_runs_and_shows_the_newest(monkeypatch: pytest.MonkeyPatch, runs: Path) -> None:
    at = _app(monkeypatch, runs)
    assert not at.exception
    select = at.sidebar.selectbox(key="run")
    assert select.options == ["candidate", "baseline"]
    assert at.title[0].value == "Candidate"
    # verdict and headline first; the overview draws the robustness curve as an interactive chart
    assert [plain(i.value) for i in at.info] == ["Verdict: NOT GATED"]
    assert {m.label: m.value for m in at.metric} == {"Clean accuracy": "0.800", "Balanced accuracy": "0.840",
                                                     "Findings": "4"}
    assert at.radio(key="run_view").value == "overview" and len(_charts(at)) == 1
    at = _sections_view(at)
    assert _metric_values(at)["performance.accuracy"] == "0.800"
    labels = [e.label for e in at.expander]
    assert any("Performance" in label for label in labels) and any("Explanations" in label for label in labels)
    assert len(_charts(at)) == 4 and len(at.image) == 1  # line/bar/heatmap as charts, the image figure as image
    assert not at.error


def test_select_another_run(monkeypatch: pytest.MonkeyPatch, runs: Path) -> None:
    at = _app(monkeypatch, runs)
    at.sidebar.selectbox(key="run").select("baseline").run()
    at = _sections_view(at)
    assert not at.exception
    assert at.title[0].value == "Baseline"
    assert _metric_values(at)["performance.accuracy"] == "0.900"
    # the verdict names the failed section, the run says it failed, the errored section shows its error and traceback
    assert [plain(e.value) for e in at.error] == [
        "Verdict: NOT GATED · failed sections: fairness",
        "Run failed: every section ran, and at least one failed (1 section(s) failed: fairness).",
        "DataError: sensitive attribute 'group' has a single value"]
    assert any("Traceback" in c.value for c in at.code)
    assert "failed" in at.caption[0].value and "complete" not in at.caption[0].value


@pytest.mark.parametrize(("status", "extra", "expected"), [
    ("interrupted", {"interrupted_by": "SIGINT"},
     "Run interrupted: stopped before the end; the sections below are the ones that finished (stopped by SIGINT "
     "while 'fairness' ran). Sections that never ran: fairness, shap."),
    ("running", {},
     "Run incomplete: its process stopped without finishing; the sections below are the ones that finished (no "
     "process is writing it and it never finished while 'fairness' ran (killed or crashed)). Sections that never "
     "ran: fairness, shap."),
])
def test_unfinished_runs_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: str,
                                extra: dict[str, Any], expected: str) -> None:
    """An interrupted run, and a run stored as running whose process is gone (kill -9), are not shown as running."""
    write_run(tmp_path / "runs", "stopped", unfinished_results(status, **extra))
    at = _app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    assert [plain(w.value) for w in at.warning] == [expected]
    assert at.caption[0].value.split(" · ")[0].endswith("interrupted" if status == "interrupted" else "incomplete")


def test_a_live_run_shows_as_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from audit.engine.lock import RunLock

    run = write_run(tmp_path / "runs", "live", unfinished_results("running"))
    with RunLock(run):
        at = _app(monkeypatch, tmp_path / "runs")
    assert not at.exception and not at.warning
    assert plain(next(i.value for i in at.info if "Run running" in i.value)).startswith(
        f"Run running: still running; the sections below are the ones finished so far (running (pid {os.getpid()} on ")
    assert "Sections still to run: fairness, shap." in plain(at.info[1].value)


def test_runs_dir_from_environment(monkeypatch: pytest.MonkeyPatch, runs: Path) -> None:
    at = _app(monkeypatch, None, env=runs)
    assert not at.exception
    assert at.sidebar.selectbox(key="run").options == ["candidate", "baseline"]


def test_compare_view(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Base and candidate picked; deltas with direction, regressions first with their significance (the library's
    paired bootstrap), changed metrics only by default, and why significance is missing where it is."""
    import numpy as np
    from test_compare import ACC, ROBUST, flip, paired_run

    from audit.decide.compare import compare_run_dirs

    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.9).astype(float)
    robust = correct * (rng.random(400) < 0.6)
    root = tmp_path / "runs"
    base = paired_run(root, "base", correct, robust, title="Base")
    other = paired_run(root, "other-data", correct, robust, title="Other data", data_sha="ef" * 32)
    candidate = paired_run(root, "candidate", flip(correct, np.flatnonzero(correct)[:40]), robust, title="Cand")
    os.utime(other / RESULTS_FILE, (1_900_000_000, 1_900_000_000))
    os.utime(candidate / RESULTS_FILE, (2_000_000_000, 2_000_000_000))
    at = _app(monkeypatch, root)
    at.sidebar.radio(key="view").set_value("Compare runs").run()
    assert not at.exception
    assert (at.selectbox(key="compare_base").value, at.selectbox(key="compare_candidate").value) == \
        ("other-data", "candidate")
    at.selectbox(key="compare_base").select("base").run()
    library = compare_run_dirs(base, candidate)
    assert library.exit_code == 1 and {d.metric for d in library.regressions} == {ACC, "performance.error_rate"}
    assert [plain(e.value) for e in at.error] == [
        f"Compare: REGRESSION (exit 1) · 2 significant regression(s) · 0 significant improvement(s) · "
        f"{sum(d.change != 'unchanged' for d in library.deltas)} metric(s) changed"]
    frame = _frames(at)[-1]
    assert list(frame.columns) == ["metric", "base", "candidate", "delta", "direction", "change", "significance"]
    assert list(frame["change"][:2]) == ["regression", "regression"]  # regressions first
    assert set(frame["metric"][:2]) == {ACC, "performance.error_rate"} and "unchanged" not in set(frame["change"])
    row = frame[frame["metric"] == ACC].iloc[0]
    sig = library.delta(ACC).significance  # type: ignore[union-attr]
    assert sig is not None and sig.significant
    from reports.views import format_value

    assert (row["base"], row["candidate"], row["delta"], row["direction"]) == (
        format_value(correct.mean()), format_value(correct.mean() - 0.1), "-0.100", "higher is better")
    assert row["significance"].startswith("significantly worse: p(Holm) ") and f"over {sig.n_paired} samples" in \
        row["significance"]
    assert frame[frame["metric"] == "performance.error_rate"].iloc[0]["direction"] == "lower is better"
    at.checkbox(key="compare_only_changed").uncheck().run()
    frame = _frames(at)[-1]
    assert len(frame) == len(library.deltas) and list(frame["change"])[-1] == "unchanged"
    robust_row = frame[frame["metric"] == ROBUST].iloc[0]
    assert (robust_row["change"], robust_row["significance"][:22]) == ("unchanged", "no significant change:")
    at.checkbox(key="compare_only_changed").check().run()
    at.text_input(key="compare_filter").input("robust").run()
    assert [i.value for i in at.info] == ["No metric matches the filter."]  # robust accuracy did not change
    # other data: no pairing, so no significance, and the view says why (the library's reason)
    at.text_input(key="compare_filter").input("").run()
    at.selectbox(key="compare_base").select("other-data").run()
    reason = compare_run_dirs(other, candidate).pairing.reason
    assert reason and any(reason in plain(c.value) for c in at.caption)
    frame = _frames(at)[-1]
    assert frame[frame["metric"] == ACC].iloc[0]["significance"] == f"unavailable: {reason}"
    assert [plain(w.value).split(" ·")[0] for w in at.warning] == ["Compare: CANNOT JUDGE (exit 2)"]
    at.selectbox(key="compare_base").select("candidate").run()
    assert [i.value for i in at.info] == ["Pick two different runs: a base and a candidate."]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema_version": "1.0"})], ids=["json", "schema"])
def test_broken_results_show_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str) -> None:
    run = write_run(tmp_path / "runs", "broken")
    (run / RESULTS_FILE).write_text(content, encoding="utf-8")
    at = _app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    assert len(at.error) == 1
    assert plain(at.error[0].value).startswith("Cannot show run broken:")


def test_broken_run_in_compare_view(monkeypatch: pytest.MonkeyPatch, runs: Path) -> None:
    (runs / "baseline" / RESULTS_FILE).write_text("[]", encoding="utf-8")
    at = _app(monkeypatch, runs)
    at.sidebar.radio(key="view").set_value("Compare runs").run()
    assert not at.exception
    assert plain(at.error[0].value).startswith("Cannot show run baseline:")


def test_empty_runs_dir_says_how_to_create_a_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = _app(monkeypatch, tmp_path)
    assert not at.exception
    assert len(at.info) == 1
    assert "nnaudit demo --out" in at.info[0].value


def test_missing_runs_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = _app(monkeypatch, tmp_path / "does-not-exist")
    assert not at.exception
    assert "nnaudit demo --out" in at.info[0].value


def test_runs_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP.parent))
    import app

    assert app.runs_dir(["/a"], {"NNAUDIT_RUNS_DIR": "/b"}) == Path("/a")
    assert app.runs_dir([], {"NNAUDIT_RUNS_DIR": "/b"}) == Path("/b")
    assert app.runs_dir([], {}) == Path("runs")


def test_importing_app_is_silent() -> None:
    """The CLI imports ``app`` to find its file: that must neither render nor log anything."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(APP.parent), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", "import app"], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
