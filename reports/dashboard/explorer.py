"""The sample explorer: pick a sample (filter by class, group, fooled or not) and see it clean and attacked,
both predictions with confidences, and every method's attribution side by side (images) or as a table (tabular).

Data comes from ``reports.dashboard.samples``, loaded on first use of this view and cached per run
and results file version, so the rest of the dashboard never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from audit.results import RESULTS_FILE
from reports.dashboard.samples import Samples, SamplesUnavailable, attribution_image, load_samples, to_image, upscale
from reports.dashboard.text_samples import show_text_sample
from reports.text import escape_markdown

ALL = "all"
FOOLED_CHOICES = ("any", "fooled", "not fooled")
MAX_LISTED = 500
TOP_CLASSES = 5


@st.cache_resource(show_spinner="Loading per-sample records…", max_entries=8)
def _cached(run_dir: str, stamp: float, _results: dict[str, Any]) -> Samples:
    return load_samples(run_dir, _results)


def _samples(run: Path, results: dict[str, Any]) -> Samples:
    stamp = (run / RESULTS_FILE).stat().st_mtime if (run / RESULTS_FILE).exists() else 0.0
    return _cached(str(run.resolve()), stamp, results)


def _percent(p: float) -> str:
    return "n/a" if not np.isfinite(p) else f"{100 * p:.1f}%"


def _filters(samples: Samples) -> tuple[np.ndarray, str | None]:
    """The controls; returns (matching rows, the chosen adversarial setting key)."""
    mask = np.ones(samples.n, dtype=bool)
    keys = list(samples.adversarial)
    columns = st.columns(4)
    key = None
    if keys:
        def setting(k: str) -> str:
            return f"{samples.adversarial[k].norm} eps={samples.adversarial[k].eps:g}"

        key = columns[0].selectbox("Attack setting", keys, index=len(keys) // 2, key="explore_attack",
                                   format_func=setting)
    classes = columns[1].multiselect("True class", samples.class_names, key="explore_class",
                                     placeholder="any class")
    if classes:
        wanted = [samples.class_names.index(c) for c in classes]
        mask &= np.isin(samples.y, wanted)
    fooled_choice = columns[2].selectbox("Fooled by the attack", FOOLED_CHOICES, key="explore_fooled",
                                         disabled=key is None)
    if key is not None and fooled_choice != "any":
        mask &= samples.fooled(key) == (1 if fooled_choice == "fooled" else 0)
    explained_rows: set[int] = set()
    for attribution in samples.attributions.values():
        explained_rows.update(int(r) for r in attribution.rows)
    only_explained = columns[3].checkbox("Only explained samples", value=bool(explained_rows), key="explore_explained",
                                         disabled=not explained_rows,
                                         help="attributions were computed for a subset of the samples")
    if only_explained and explained_rows:
        mask &= np.isin(np.arange(samples.n), sorted(explained_rows))
    if samples.groups:
        group_columns = st.columns(max(len(samples.groups), 2))
        for column, (name, values) in zip(group_columns, samples.groups.items(), strict=False):
            options = [ALL, *sorted({str(v) for v in values})]
            chosen = column.selectbox(f"Group: {escape_markdown(name)}", options, key=f"explore_group_{name}")
            if chosen != ALL:
                mask &= values.astype(str) == chosen
    rows = np.flatnonzero(mask)
    if key is not None:  # attacked samples first: they show the most
        attacked = np.isin(rows, samples.adversarial[key].rows)
        rows = np.concatenate([rows[attacked], rows[~attacked]])
    return rows, key


def _row_label(samples: Samples, row: int, key: str | None) -> str:
    pred = samples.pred
    label = f"#{row} · true {samples.class_names[samples.y[row]]} · predicted {samples.class_names[pred[row]]}"
    if key is not None:
        fooled = samples.fooled(key)[row]
        label += {1: " · fooled", 0: " · not fooled", -1: ""}[int(fooled)]
    return label


def show_explorer(run: Path, results: dict[str, Any]) -> None:
    try:
        samples = _samples(run, results)
    except (SamplesUnavailable, OSError, KeyError, ValueError) as err:
        st.info(f"No sample explorer for this run: {escape_markdown(err)}")
        return
    rows, key = _filters(samples)
    if not len(rows):
        st.info("No sample matches these filters.")
        return
    listed = rows[:MAX_LISTED]
    caption = f"{len(rows)} matching samples" + (f" (the first {MAX_LISTED} listed)" if len(rows) > MAX_LISTED else "")
    row = st.selectbox("Sample", [int(r) for r in listed], key="explore_sample",
                       format_func=lambda r: _row_label(samples, r, key), help=caption)
    st.caption(caption)
    adv = samples.adversarial.get(key) if key is not None else None
    position = adv.position(row) if adv is not None else None
    x_adv = adv.x_adv[position] if adv is not None and position is not None else None
    proba_adv = adv.proba[position] if adv is not None and adv.proba is not None and position is not None else None
    table = _predictions(samples, row, proba_adv, adv is not None and position is not None)
    if samples.modality == "text":  # adversarial texts beside the original (text_samples.py), token heatmaps
        _probabilities(table)
        show_text_sample(run, results, row, samples.class_names)
        _tokens(run, results, row)
    elif samples.modality == "image":
        _images(samples, row, x_adv, adv, table)
    else:
        _probabilities(table)
        _features(samples, row, x_adv)


def _predictions(samples: Samples, row: int, proba_adv: np.ndarray | None, attacked: bool) -> dict[str, Any]:
    """The three headline cards; returns the top classes' probabilities (clean and adversarial) as a table."""
    names, clean = samples.class_names, samples.proba[row]
    true = int(samples.y[row])
    columns = st.columns(3)
    columns[0].metric("True class", escape_markdown(names[true]))
    pred = int(np.argmax(clean))
    columns[1].metric("Clean prediction", escape_markdown(names[pred]))
    columns[1].caption(f"confidence {_percent(float(clean[pred]))}")
    if proba_adv is not None and np.isfinite(proba_adv).all():
        adv_pred = int(np.argmax(proba_adv))
        columns[2].metric("Adversarial prediction", escape_markdown(names[adv_pred]))
        columns[2].caption(f"confidence {_percent(float(proba_adv[adv_pred]))}")
    elif attacked:
        columns[2].metric("Adversarial prediction", "n/a")
        columns[2].caption("probabilities not saved by this run, or not finite")
    else:
        columns[2].metric("Adversarial prediction", "not attacked")
    top = np.argsort(-clean)[:TOP_CLASSES]
    if proba_adv is not None:
        top = np.unique(np.concatenate([top, np.argsort(-np.nan_to_num(proba_adv))[:TOP_CLASSES]]))
        top = top[np.argsort(-clean[top])]
    table = {"class": [names[i] for i in top], "clean": [float(clean[i]) for i in top]}
    if proba_adv is not None:
        table["adversarial"] = [float(proba_adv[i]) for i in top]
    return table


