"""Interactive (Vega-Lite, through altair, which ships with streamlit) charts from the figure data specs.

The same specs ``reports.figures`` draws as static images for the HTML report: ``line``, ``bar``
and ``heatmap`` become charts with tooltips, zoom and a legend that toggles series; ``image``
figures stay images. Text from the specs (titles, labels) is drawn by Vega as text, never HTML.
Accuracy-like axes (a y-label naming accuracy, rate or recall, every value in [0, 1]) span 0 to 1,
so a 3-point drop does not look like a cliff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CHARTABLE = ("line", "bar", "heatmap")
_UNIT_WORDS = ("accuracy", "rate", "recall", "precision", "probability", "share", "similarity", "auc")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def series_frame(spec: Mapping[str, Any]) -> Any:
    """The spec's series as one long table: series, x, y, low, high (error bounds as absolute values)."""
    import pandas as pd

    rows = []
    for index, item in enumerate(spec.get("series") or []):
        label = str(item.get("label") or f"series {index + 1}")
        xs = list(item.get("x") or range(len(item.get("y") or [])))
        ys = list(item.get("y") or [])
        lows = list(item.get("yerr_low") or item.get("yerr_high") or [None] * len(ys))
        highs = list(item.get("yerr_high") or item.get("yerr_low") or [None] * len(ys))
        for x, y, low, high in zip(xs, ys, lows + [None] * len(ys), highs + [None] * len(ys), strict=False):
            value, d_low, d_high = _number(y), _number(low), _number(high)
            rows.append({"series": label, "x": x if _number(x) is None else _number(x), "y": value,
                         "low": None if value is None or d_low is None else value - d_low,
                         "high": None if value is None or d_high is None else value + d_high})
    return pd.DataFrame(rows, columns=["series", "x", "y", "low", "high"])


def unit_axis(spec: Mapping[str, Any], frame: Any) -> bool:
    label = str(spec.get("ylabel") or spec.get("title") or "").lower()
    values = [v for column in ("y", "low", "high") for v in frame[column].dropna().tolist()]
    return any(word in label for word in _UNIT_WORDS) and bool(values) and min(values) >= 0 and max(values) <= 1


def chart(spec: Mapping[str, Any]) -> Any:
    """An altair chart for a line, bar or heatmap spec; ``None`` for other kinds or an empty spec."""
    kind = spec.get("kind")
    if kind == "heatmap":
        return _heatmap(spec)
    if kind not in ("line", "bar"):
        return None
    import altair as alt

    frame = series_frame(spec)
    if frame.empty or frame["y"].isna().all():
        return None
    numeric_x = all(isinstance(v, float) for v in frame["x"])
    if not numeric_x:
        frame["x"] = frame["x"].map(str)
    x_title, y_title = str(spec.get("xlabel") or ""), str(spec.get("ylabel") or "")
    scale = alt.Scale(domain=[0, 1]) if unit_axis(spec, frame) else alt.Scale(zero=kind == "bar")
    y = alt.Y("y:Q", title=y_title, scale=scale)
    color = alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=3, labelLimit=220))
    select = alt.selection_point(fields=["series"], bind="legend")
    tooltip = [alt.Tooltip("series:N"), alt.Tooltip("x", title=x_title or "x"), alt.Tooltip("y:Q", format=".4~g"),
               alt.Tooltip("low:Q", format=".4~g"), alt.Tooltip("high:Q", format=".4~g")]
    opacity = alt.condition(select, alt.value(1.0), alt.value(0.15))
    base = alt.Chart(frame)
    if kind == "line":
        x = alt.X("x:Q" if numeric_x else "x:N", title=x_title, sort=None)
        band = base.mark_area(opacity=0.15).encode(x=x, y="low:Q", y2="high:Q", color=color, opacity=opacity)
        line = base.mark_line(point=True).encode(x=x, y=y, color=color, tooltip=tooltip, opacity=opacity)
        layers = [band, line] if frame["low"].notna().any() else [line]
    else:
        x = alt.X("x:N", title=x_title, sort=None, axis=alt.Axis(labelAngle=-30, labelLimit=160))
        offset = alt.XOffset("series:N")
        bars = base.mark_bar().encode(x=x, xOffset=offset, y=y, color=color, tooltip=tooltip, opacity=opacity)
        rules = base.mark_rule().encode(x=x, xOffset=offset, y="low:Q", y2="high:Q", opacity=opacity)
        layers = [bars, rules] if frame["low"].notna().any() else [bars]
    title = alt.TitleParams(str(spec.get("title") or spec.get("name") or ""), anchor="start", fontSize=13)
    return alt.layer(*layers).add_params(select).properties(title=title, height=280).interactive(bind_y=False)


def _heatmap(spec: Mapping[str, Any]) -> Any:
    import altair as alt
    import pandas as pd

    matrix: Sequence[Sequence[Any]] = spec.get("matrix") or []
    if not matrix or not matrix[0]:
        return None
    x_labels = [str(v) for v in spec.get("x_labels") or range(len(matrix[0]))]
    y_labels = [str(v) for v in spec.get("y_labels") or range(len(matrix))]
    rows = [{"row": y_labels[i], "column": x_labels[j], "value": _number(v)}
            for i, row in enumerate(matrix) for j, v in enumerate(row) if i < len(y_labels) and j < len(x_labels)]
    frame = pd.DataFrame(rows)
    x = alt.X("column:N", title=str(spec.get("xlabel") or ""), sort=x_labels)
    y = alt.Y("row:N", title=str(spec.get("ylabel") or ""), sort=y_labels)
    cells = alt.Chart(frame).mark_rect().encode(x=x, y=y, color=alt.Color("value:Q", scale=alt.Scale(scheme="blues")),
                                                tooltip=["row", "column", alt.Tooltip("value:Q", format=".4~g")])
    layers = [cells]
    if len(rows) <= 400:
        text = alt.Chart(frame).mark_text(fontSize=10).encode(x=x, y=y, text=alt.Text("value:Q", format=".3~g"))
        layers.append(text)
    title = alt.TitleParams(str(spec.get("title") or spec.get("name") or ""), anchor="start", fontSize=13)
    side = max(220, min(560, 28 * len(y_labels)))
    return alt.layer(*layers).properties(title=title, height=side)
