"""nnaudit dashboard: a read-only Streamlit view of audit runs.

    nnaudit dashboard RUNS_DIR          (or, from a checkout: streamlit run app.py -- RUNS_DIR)

The runs directory is the first argument after ``--``, else ``$NNAUDIT_RUNS_DIR``, else
``runs``. Every run directory below it (one holding ``results.json``) is listed. Views and
figures come from ``reports/``. Every string taken from data, config or results is shown as
text (``reports.dashboard.text``), never as Markdown or HTML.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from audit.errors import ResultsError
from audit.results import RESULTS_FILE, load_results
from audit.runs import find_runs, run_state
from reports.dashboard import RUNS_ENV
from reports.dashboard.charts import CHARTABLE, chart
from reports.dashboard.waivers import show_waivers
from reports.figures import figure_png
from reports.headline import headline_view, verdict_view
from reports.text import escape_markdown
from reports.views import all_findings, run_summary, section_views

DEFAULT_RUNS_DIR = "runs"
VIEW_RUN, VIEW_COMPARE, VIEW_HISTORY = "Run", "Compare runs", "History"
NO_RUNS = ("No audit runs in {root} yet. Create one with nnaudit demo --out {root}/demo "
           "(or nnaudit run audit.yaml), then reload this page.")
BROKEN_RUN = "Cannot show run {label}: {error}"
STATUS_ICONS = {"ok": ":material/check_circle:", "error": ":material/error:", "skipped": ":material/skip_next:",
                "complete": ":material/check_circle:", "failed": ":material/error:", "running": ":material/pending:",
                "interrupted": ":material/stop_circle:", "incomplete": ":material/warning:"}
RUN_STATE = "Run {status}: {text} ({reason})."
NEVER_RAN = "Sections that never ran: {names}."
STILL_TO_RUN = "Sections still to run: {names}."
VIEWS = {"overview": "Overview", "findings": "Findings", "samples": "Sample explorer", "sections": "All sections"}
SEVERITIES = ("critical", "high", "medium", "low", "info")
NOT_GATED = ("No gate policy travels with this run (nnaudit run \\-\\-policy P, or a gate: block in the config); "
             "gate it with nnaudit gate RUN \\-\\-policy P.")


def runs_dir(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Path:
    """The runs directory: first argument, else ``$NNAUDIT_RUNS_DIR``, else ``runs``."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    positional = [a for a in args if not a.startswith("-")]
    return Path(positional[0] if positional else env.get(RUNS_ENV) or DEFAULT_RUNS_DIR)


def run_label(run: Path, root: Path) -> str:
    try:
        label = run.relative_to(root).as_posix()
    except ValueError:
        label = run.as_posix()
    return label if label not in ("", ".") else run.name


def _load(run: Path) -> dict[str, Any]:
    """The run's results (read-only: shared between reruns while the file is unchanged); raises ``ResultsError``
    with the reason when they are unusable."""
    try:
        stat = (run / RESULTS_FILE).stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = (0, 0)
    return _results_cache()(str(run), version)


@functools.cache
def _results_cache() -> Callable[[str, tuple[int, int]], dict[str, Any]]:
    """Validated results per (run, file version), made on first use so that importing this module stays silent."""

    @st.cache_resource(show_spinner=False, max_entries=32)
    def load(run: str, version: tuple[int, int]) -> dict[str, Any]:
        return load_results(run, validate=True)

    return load


@functools.cache
def _png_renderer() -> Callable[[str, str, float], bytes]:
    """A cached spec -> PNG renderer, made on first use so that importing this module stays silent."""

    @st.cache_data(show_spinner=False, max_entries=512)
    def render(spec_json: str, run_dir: str, stamp: float) -> bytes:
        return figure_png(json.loads(spec_json), run_dir)

    return render


def _figure_bytes(spec: dict[str, Any], run: Path) -> bytes:
    results = run / RESULTS_FILE
    stamp = results.stat().st_mtime if results.exists() else 0.0
    return _png_renderer()(json.dumps(spec, sort_keys=True), str(run), stamp)


# -- run view ---------------------------------------------------------------------------------


