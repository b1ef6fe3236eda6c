"""The chart figure kinds drawn with matplotlib: heatmap, line, bar, histogram, image and small multiples.

``reports.figures`` dispatches a spec here by its kind (and draws image grids and trees itself);
the helpers below (a pyplot-free figure, wrapped titles, axis styling) are shared with it. Every
figure is a ``matplotlib.figure.Figure`` built without pyplot: no global state, no GUI backend.

Error bars and bands: ``yerr_low`` / ``yerr_high`` are distances below and above ``y``
(non-negative, like matplotlib's ``yerr``), not absolute bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
CHART_HEIGHT = 3.3  # inches, for a 6.4-inch-wide line or bar chart
MAX_ANNOTATED_CELLS = 400
SERIES_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
NO_ARTIFACT = "image figure has no 'artifact' path"
ARTIFACT_MISSING = "artifact {path} not found in the run directory"
ARTIFACT_OUTSIDE = "artifact {path} points outside the run directory"
NO_RUN_DIR = "image figure needs the run directory to find {path}"


class FigureSpecError(ValueError):
    """A figure spec cannot be drawn; the message says why."""


# -- helpers --------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def wrap_text(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _floats(values: Sequence[Any] | None, length: int | None = None) -> list[float]:
    """Numbers with ``None`` as NaN (matplotlib leaves gaps there)."""
    out = [math.nan if v is None else float(v) for v in (values or [])]
    if length is not None and out and len(out) != length:
        raise FigureSpecError(f"got {len(out)} values for {length} points")
    return out


def decorate(ax: Axes, spec: Mapping[str, Any]) -> None:
    ax.set_title(str(spec.get("title", "")), fontsize=11, loc="left")
    if spec.get("xlabel"):
        ax.set_xlabel(str(spec["xlabel"]))
    if spec.get("ylabel"):
        ax.set_ylabel(str(spec["ylabel"]))


def _style_axes(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def _series(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    series = spec.get("series")
    if not series:
        raise FigureSpecError("figure has no 'series'")
    return list(series)


def _is_categorical(xs: Sequence[Any]) -> bool:
    return any(isinstance(x, str) for x in xs)


def _tick_rotation(labels: Sequence[str]) -> int:
    longest = max((len(label) for label in labels), default=0)
    return 45 if len(labels) > 24 or longest * len(labels) > 50 else 0


def _set_category_ticks(ax: Axes, labels: Sequence[str]) -> None:
    rotation = _tick_rotation(labels)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation else "center")


# -- heatmap --------------------------------------------------------------------------------


def _heatmap(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    import numpy as np

    rows = spec.get("matrix")
    if not rows:
        raise FigureSpecError("heatmap has no 'matrix'")
    width = len(rows[0])
    if width == 0:
        raise FigureSpecError("heatmap 'matrix' is empty")
    if any(len(row) != width for row in rows):
        raise FigureSpecError("heatmap 'matrix' rows differ in length")
    matrix = np.ma.masked_invalid(np.array([_floats(row) for row in rows], dtype=float))
    n_rows, n_cols = matrix.shape
    x_labels = [str(v) for v in spec.get("x_labels") or range(n_cols)]
    y_labels = [str(v) for v in spec.get("y_labels") or range(n_rows)]
    if len(x_labels) != n_cols or len(y_labels) != n_rows:
        raise FigureSpecError(f"heatmap is {n_rows}×{n_cols} but has {len(y_labels)} y_labels "
                              f"and {len(x_labels)} x_labels")
    side = min(9.0, max(4.2, 0.45 * max(n_rows, n_cols) + 2.4))
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.85)
    _set_category_ticks(ax, x_labels)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(y_labels)
    if n_rows * n_cols <= MAX_ANNOTATED_CELLS:
        _annotate(ax, matrix)
    decorate(ax, spec)
    return fig


def _annotate(ax: Axes, matrix: Any) -> None:
    import numpy as np

    data = matrix.filled(np.nan)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    integers = bool(np.all(np.mod(finite, 1) == 0))
    n_rows, n_cols = data.shape
    size = 9 if max(n_rows, n_cols) <= 10 else 7
    for i in range(n_rows):
        for j in range(n_cols):
            value = data[i, j]
            if not math.isfinite(value):
                continue
            share = (value - low) / (high - low) if high > low else 0.0
            text = f"{int(value)}" if integers else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if share > 0.6 else "#111827")


# -- line and bar ---------------------------------------------------------------------------


def _x_positions(series: Sequence[Mapping[str, Any]]) -> tuple[list[str] | None, list[list[float]]]:
    """Numeric x values per series, or shared category positions when any x is text."""
    all_x = [list(s.get("x", [])) for s in series]
    if not any(_is_categorical(xs) for xs in all_x):
        return None, [_floats(xs) for xs in all_x]
    categories: dict[str, int] = {}
    for xs in all_x:
        for x in xs:
            categories.setdefault(str(x), len(categories))
    return list(categories), [[float(categories[str(x)]) for x in xs] for xs in all_x]


def _line(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    fig = new_figure(6.4, CHART_HEIGHT)
    _draw_line(fig.add_subplot(), spec)
    return fig


def _draw_line(ax: Axes, spec: Mapping[str, Any], *, legend: bool = True) -> None:
    series = _series(spec)
    categories, positions = _x_positions(series)
    for index, (item, xs) in enumerate(zip(series, positions, strict=True)):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        ys = _floats(item.get("y"), len(xs))
        _plot_line(ax, xs, ys, item, color)
        if item.get("yerr_low") is not None or item.get("yerr_high") is not None:
            low = _floats(item.get("yerr_low") or item.get("yerr_high"), len(xs))
            high = _floats(item.get("yerr_high") or item.get("yerr_low"), len(xs))
            ax.fill_between(xs, [y - d for y, d in zip(ys, low, strict=True)],
                            [y + d for y, d in zip(ys, high, strict=True)], color=color, alpha=0.18, linewidth=0)
    if spec.get("diagonal"):
        ax.axline((0.0, 0.0), slope=1.0, color="#9ca3af", linestyle="--", linewidth=1, label="y = x")
        _unit_limits(ax, positions, series)
    if categories is not None:
        _set_category_ticks(ax, categories)
    _apply_ylim(ax, spec)
    _style_axes(ax)
    decorate(ax, spec)
    if legend and (len(series) > 1 or spec.get("diagonal") or series[0].get("label")):
        ax.legend(frameon=False, fontsize=8)


def _apply_ylim(ax: Axes, spec: Mapping[str, Any]) -> None:
    """``ylim: [low, high]`` fixes the y-axis (accuracies on 0..1, so a 3-point drop looks like one)."""
    ylim = spec.get("ylim")
    if ylim is None:
        return
    low, high = (float(v) for v in ylim)
    if not low < high:
        raise FigureSpecError(f"ylim {list(ylim)} must be [low, high] with low < high")
    pad = 0.02 * (high - low)
    ax.set_ylim(low - pad, high + pad)


def _unit_limits(ax: Axes, positions: list[list[float]], series: Sequence[Mapping[str, Any]]) -> None:
    """Reliability diagrams: show the whole unit square when every point lies in it."""
    values = [v for xs in positions for v in xs] + [v for s in series for v in _floats(s.get("y"))]
    finite = [v for v in values if math.isfinite(v)]
    if finite and all(0.0 <= v <= 1.0 for v in finite):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)


def _plot_line(ax: Axes, xs: list[float], ys: list[float], item: Mapping[str, Any], color: str) -> None:
    label = str(item.get("label", ""))
    style = item.get("style")
    if style:
        try:
            ax.plot(xs, ys, str(style), color=color, label=label, linewidth=1.8, markersize=5)
            return
        except ValueError:
            pass  # not a matplotlib format string: fall back to the default style
    ax.plot(xs, ys, "-", color=color, label=label, linewidth=1.8, marker="o" if len(xs) <= 30 else None,
            markersize=4)


def _bar(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    series = _series(spec)
    _, positions = _x_positions(series)
    n_points = max(len(xs) for xs in positions)
    if spec.get("horizontal"):
        fig = new_figure(6.4, max(2.4, 0.22 * n_points * len(series) + 1.2))
    else:
        fig = new_figure(min(8.0, max(6.4, 0.2 * n_points * len(series) + 2)), CHART_HEIGHT)
    _draw_bar(fig.add_subplot(), spec)
    return fig


def _draw_bar(ax: Axes, spec: Mapping[str, Any], *, legend: bool = True) -> None:
    series = _series(spec)
    categories, positions = _x_positions(series)
    n = len(series)
    width = 0.8 / n
    horizontal = bool(spec.get("horizontal"))
    numeric_gaps = [b - a for xs in positions for a, b in zip(sorted(xs), sorted(xs)[1:], strict=False) if b > a]
    step = min(numeric_gaps) if categories is None and numeric_gaps else 1.0
    for index, (item, xs) in enumerate(zip(series, positions, strict=True)):
        offset = (index - (n - 1) / 2) * width * step
        ys = _floats(item.get("y"), len(xs))
        err = _bar_errors(item, len(xs))
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        label = str(item.get("label", ""))
        style = {"elinewidth": 1, "ecolor": "#374151"}
        if horizontal:
            ax.barh([x + offset for x in xs], ys, height=width * step, xerr=err, capsize=2 if err else 0,
                    color=color, label=label, error_kw=style)
        else:
            ax.bar([x + offset for x in xs], ys, width=width * step, yerr=err, capsize=3 if err else 0,
                   color=color, label=label, error_kw=style)
    if categories is not None and horizontal:
        ax.set_yticks(range(len(categories)))
        ax.set_yticklabels(categories, fontsize=8)
        ax.invert_yaxis()  # the first category on top
    elif categories is not None:
        _set_category_ticks(ax, categories)
    if not horizontal:
        _apply_ylim(ax, spec)
    _style_axes(ax)
    ax.grid(False, axis="y" if horizontal else "x")
    decorate(ax, spec)
    if horizontal:  # the value axis is x
        ax.set_xlabel(str(spec.get("ylabel", "")))
        ax.set_ylabel(str(spec.get("xlabel", "")))
    if legend and n > 1:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _bar_errors(item: Mapping[str, Any], length: int) -> list[list[float]] | None:
    low, high = item.get("yerr_low"), item.get("yerr_high")
    if low is None and high is None:
        return None
    lows = _floats(low if low is not None else high, length)
    highs = _floats(high if high is not None else low, length)
    return [[0.0 if math.isnan(v) else v for v in lows], [0.0 if math.isnan(v) else v for v in highs]]


# -- image ----------------------------------------------------------------------------------


def resolve_artifact(run_dir: Path | None, artifact: str | None) -> Path:
    """The artifact's path inside ``run_dir``; ``FigureSpecError`` if absent or outside it."""
    if not artifact:
        raise FigureSpecError(NO_ARTIFACT)
    if run_dir is None:
        raise FigureSpecError(NO_RUN_DIR.format(path=artifact))
    root = run_dir.resolve()
    path = (root / artifact).resolve()
    if not path.is_relative_to(root):
        raise FigureSpecError(ARTIFACT_OUTSIDE.format(path=artifact))
    if not path.is_file():
        raise FigureSpecError(ARTIFACT_MISSING.format(path=artifact))
    return path