def _probabilities(table: dict[str, Any]) -> None:
    st.dataframe(table, hide_index=True, column_config={
        "clean": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
        "adversarial": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")})


def _images(samples: Samples, row: int, x_adv: np.ndarray | None, adv: Any, table: dict[str, Any]) -> None:
    clean = samples.x[row]
    tiles: list[tuple[str, np.ndarray]] = [("clean input", to_image(clean))]
    if x_adv is not None:
        tiles.append((f"adversarial ({adv.norm} eps={adv.eps:g})", to_image(x_adv)))
        delta = np.asarray(x_adv, dtype=np.float64) - clean
        size = np.abs(delta).max() if adv.norm == "linf" else np.sqrt((delta**2).sum())
        tiles.append((f"perturbation, {adv.norm} size {size:.3g} (red +, blue −)", attribution_image(delta)))
    if adv is not None and x_adv is None:
        st.info(f"This sample was not attacked: the robustness section attacked {len(adv.rows)} of {samples.n} "
                "samples (max_samples).")
    columns = st.columns([1] * len(tiles) + [1.6])
    for column, (caption, image) in zip(columns, tiles, strict=False):
        column.image(upscale(image), caption=escape_markdown(caption), width="stretch", clamp=True)
    with columns[-1]:
        _probabilities(table)
    if not samples.attributions:
        st.info("This run saved no attributions.")
        return
    st.markdown("**Attributions** (red: towards the explained class, blue: against it)")
    explained = [(m, a, a.position(row)) for m, a in samples.attributions.items()]
    shown = [(m, a, p) for m, a, p in explained if p is not None]
    if not shown:
        st.info("This sample was not explained (attributions cover a subset: tick 'Only explained samples').")
        return
    columns = st.columns(min(len(shown), 4))
    for index, (method, attribution, position) in enumerate(shown):
        target = samples.class_names[int(attribution.target[position])]
        columns[index % len(columns)].image(upscale(attribution_image(attribution.values[position])), width=160,
                                            caption=escape_markdown(f"{method} (class {target})"), clamp=True)


def _tokens(run: Path, results: dict[str, Any], row: int) -> None:
    """Text: the sample's tokens coloured by every method's attribution (the one renderer draws them)."""
    from reports.figures import figure_png
    from reports.tokens import explained_text_spec

    spec = explained_text_spec(run, results, row)
    if spec is None:
        st.caption("This sample was not explained: no token attributions (tick 'Only explained samples').")
        return
    st.image(figure_png(spec), caption=escape_markdown(spec["title"]))


def _features(samples: Samples, row: int, x_adv: np.ndarray | None) -> None:
    clean = np.asarray(samples.x[row]).reshape(-1)
    names = samples.feature_names or [f"feature {i}" for i in range(clean.size)]
    table: dict[str, Any] = {"feature": names, "clean": clean.astype(float)}
    if x_adv is not None:
        adv = np.asarray(x_adv).reshape(-1).astype(float)
        table["adversarial"] = adv
        table["change"] = adv - clean
    for method, attribution in samples.attributions.items():
        position = attribution.position(row)
        if position is not None:
            table[method] = np.asarray(attribution.values[position]).reshape(-1).astype(float)
    import pandas as pd

    frame = pd.DataFrame(table)
    methods = [m for m in samples.attributions if m in frame.columns]
    order = frame[methods].abs().max(axis=1) if methods else frame.get("change", frame["clean"]).abs()
    frame = frame.loc[order.sort_values(ascending=False).index]
    if not methods:
        st.caption("This sample was not explained: no attribution columns (tick 'Only explained samples').")
    st.caption("Features sorted by the largest attribution magnitude across methods.")
    st.dataframe(frame, hide_index=True, height=min(36 * (len(frame) + 1), 600),
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in frame.columns
                                if c != "feature"})