def show_summary(results: dict[str, Any], run: Path | None = None) -> None:
    summary = run_summary(results, run_state(results, run))
    st.title(escape_markdown(summary["title"]))
    model, data = summary["model"], summary["data"]
    counts = summary["section_counts"]
    st.caption(f"{STATUS_ICONS.get(summary['status'], '')} {escape_markdown(summary['status'])} · "
               f"{counts.get('ok', 0)} of {len(summary['sections'])} sections ok · wall time "
               f"{escape_markdown(summary['wall_time_text'])} · started {escape_markdown(summary['created_at'])} · "
               f"nnaudit {escape_markdown(summary['nnaudit_version'])} · device {escape_markdown(summary['device'])} "
               f"· seed {escape_markdown(summary['seed'])}")
    show_verdict(results, run)
    show_run_state(summary)
    show_headline(results)
    details = {
        "model": f"{model['kind']} ({model['source']})" if model["source"] else model["kind"],
        "model sha256": model["sha256_short"],
        "output": f"{model['output_kind']}, {model['num_classes']} classes",
        "gradients": "yes" if model["has_gradients"] else "no (black-box)",
        "parameters": "—" if model["num_parameters"] is None else f"{model['num_parameters']:,}",
        "data": f"{data['name']} ({data['modality']}, {data['n_samples']} samples)",
        "data sha256": data["sha256_short"],
        "classes": ", ".join(data["class_names"]),
    }
    with st.expander("Model and data", expanded=False):
        st.dataframe([{"field": k, "value": v} for k, v in details.items()], hide_index=True)


def show_run_state(summary: dict[str, Any]) -> None:
    """A failed, interrupted, incomplete or running run says so first, with the sections that never ran."""
    status = summary["status"]
    if status == "complete":
        return
    lines = [RUN_STATE.format(status=escape_markdown(status), text=escape_markdown(summary["status_text"]),
                              reason=escape_markdown(summary["status_reason"]))]
    if summary["never_ran"]:
        template = STILL_TO_RUN if status == "running" else NEVER_RAN
        lines.append(template.format(names=escape_markdown(", ".join(summary["never_ran"]))))
    text = " ".join(lines)
    if status == "failed":
        st.error(text, icon=STATUS_ICONS[status])
    elif status == "running":
        st.info(text, icon=STATUS_ICONS[status])
    else:
        st.warning(text, icon=STATUS_ICONS.get(status))


def show_findings(findings: list[dict[str, Any]]) -> None:
    rows = [{"severity": f["severity"].upper(), "message": f["message"], "code": f["code"] or "",
             "metric": f["metric"] or "", "value": f["value_text"] or ""} for f in findings]
    st.dataframe(rows, hide_index=True)


def show_section(section: dict[str, Any], run: Path) -> None:
    label = f"{escape_markdown(section['title'])} · {escape_markdown(section['duration_text'])}"
    with st.expander(label, expanded=section["status"] == "error", icon=STATUS_ICONS.get(section["status"])):
        st.caption(f"section {escape_markdown(section['name'])} · plugin {escape_markdown(section['plugin'])} · status "
                   f"{escape_markdown(section['status'])}")
        if section["error"]:
            err = section["error"]
            st.error(f"{escape_markdown(err['type'])}: {escape_markdown(err['message'])}")
            if err["traceback"]:
                st.code(err["traceback"], language=None)
        if section["findings"]:
            st.markdown("**Findings**")
            show_findings(section["findings"])
        if section["metrics"]:
            st.markdown("**Metrics**")
            st.dataframe([{"metric": m["name"], "value": m["text"]} for m in section["metrics"]], hide_index=True,
                         column_config={"value": st.column_config.TextColumn(alignment="right")})
        _show_figures(section["figures"], run)
        for table in section["tables"]:
            st.markdown(f"**{escape_markdown(table['title'])}**")
            if table["description"]:
                st.caption(escape_markdown(table["description"]))
            st.dataframe(_table_frame(table), hide_index=True)
        for note in section["notes"]:
            st.caption(f"Note: {escape_markdown(note)}")


def _table_frame(table: dict[str, Any]) -> Any:
    import pandas as pd

    columns = _unique_columns(table["columns"])
    width = len(columns)
    rows = [list(row[:width]) + [None] * (width - len(row)) for row in table["rows"]]
    frame = pd.DataFrame(rows, columns=columns)
    for column in frame.columns:  # mixed text/number columns upset Arrow: show them as text
        kinds = {type(v) for v in frame[column] if v is not None}
        if len(kinds) > 1 and str in kinds:
            frame[column] = frame[column].map(lambda v: "" if v is None else str(v))
    return frame


