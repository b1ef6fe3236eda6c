"""reports/: view models, figures, the self-contained HTML report, JUnit XML and Markdown summaries."""

from __future__ import annotations

import base64
import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from results_factory import IMAGE_ARTIFACT, XSS, make_results, minimal_results, unfinished_results, write_run

from audit.decide.gate import evaluate_policy
from audit.errors import ResultsError
from audit.policy import parse_policy
from audit.results import RESULTS_FILE, validate_results
from reports import figures, views
from reports.ci import GATE_SUITE, gate_to_markdown, junit_xml, write_junit, write_markdown
from reports.html import REPORT_FILE, render_html, write_report
from reports.text import escape_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return make_results()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs"), "demo")


@pytest.fixture(scope="module")
def html(results: dict[str, Any], run_dir: Path) -> str:
    return render_html(results, run_dir)


# -- the factory itself -----------------------------------------------------------------------


@pytest.mark.parametrize("data", [make_results(), make_results(with_error=False), minimal_results()],
                         ids=["full", "no-error", "minimal"])
def test_factory_results_validate(data: dict[str, Any]) -> None:
    validate_results(data)


def test_factory_covers_every_figure_kind(results: dict[str, Any]) -> None:
    kinds = {f["kind"] for s in results["sections"].values() for f in s["figures"]}
    assert kinds == {"heatmap", "line", "bar", "image"}


# -- views ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (True, "true"), (3, "3"), (0.0, "0"), (0.91234, "0.912"), (1.0, "1.00"), (0.05, "0.0500"),
    (0.0005487, "0.000549"), (0.99951, "1.00"), (12.345, "12.3"), (-0.0123, "-0.0123"), (1797.0, "1797"),
    (123456.7, "123457"), (1.5e-5, "1.5e-05"), (1.11e-16, "1.1e-16"), (2.5e7, "25000000"), (2.5e7 + 0.5, "2.5e+07"),
    (float("inf"), "∞"), (float("nan"), "—"), ("cat", "cat"),
])
def test_format_value(value: Any, text: str) -> None:
    assert views.format_value(value) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250 ms"), (12.34, "12.3 s"), (125, "2 min 05 s"),
                                               (3720, "1 h 02 min"), (None, "—")])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert views.format_duration(seconds) == text


def test_run_summary(results: dict[str, Any]) -> None:
    summary = views.run_summary(results)
    assert summary["title"] == "Toy MLP audit"
    assert summary["wall_time_s"] == 12.0
    assert summary["finding_counts"] == {"critical": 0, "high": 1, "medium": 1, "low": 1, "info": 1}
    assert summary["section_counts"] == {"ok": 4, "error": 1, "skipped": 1}
    assert [s["name"] for s in summary["sections"]] == list(results["sections"])
    assert summary["model"]["sha256_short"] == "ab" * 6
    assert summary["n_metrics"] == 10


def test_run_summary_falls_back_to_section_durations() -> None:
    data = make_results()
    del data["manifest"]["timings"]["total"]
    del data["manifest"]["title"]
    summary = views.run_summary(data)
    assert summary["wall_time_s"] == pytest.approx(sum(s["duration_s"] for s in data["sections"].values()))
    assert summary["title"] == "torch.nn.Module on toy"


def test_section_view_sorts_findings_worst_first(results: dict[str, Any]) -> None:
    view = views.section_view("imbalance", results["sections"]["imbalance"])
    assert [f["severity"] for f in view["findings"]] == ["medium", "low"]
    assert [m["name"] for m in view["metrics"]] == list(results["sections"]["imbalance"]["metrics"])
    assert view["metrics"][2]["text"] == "—"
    table = view["tables"][0]
    assert table["numeric"] == [False, True, True, True, False]
    assert table["text_rows"][2][0] == XSS


def test_all_findings_filters_by_severity(results: dict[str, Any]) -> None:
    found = views.all_findings(results, min_severity="medium")
    assert [(f["severity"], f["section"]) for f in found] == [("high", "robustness"), ("medium", "imbalance")]


