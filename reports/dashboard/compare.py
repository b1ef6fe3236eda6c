"""The compare view: pick a base and a candidate run and read what changed, worst first.

Built on the comparison library (``audit.decide.compare.compare_run_dirs``, as ``nnaudit compare`` without a
policy): metric deltas with each metric's direction of better, significance from the paired bootstrap
over the per-sample outcomes both runs saved (and why not where it is unavailable), regressions first.
The rows come from ``reports.compare.comparison_view``; every string is shown as text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from audit.errors import ResultsError
from audit.results import RESULTS_FILE
from reports.compare import comparison_view
from reports.text import escape_markdown

PICK_TWO = "Pick two different runs: a base and a candidate."
NEED_TWO = "Compare needs two runs; this directory holds one."
NO_CHANGE_MATCH = "No metric matches the filter."
COLUMNS = ("metric", "base", "candidate", "delta", "direction", "change", "significance")


def _version(run: Path) -> tuple[int, int]:
    try:
        stat = (run / RESULTS_FILE).stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@functools.cache
def _comparer() -> Callable[[str, str, tuple[int, int], tuple[int, int]], dict[str, Any]]:
    """``Comparison.to_dict()`` per (base, candidate, file versions), made on first use (importing stays silent)."""

    @st.cache_data(show_spinner="Comparing the runs…", max_entries=16)
    def compare(base: str, candidate: str, base_version: tuple[int, int],
                candidate_version: tuple[int, int]) -> dict[str, Any]:
        from audit.decide.compare import compare_run_dirs

        return compare_run_dirs(base, candidate).to_dict()

    return compare


def show_compare(labels: dict[str, Path], load: Callable[[Path], dict[str, Any]], broken: str) -> None:
    """The view. ``labels``: run label -> directory, newest first; ``load`` reads and validates a run's results
    (raises ``ResultsError``); ``broken``: the message for a run that cannot be read ({label}, {error})."""
    st.title("Compare runs")
    names = list(labels)
    if len(names) < 2:
        st.info(NEED_TWO)
        return
    left, right = st.columns(2)
    base = left.selectbox("Base run", names, index=1, key="compare_base")
    candidate = right.selectbox("Candidate run", names, index=0, key="compare_candidate")
    if base == candidate:
        st.info(PICK_TWO)
        return
    for label in (base, candidate):
        try:
            load(labels[label])
        except ResultsError as err:
            st.error(broken.format(label=escape_markdown(label), error=escape_markdown(err)))
            return
    try:
        data = _comparer()(str(labels[base]), str(labels[candidate]), _version(labels[base]),
                           _version(labels[candidate]))
    except ResultsError as err:
        st.error(f"Cannot compare: {escape_markdown(err)}")
        return
    view = comparison_view(data)
    _show_verdict(view)
    _show_rows(view)


def _show_verdict(view: dict[str, Any]) -> None:
    line = (f"Compare: {view['verdict']} (exit {view['exit_code']}) · {view['regressions']} significant "
            f"regression(s) · {view['improvements']} significant improvement(s) · {view['changed']} metric(s) changed")
    if view["exit_code"] == 1:
        st.error(line, icon=":material/trending_down:")
    elif view["exit_code"] == 0:
        st.success(line, icon=":material/check_circle:")
    else:
        st.warning(line, icon=":material/help:")
    pairing = view["pairing"]
    if pairing["available"]:
        st.caption(escape_markdown(f"Significance: {pairing['reason']}; paired bootstrap, {view['resamples']} "
                                   f"resamples, Holm-adjusted at alpha {view['alpha']}."))
    else:
        st.caption(escape_markdown(f"Significance unavailable: {pairing['reason']}."))
    differences = "; ".join(view["differences"]) or "none (same model, data, seed and section parameters)"
    st.caption(escape_markdown(f"Setup differences: {differences}"))
    if view["checks"]:
        st.dataframe(view["checks"], hide_index=True,
                     column_config={"message": st.column_config.TextColumn(width="large")})


def _show_rows(view: dict[str, Any]) -> None:
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    needle = left.text_input("Filter metrics", placeholder="e.g. robust_accuracy", key="compare_filter")
    only_changed = right.checkbox("Only changed metrics", value=True, key="compare_only_changed")
    rows = [r for r in view["rows"] if (r["changed"] or not only_changed)
            and needle.strip().lower() in r["metric"].lower()]
    if not rows:
        st.info(NO_CHANGE_MATCH)
        return
    st.caption(f"{len(rows)} of {len(view['rows'])} metrics (candidate − base; regressions first)")
    st.dataframe([{c: r[c] for c in COLUMNS} for r in rows], hide_index=True,
                 height=min(700, 35 * (len(rows) + 1) + 3),
                 column_config={"significance": st.column_config.TextColumn(width="large")})