def _unique_columns(columns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for column in columns:
        seen[column] = seen.get(column, 0) + 1
        out.append(column if seen[column] == 1 else f"{column} ({seen[column]})")
    return out


def _show_figures(figures: list[dict[str, Any]], run: Path, *, title: bool = True) -> None:
    """Line, bar and heatmap figures as interactive charts; image figures as images."""
    if not figures:
        return
    if title:
        st.markdown("**Figures**")
    columns = st.columns(2)
    for index, spec in enumerate(figures):
        with columns[index % 2]:
            drawn = chart(spec) if spec.get("kind") in CHARTABLE else None
            if drawn is not None:
                st.altair_chart(drawn, width="stretch")
            else:
                st.image(_figure_bytes(spec, run), caption=escape_markdown(spec.get("title") or spec.get("name") or ""))


def show_verdict(results: dict[str, Any], run: Path | None) -> None:
    """The verdict first (``reports.headline.verdict_view``, as in the report): gate result (or not gated), failed
    sections, and the checks that did not pass."""
    judged = verdict_view(results, run)
    failed = [name for name, s in results.get("sections", {}).items() if s.get("status") == "error"]
    parts = [f"Verdict: {judged['label']}"]
    if judged["failing"]:
        parts.append(f"{len(judged['failing'])} failing check(s)")
    if judged["n_waived"]:
        parts.append(f"{judged['n_waived']} WAIVED")
    if judged["ungated_text"]:
        parts.append(judged["ungated_text"])
    if failed:
        parts.append(f"failed sections: {escape_markdown(', '.join(failed))}")
    line = " · ".join(parts)
    if judged["status"] in ("fail", "error") or failed:
        st.error(line, icon=":material/block:")
    elif judged["status"] == "pass" and judged["ungated"]:
        st.warning(line, icon=":material/warning:")
    elif judged["status"] == "pass" and run_state(results, run).status == "complete":
        st.success(line, icon=":material/check_circle:")
    else:
        st.info(line, icon=":material/help:")
    if judged["status"] == "not_gated":
        st.caption(NOT_GATED)
    elif judged["status"] != "pass":
        st.caption(escape_markdown(judged["text"]))
    if judged["failing"]:
        st.dataframe([{"check": c["name"], "status": c["status"], "value": c["value_text"] or "",
                       "threshold": c["threshold_text"] or "", "message": c["message"]} for c in judged["failing"]],
                     hide_index=True, column_config={"message": st.column_config.TextColumn(width="large")})
    show_waivers(judged)


def show_headline(results: dict[str, Any]) -> None:
    """The headline card (``reports.headline.headline_view``, as in the report) as metric cards: accuracy, robust
    accuracy per norm and eps with its reliability, the worst disparity, findings; then the most faithful method."""
    head = headline_view(results)
    cards: list[tuple[str, str, str | None]] = [(c["label"], c["text"], c["detail"]) for c in head["cards"]]
    reliability = head["reliability"]
    reliable = "reliability unknown" if reliability is None else \
        "reliable" if reliability["reliable"] else "NOT reliable (see below)"
    for item in head["robustness"]:
        label = f"Robust acc. {escape_markdown(item['norm'])} eps {escape_markdown(item['eps'])}"
        cards.append((label, item["text"] + (f" ({item['bound']})" if item.get("bound") else ""), reliable))
    if head["disparity"]:
        d = head["disparity"]
        interval = f" · 95% CI {d['interval_text']}" if d["interval_text"] else ""
        flagged = " · flagged" if d["flagged"] else ""
        cards.append(("Worst fairness disparity", d["text"], f"{d['grouping']}: {d['label']}{interval}{flagged}"))
    counts = head["finding_counts"]
    cards.append(("Findings", str(sum(counts.values())),
                  " · ".join(f"{counts.get(s, 0)} {s}" for s in SEVERITIES if counts.get(s)) or None))
    per_row = 4
    for start in range(0, len(cards), per_row):
        columns = st.columns(per_row)
        for column, (label, value, note) in zip(columns, cards[start:start + per_row], strict=False):
            with column:
                st.metric(label, value, border=True)
                if note:
                    st.caption(escape_markdown(note))
    if reliability is not None and not reliability["reliable"] and head["robustness"]:
        st.warning(f"Robust accuracy is NOT reliable: {escape_markdown(reliability['reason'] or 'see the findings')}")
    faithful = head["faithful"]
    if faithful:
        auc = f", deletion AUC {faithful['deletion_auc_text']}" if faithful["deletion_auc_text"] else ""
        st.markdown(f"Most faithful explanation method: **{escape_markdown(faithful['text'])}** (rank 1 of the "
                    f"deletion and insertion AUCs{escape_markdown(auc)})")


def show_overview(results: dict[str, Any], run: Path) -> None:
    key = [f for f in all_findings(results, min_severity="medium")][:8]
    st.subheader("Key findings")
    if key:
        for finding in key:  # as text: the whole message, wrapped, never Markdown
            value = f" ({finding['metric']} = {finding['value_text']})" if finding["metric"] and \
                finding["value_text"] else ""
            st.text(f"{finding['severity'].upper():<8} {finding['section'] or ''}: {finding['message']}{value}")
    else:
        st.caption("No finding of medium severity or worse.")
    sections = results.get("sections", {})
    curves = [spec for name, s in sections.items() for spec in s.get("figures", [])
              if str(spec.get("name", "")).startswith("robustness_curve")]
    if curves:
        st.subheader("Robustness")
        _show_figures(curves, run, title=False)
    disparities = [spec for s in sections.values() if s.get("plugin") in ("fairness", "builtin.fairness")
                   for spec in s.get("figures", [])
                   if str(spec.get("name", "")).startswith(("groups_", "robust_accuracy_"))]
    if disparities:
        st.subheader("Disparities")
        _show_figures(disparities, run, title=False)


def _findings_frame(findings: list[dict[str, Any]]) -> None:
    rows = [{"severity": f["severity"].upper(), "section": f["section"] or "", "message": f["message"],
             "metric": f["metric"] or "", "value": f["value_text"] or ""} for f in findings]
    st.dataframe(rows, hide_index=True, column_config={"message": st.column_config.TextColumn(width="large")})


def show_findings_view(results: dict[str, Any]) -> None:
    findings = all_findings(results)
    if not findings:
        st.info("This run has no findings.")
        return
    left, middle, right = st.columns([2, 2, 3])
    present = [s for s in SEVERITIES if any(f["severity"] == s for f in findings)]
    severities = left.multiselect("Severity", present, default=[s for s in present if s != "info"] or present,
                                  key="findings_severity")
    names = sorted({f["section"] for f in findings if f["section"]})
    sections = middle.multiselect("Section", names, key="findings_section", placeholder="every section")
    needle = right.text_input("Message contains", key="findings_text").strip().lower()
    chosen = [f for f in findings if f["severity"] in severities and (not sections or f["section"] in sections)
              and needle in f["message"].lower()]
    st.caption(f"{len(chosen)} of {len(findings)} findings")
    if chosen:
        _findings_frame(chosen)


def _view_choice() -> str:
    """The view, from the URL (?view=samples) on first load, kept in the URL when changed."""
    wanted = st.query_params.get("view", "overview")
    keys = list(VIEWS)
    index = keys.index(wanted) if wanted in keys else 0
    view = st.radio("View", keys, index=index, horizontal=True, key="run_view", format_func=VIEWS.__getitem__,
                    label_visibility="collapsed")
    if st.query_params.get("view") != view:
        st.query_params["view"] = view
    return str(view)


def show_run(run: Path, root: Path) -> None:
    try:
        results = _load(run)
    except ResultsError as err:
        st.error(BROKEN_RUN.format(label=escape_markdown(run_label(run, root)), error=escape_markdown(err)))
        return
    show_summary(results, run)
    view = _view_choice()
    if view == "overview":
        show_overview(results, run)
    elif view == "findings":
        show_findings_view(results)
    elif view == "samples":
        from reports.dashboard.explorer import show_explorer

        show_explorer(run, results)
    else:
        sections = section_views(results)
        if not sections:
            st.info("This run has no sections.")
        for section in sections:
            show_section(section, run)
    report = run / "report.html"
    if report.is_file():
        st.sidebar.download_button("Download report.html", report.read_bytes(), file_name="report.html",
                                   mime="text/html")


# -- compare view -----------------------------------------------------------------------------


def show_compare(runs: list[Path], root: Path) -> None:
    from reports.dashboard.compare import show_compare as show

    show({run_label(run, root): run for run in runs}, _load, BROKEN_RUN)


# -- page -------------------------------------------------------------------------------------


def store_url(environ: dict[str, str] | None = None) -> str | None:
    """The results store of the history view: ``$NNAUDIT_STORE`` (``nnaudit dashboard --store URL`` sets it)."""
    from audit.engine.store_url import STORE_ENV, normalize_store_url

    value = (os.environ if environ is None else environ).get(STORE_ENV, "").strip()
    return normalize_store_url(value) if value else None


def main() -> None:
    st.set_page_config(page_title="nnaudit dashboard", layout="wide")
    root = runs_dir()
    store = store_url()
    st.sidebar.title("nnaudit")
    st.sidebar.caption(f"Runs in {escape_markdown(root)}")
    runs = find_runs(root)
    if not runs and store is None:
        st.info(NO_RUNS.format(root=escape_markdown(root.as_posix())))
        return
    views = ([VIEW_RUN, VIEW_COMPARE] if runs else []) + ([VIEW_HISTORY] if store is not None else [])
    view = st.sidebar.radio("View", views, key="view")
    if view == VIEW_HISTORY and store is not None:
        from reports.dashboard.history import show_history

        show_history(store, _load, BROKEN_RUN)
        return
    if view == VIEW_COMPARE:
        show_compare(runs, root)
        return
    labels = {run_label(run, root): run for run in runs}
    wanted = st.query_params.get("run")  # a link to one run: ?run=LABEL (&view=samples)
    names = list(labels)
    chosen = st.sidebar.selectbox("Run", names, key="run", index=names.index(wanted) if wanted in names else 0)
    if st.query_params.get("run") != chosen:
        st.query_params["run"] = chosen
    show_run(labels[chosen], root)


if __name__ == "__main__":
    main()