def test_section_anchors_are_unique() -> None:
    data: dict[str, Any] = {"sections": {"a b": {}, "a-b": {}, "a/b": {}}}
    assert list(views.section_anchors(data).values()) == ["section-a-b", "section-a-b-2", "section-a-b-3"]


def test_compare_runs() -> None:
    a, b = make_results(accuracy=0.9), make_results(accuracy=0.8)
    del b["sections"]["explain"]
    table = views.compare_runs([a, b], ["a", "b"])
    assert table["columns"] == ["metric", "a", "b", "differs"]
    rows = {row[0]: row[1:] for row in table["rows"]}
    assert rows["performance.accuracy"] == [0.9, 0.8, True]
    assert rows["performance.loss"] == [0.31, 0.31, False]
    assert rows["explain.saliency.faithfulness"] == [0.42, None, True]


def test_compare_runs_labels() -> None:
    table = views.compare_runs([make_results(), make_results()])
    assert table["columns"][1:3] == ["Toy MLP audit", "Toy MLP audit (2)"]
    with pytest.raises(ValueError, match="one label per run"):
        views.compare_runs([make_results()], ["a", "b"])


# -- figures ----------------------------------------------------------------------------------


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _specs(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for s in results["sections"].values() for f in s["figures"]}


@pytest.mark.parametrize("name", ["confusion_matrix", "per_class_recall", "reliability", "robustness_curve",
                                  "saliency_0"])
def test_render_every_kind(results: dict[str, Any], run_dir: Path, name: str) -> None:
    spec = _specs(results)[name]
    fig = figures.render_figure(spec, run_dir)
    assert fig.axes
    assert fig.axes[0].get_title(loc="left") == spec["title"]
    assert not any("cannot draw" in t for t in _texts(fig))


def test_heatmap_annotates_small_matrices(results: dict[str, Any]) -> None:
    fig = figures.render_figure(_specs(results)["confusion_matrix"])
    assert sorted(_texts(fig)) == sorted(str(v) for row in [[90, 5, 5], [10, 80, 10], [3, 7, 90]] for v in row)
    big = {"name": "big", "title": "big", "kind": "heatmap", "matrix": [[float(i * j) for j in range(25)]
                                                                         for i in range(25)]}
    assert _texts(figures.render_figure(big)) == []


def test_line_diagonal_and_bands(results: dict[str, Any]) -> None:
    reliability = figures.render_figure(_specs(results)["reliability"])
    assert "y = x" in [line.get_label() for line in reliability.axes[0].get_lines()]
    curve = figures.render_figure(_specs(results)["robustness_curve"])
    assert len(curve.axes[0].collections) == 1  # one error band: only the PGD series has yerr


def test_bar_error_bars(results: dict[str, Any]) -> None:
    fig = figures.render_figure(_specs(results)["per_class_recall"])
    assert len(fig.axes[0].patches) == 6
    from matplotlib.container import BarContainer

    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [c.errorbar is not None for c in bars] == [True, False]


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "x", "title": "X", "kind": "pie"}, "unknown figure kind 'pie'"),
    ({"name": "x", "title": "X", "kind": "heatmap", "matrix": [[1, 2], [3]]}, "rows differ in length"),
    ({"name": "x", "title": "X", "kind": "line"}, "no 'series'"),
    ({"name": "x", "title": "X", "kind": "line", "series": [{"label": "a", "x": [1, 2], "y": [1]}]}, "1 values"),
    ({"name": "x", "title": "X", "kind": "heatmap", "matrix": [[]]}, "'matrix' is empty"),
    ({"name": "x", "title": "X", "kind": "line", "series": [{"label": "a", "x": 5, "y": 5}]}, "not iterable"),
    ({"name": "x", "title": "X", "kind": "image"}, "no 'artifact'"),
    ({"name": "x", "title": "X", "kind": "image", "artifact": "artifacts/none.png"}, "not found"),
    ({"name": "x", "title": "X", "kind": "image", "artifact": "../outside.png"}, "outside the run directory"),
])
def test_bad_specs_give_placeholders(run_dir: Path, spec: dict[str, Any], message: str) -> None:
    fig = figures.render_figure(spec, run_dir)
    text = " ".join(_texts(fig)).replace("\n", " ")
    assert "cannot draw figure 'x'" in text
    assert message in text


