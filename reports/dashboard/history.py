"""The history view (``nnaudit dashboard --store URL``, or ``$NNAUDIT_STORE``): a model's runs from the results
store over time.

- metric trends across the model's runs and versions: robust accuracy, the worst fairness disparity, explanation
  faithfulness and shift metrics when the runs have them (``reports.history.trend_specs``, charted as the
  report's line figures are, by ``reports.dashboard.charts``);
- the verdict timeline (``reports.history.verdict_timeline``);
- pick two runs to open the compare view on them (``reports.dashboard.compare``).

Read-only: the store is opened without migrating it. Every string is shown as text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from reports.dashboard.charts import chart
from reports.history import point_label, trend_metrics, trend_specs, verdict_timeline
from reports.text import escape_markdown

NO_STORE_RUNS = "No runs in the results store {store} yet: `nnaudit run CONFIG --store URL` registers one."
STORE_ERROR = "Cannot read the results store: {error}"
PICK_TWO = "Pick two runs of the timeline to compare them."
MISSING_DIR = "Run {label} was registered from {path}, which is not on this machine any more: it cannot be compared."


def _read(url: str, model: str | None) -> tuple[str, list[str], list[dict[str, Any]]]:
    """The store's display name, its model names, and the runs of ``model`` (every model's when None) with the
    trend metrics, oldest first."""
    from audit.engine.store import open_store

    with open_store(url, migrate=False) as store:
        models = store.model_names()
        chosen = model if model in models else (models[0] if models else None)
        if chosen is None:
            return store.display, models, []
        names = trend_metrics(store.metric_names(model=chosen))
        runs = [run.to_dict() for run in store.runs(model=chosen, metrics=names)]
        return store.display, models, runs


def show_history(url: str, load: Callable[[Path], dict[str, Any]], broken: str) -> None:
    """The view. ``load`` and ``broken`` as ``reports.dashboard.compare.show_compare`` takes them."""
    from audit.errors import StoreError

    st.title("History")
    try:
        display, models, _ = _read(url, None)
        if not models:
            st.info(NO_STORE_RUNS.format(store=escape_markdown(display)))
            return
        model = st.selectbox("Model", models, key="history_model")
        display, models, runs = _read(url, model)
    except StoreError as err:
        st.error(STORE_ERROR.format(error=escape_markdown(err)))
        return
    st.caption(escape_markdown(f"{len(runs)} run(s) of {model} in {display}, oldest first"))
    specs = trend_specs(runs)
    if not specs:
        st.info("These runs have no robustness, fairness, explanation or shift metrics to chart.")
    for spec in specs:
        drawn = chart(spec)
        if drawn is not None:
            st.altair_chart(drawn, width="stretch")
    st.subheader("Verdict timeline")
    timeline = verdict_timeline(runs)
    st.dataframe(timeline, hide_index=True, column_config={"directory": st.column_config.TextColumn(width="large")})
    labels = {point_label(run): run for run in runs}
    picked = st.multiselect("Compare two runs", list(labels), max_selections=2, key="history_compare",
                            placeholder="pick two runs")
    if len(picked) < 2:
        st.caption(PICK_TWO)
        return
    chosen = sorted(picked, key=list(labels).index, reverse=True)  # newest first: the candidate
    dirs = {label: Path(str(labels[label]["run_dir"])) for label in chosen}
    for label, path in dirs.items():
        if not (path / "results.json").is_file():
            st.warning(MISSING_DIR.format(label=escape_markdown(label), path=escape_markdown(path)))
            return
    from reports.dashboard.compare import show_compare

    show_compare(dirs, load, broken)