def _image(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    from matplotlib import image as mpimg

    path = resolve_artifact(run_dir, spec.get("artifact"))
    pixels = mpimg.imread(path, format="png")
    height, width = pixels.shape[:2]
    aspect = height / max(width, 1)
    base = 4.5
    fig_w, fig_h = (base, max(2.0, base * aspect)) if aspect <= 1 else (max(2.0, base / aspect), base)
    fig = new_figure(fig_w, fig_h + 0.4)
    ax = fig.add_subplot()
    ax.imshow(pixels, interpolation="nearest" if max(width, height) < 256 else "antialiased")
    ax.set_axis_off()
    decorate(ax, spec)
    return fig


def _histogram(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    fig = new_figure(6.4, CHART_HEIGHT)
    _draw_histogram(fig.add_subplot(), spec)
    return fig


def _draw_histogram(ax: Axes, spec: Mapping[str, Any], *, legend: bool = True) -> None:
    """Pre-binned histograms on shared ``edges``: one step outline per series (its ``y``: one value per bin)."""
    edges = _floats(spec.get("edges"))
    if len(edges) < 2:
        raise FigureSpecError("histogram figure needs 'edges' (at least 2)")
    series = _series(spec)
    for index, item in enumerate(series):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        values = _floats(item.get("y"), len(edges) - 1)
        ax.stairs(values, edges, color=color, label=str(item.get("label", "")), fill=True, alpha=0.35)
        ax.stairs(values, edges, color=color, linewidth=1.4)
    _style_axes(ax)
    decorate(ax, spec)
    if legend and len(series) > 1:
        ax.legend(frameon=False, fontsize=8)


# -- small multiples -------------------------------------------------------------------------

PANEL_KINDS = ("line", "bar", "histogram")


def _panels(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    panels = spec.get("panels")
    if not panels:
        raise FigureSpecError("small_multiples figure has no 'panels'")
    for panel in panels:
        if panel.get("kind", "bar") not in PANEL_KINDS:
            raise FigureSpecError(f"a panel's kind must be one of {', '.join(PANEL_KINDS)}, got {panel.get('kind')!r}")
    return list(panels)


def _small_multiples(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    """One panel per sub-spec on a shared value axis, one legend for all: compare panels at a glance."""
    panels = _panels(spec)
    columns = max(1, min(int(spec.get("columns") or 4), len(panels)))
    rows = math.ceil(len(panels) / columns)
    heights = [_panel_height(p) for p in panels]
    fig = new_figure(2.9 * columns, max(heights) * rows + 0.5)
    horizontal = all(p.get("horizontal") for p in panels)
    axes = fig.subplots(rows, columns, squeeze=False, sharex=horizontal, sharey=not horizontal)
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        draw = {"line": _draw_line, "histogram": _draw_histogram}.get(panel.get("kind", "bar"), _draw_bar)
        last_row = index + columns >= len(panels)
        if horizontal:  # category ticks name themselves; the value label once, under the last row
            labels = {"xlabel": "", "ylabel": panel.get("ylabel", "") if last_row else ""}
        else:
            labels = {"xlabel": panel.get("xlabel", ""), "ylabel": panel.get("ylabel", "") if index % columns == 0
                      else ""}
        draw(ax, {**panel, **labels}, legend=False)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].set_axis_off()
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False, fontsize=8)
    fig.suptitle(str(spec.get("title", "")), fontsize=10, x=0.01, ha="left")
    return fig


def _panel_height(panel: Mapping[str, Any]) -> float:
    if not panel.get("horizontal"):
        return 2.4
    series = panel.get("series") or []
    points = max((len(s.get("x", [])) for s in series), default=1)
    return max(1.4, 0.09 * points * max(len(series), 1) + 0.7)


CHART_DRAWERS = {"heatmap": _heatmap, "line": _line, "bar": _bar, "histogram": _histogram, "image": _image,
                 "small_multiples": _small_multiples}