@pytest.mark.parametrize("spec", [
    {"kind": "heatmap", "matrix": [[None, None], [None, None]]},
    {"kind": "heatmap", "matrix": [[1, 1], [1, 1]]},
    {"kind": "line", "series": [{"label": "a", "x": [1, 2], "y": [None, None]}]},
    {"kind": "line", "series": [{"label": "a", "x": [], "y": []}]},
    {"kind": "line", "diagonal": True, "series": [{"label": "a", "x": [0.5], "y": [0.5]}]},
    {"kind": "line", "series": [{"label": "a", "x": [1, 2], "y": [1, 2], "style": "not a style"}]},
    {"kind": "bar", "series": [{"label": "a", "x": [], "y": []}]},
    {"kind": "bar", "series": [{"label": "a", "x": ["p", "q"], "y": [None, 1], "yerr_low": [None, 0.1]}]},
    {"kind": "bar", "series": [{"label": "a", "x": [0.1, 0.2], "y": [1, 2]},
                               {"label": "b", "x": [0.1, 0.2], "y": [2, 1]}]},
], ids=["null-heatmap", "flat-heatmap", "null-line", "empty-line", "one-point", "bad-style", "empty-bar", "null-bar",
        "numeric-bars"])
def test_edge_specs_draw_quietly(spec: dict[str, Any]) -> None:
    """Degenerate but valid data draws without warnings (pytest turns them into errors) or placeholders."""
    fig = figures.render_figure({"name": "edge", "title": "Edge", **spec})
    assert not any("cannot draw" in t for t in _texts(fig))
    assert figures.figure_to_png_bytes(fig).startswith(PNG_MAGIC)


def test_png_base64(results: dict[str, Any]) -> None:
    fig = figures.render_figure(_specs(results)["reliability"])
    assert base64.b64decode(figures.figure_to_png_base64(fig)).startswith(PNG_MAGIC)
    assert figures.figure_png(_specs(results)["reliability"]).startswith(PNG_MAGIC)


# -- HTML -------------------------------------------------------------------------------------


def test_html_shows_every_section_and_metric(results: dict[str, Any], html: str) -> None:
    for name, section in results["sections"].items():
        assert f'id="{views.section_anchors(results)[name]}"' in html
        assert section["title"] in html
        for metric in section["metrics"]:
            assert metric in html
        for table in section["tables"]:
            assert table["title"] in html


def test_html_summary_header(html: str) -> None:
    for text in ("Toy MLP audit", "torch.nn.Module", "toy (tabular, 300 samples)", "cpu", "0.1.0", "12.0 s",
                 "complete"):
        assert text in html
    assert "<h2>Headline</h2>" in html and "<h2>Key findings</h2>" in html and "Contents" in html


def test_html_escapes_markup(html: str) -> None:
    assert XSS not in html
    assert XSS_ESCAPED in html
    assert "<script" not in html.lower()


def test_html_is_self_contained(results: dict[str, Any], html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    n_figures = sum(len(s["figures"]) for s in results["sections"].values())
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == n_figures
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)


def test_html_error_box(html: str) -> None:
    box = html[html.index('id="section-fairness"'):]
    box = box[: box.index("</section>")]
    assert "DataError" in box and "has a single value" in box
    assert "<details><summary>Traceback</summary><pre>Traceback (most recent call last):" in box


def test_html_structure_golden(results: dict[str, Any], html: str) -> None:
    """The section headings, in order, and every contents link points at an existing id."""
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    titles = [s["title"] for s in results["sections"].values()]
    assert headings == ["Headline", "Key findings", *titles, "Run details"]
    ids = set(re.findall(r'id="([^"]+)"', html))
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert links and links <= ids


def test_html_findings_colored_by_severity(html: str) -> None:
    assert 'class="f-high"' in html and 'class="badge sev-high"' in html
    assert 'class="f-medium"' in html


def test_html_renders_a_run_without_sections() -> None:
    text = render_html(minimal_results())
    assert "This run has no sections." in text


def test_write_report(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r")
    path = write_report(run)
    assert path == run / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "Saliency, sample 0" in text
    assert sorted(p.name for p in run.iterdir()) == ["artifacts", REPORT_FILE, RESULTS_FILE]
    assert write_report(run / RESULTS_FILE) == path


def test_image_without_artifact_still_renders(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r")
    (run / IMAGE_ARTIFACT).unlink()
    text = write_report(run).read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 5  # the image figure becomes a placeholder


def test_write_report_rejects_invalid_results(tmp_path: Path) -> None:
    bad = copy.deepcopy(make_results())
    bad["sections"]["performance"]["status"] = "great"
    run = write_run(tmp_path, "bad", bad)
    with pytest.raises(ResultsError, match="status"):
        write_report(run)
    (run / RESULTS_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsError, match="cannot read"):
        write_report(run)
    assert not (run / REPORT_FILE).exists()


# -- JUnit and Markdown -------------------------------------------------------------------------


POLICY = {
    "rules": [
        "performance.accuracy >= 0.95",  # fail
        "imbalance.balanced_accuracy >= 0.8",  # pass
        "imbalance.roc_auc_ovr >= 0.5",  # null -> missing
        "fairness.parity_gap <= 0.1",  # errored section -> error
    ],
    "max_findings": {"critical": 0},
}


@pytest.fixture(scope="module")
def gate_report(results: dict[str, Any]) -> Any:
    return evaluate_policy(results, parse_policy(POLICY))


def test_junit(gate_report: Any, tmp_path: Path) -> None:
    root = ET.fromstring(junit_xml(gate_report))
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == GATE_SUITE
    suite = suites[0]
    cases = suite.findall("testcase")
    # 4 rules + 1 findings limit + run status + 6 sections
    assert len(cases) == int(suite.get("tests", "")) == 12
    assert int(suite.get("failures", "")) == len(suite.findall("testcase/failure")) == 1
    assert int(suite.get("errors", "")) == len(suite.findall("testcase/error")) == 3  # missing, rule error, section
    assert int(suite.get("skipped", "")) == len(suite.findall("testcase/skipped")) == 1
    by_name = {case.get("name"): case for case in cases}
    assert by_name["performance.accuracy >= 0.95"].find("failure") is not None
    assert by_name["imbalance.roc_auc_ovr >= 0.5"].find("error").get("type") == "missing_metric"  # type: ignore[union-attr]
    assert by_name["section fairness"].find("error") is not None
    assert by_name["imbalance.balanced_accuracy >= 0.8"].find("failure") is None
    path = write_junit(gate_report, tmp_path / "out" / "junit.xml")
    assert ET.parse(path).getroot().tag == "testsuites"


def test_junit_all_pass() -> None:
    report = evaluate_policy(make_results(with_error=False), parse_policy({"rules": ["performance.accuracy > 0.5"]}))
    suite = ET.fromstring(junit_xml(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")


def test_markdown(gate_report: Any, tmp_path: Path) -> None:
    text = gate_to_markdown(gate_report)
    lines = text.splitlines()
    assert lines[0] == "## ⚠️ nnaudit gate ERROR"
    assert "| Check | Value | Threshold | Outcome | Detail |" in lines
    assert "| `performance.accuracy >= 0.95` | 0.9 | \\>\\= 0\\.95 | ❌ fail |" in text
    assert "| `imbalance.balanced_accuracy >= 0.8` | 0.84 | \\>\\= 0\\.8 | ✅ pass |" in text
    assert "⚠️ missing" in text and "⚠️ error" in text
    assert "- **high** (robustness): robust accuracy collapses at eps\\=0\\.2" in lines
    table_rows = [line for line in lines if line.startswith("| `")]
    assert len(table_rows) == len(gate_report.checks)
    assert all(line.count(" | ") == 4 for line in table_rows)
    assert write_markdown(gate_report, tmp_path / "s.md").read_text(encoding="utf-8") == text


def test_markdown_escapes_findings() -> None:
    data = make_results()
    data["sections"]["performance"]["findings"].append({"severity": "critical", "message": f"class {XSS} | broken"})
    text = gate_to_markdown(evaluate_policy(data, parse_policy({"max_findings": {"critical": 0}})))
    assert XSS not in text
    assert "class \\<script\\>alert\\(1\\)\\<\\/script\\> \\| broken" in text
    assert "❌ nnaudit gate FAILED" not in text  # the errored section makes it ERROR, which wins
    assert escape_markdown("a|b\nc") == "a\\|b c"


def test_results_json_roundtrip_after_render(tmp_path: Path) -> None:
    """Rendering never mutates the results it is given."""
    data = make_results()
    before = json.dumps(data, sort_keys=True)
    render_html(data, write_run(tmp_path, "r"))
    assert json.dumps(data, sort_keys=True) == before


# -- run status: failed, interrupted, incomplete ----------------------------------------------


def _badge(html: str) -> str:
    match = re.search(r'<h1>.*?<span class="badge status-([a-z]+)">([a-z]+)</span></h1>', html)
    assert match is not None
    assert match.group(1) == match.group(2)
    return match.group(1)


def _never_ran(html: str) -> list[str]:
    block = re.search(r'<ul class="never-ran">(.*?)</ul>', html, re.DOTALL)
    return [] if block is None else re.findall(r'<li><span class="mono">([^<]+)</span>', block.group(1))


def test_complete_run_has_no_state_banner() -> None:
    html = render_html(make_results(with_error=False))
    assert _badge(html) == "complete" and 'id="run-state"' not in html


def test_failed_run_is_not_green(html: str) -> None:
    assert _badge(html) == "failed"
    assert "<strong>Run failed</strong>: every section ran, and at least one failed (1 section(s) failed: fairness)." \
        in html
    assert _never_ran(html) == []


def test_interrupted_run_lists_sections_that_never_ran() -> None:
    html = render_html(unfinished_results("interrupted", interrupted_by="SIGTERM"))
    assert _badge(html) == "interrupted"
    assert "(stopped by SIGTERM while &#39;fairness&#39; ran)" in html
    assert _never_ran(html) == ["fairness", "shap"]
    assert "fairness</span> (was running when the run stopped)" in html


def test_killed_run_reads_as_incomplete(tmp_path: Path) -> None:
    """Stored as running, but the process that held the lock is gone (kill -9 leaves the lock file behind)."""
    from audit.engine.lock import LOCK_FILE

    run = write_run(tmp_path, "killed", unfinished_results("running"))
    (run / LOCK_FILE).write_text(json.dumps({"pid": 4_000_000, "host": __import__("socket").gethostname(),
                                             "started_at": "2026-01-01T00:00:00+00:00"}), encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    assert _badge(html) == "incomplete"
    assert "the process that wrote it (pid 4000000 on " in html and "stopped without finishing" in html
    assert _never_ran(html) == ["fairness", "shap"]
    assert "running" not in re.search(r"<h1>.*?</h1>", html).group(0)  # type: ignore[union-attr]


def test_live_run_reads_as_running(tmp_path: Path) -> None:
    from audit.engine.lock import RunLock

    run = write_run(tmp_path, "live", unfinished_results("running"))
    with RunLock(run):
        html = write_report(run).read_text(encoding="utf-8")
    assert _badge(html) == "running"
    assert "Sections still to run" in html and "fairness</span> (running now)" in html


def test_infinity_shows_as_infinity(tmp_path: Path) -> None:
    data = make_results(with_error=False)
    data["sections"]["robustness"]["metrics"]["robustness.fmn.linf.median_min_eps"] = "Infinity"
    data["sections"]["imbalance"]["tables"][0]["rows"][0][1] = "-Infinity"
    validate_results(data)
    section = views.section_view("robustness", data["sections"]["robustness"])
    row = next(m for m in section["metrics"] if m["name"] == "robustness.fmn.linf.median_min_eps")
    assert (row["value"], row["text"]) == (float("inf"), "∞")
    table = views.table_view(data["sections"]["imbalance"]["tables"][0])
    assert table["text_rows"][0][1] == "-∞" and table["numeric"][1]
    assert "∞" in render_html(data)
