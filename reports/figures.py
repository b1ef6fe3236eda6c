"""Draw the figure data specs of a results file with matplotlib.

Every figure is a ``matplotlib.figure.Figure`` built without pyplot, so no global state and
no GUI backend are involved (the Streamlit dashboard renders from several threads). A spec
that cannot be drawn gives a placeholder figure that says why, never an exception.

The chart kinds (heatmap, line, bar, image, small multiples) are drawn in ``reports.plots``; image
grids and trees are drawn here and, for the HTML report, laid out as HTML from the full-size
arrays (``image_grid_view``, ``tree_view``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.plots import CHART_DRAWERS, DPI, FigureSpecError, decorate, new_figure, resolve_artifact, wrap_text
from reports.text_pairs import draw_text_pairs
from reports.tokens import draw_token_heatmap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UNKNOWN_KIND = ("unknown figure kind {kind!r}: expected one of heatmap, line, bar, histogram, image, image_grid, "
                "tree, small_multiples, text_pairs, token_heatmap")
BAD_SPEC = "cannot draw figure {name!r}: {error}"

# errors a malformed spec can raise while drawing; anything else is a bug and propagates
_DRAW_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError)


def render_figure(spec: Mapping[str, Any], run_dir: str | Path | None = None) -> Figure:
    """Draw one figure spec. ``run_dir`` resolves ``artifact`` paths of image figures."""
    import matplotlib

    kind = spec.get("kind")
    drawer = _DRAWERS.get(str(kind))
    # text from the data stays text: no mathtext, so a class name "$x^2$" prints its dollar signs
    with matplotlib.rc_context({"text.parse_math": False}):
        try:
            if drawer is None:
                raise FigureSpecError(UNKNOWN_KIND.format(kind=kind))
            return drawer(spec, Path(run_dir) if run_dir is not None else None)
        except _DRAW_ERRORS as err:
            return placeholder_figure(spec.get("title") or spec.get("name") or "figure",
                                      BAD_SPEC.format(name=spec.get("name", "?"), error=err))


def placeholder_figure(title: str, message: str) -> Figure:
    """A small figure that shows ``message`` where a chart should be."""
    fig = new_figure(6.4, 1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(str(title), fontsize=11, loc="left")
    ax.text(0.0, 0.5, wrap_text(message, 90), ha="left", va="center", fontsize=9, color="#b91c1c",
            transform=ax.transAxes, wrap=True)
    return fig


def figure_to_png_bytes(fig: Figure, *, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def figure_to_png_base64(fig: Figure, *, dpi: int = DPI) -> str:
    """The figure as base64 PNG text (no ``data:`` prefix)."""
    return base64.b64encode(figure_to_png_bytes(fig, dpi=dpi)).decode("ascii")


def figure_data_uri(spec: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """``data:image/png;base64,...`` for a spec: what the HTML report embeds."""
    return "data:image/png;base64," + figure_to_png_base64(render_figure(spec, run_dir))


def figure_png(spec: Mapping[str, Any], run_dir: str | Path | None = None) -> bytes:
    """PNG bytes for a spec: what the dashboard shows."""
    return figure_to_png_bytes(render_figure(spec, run_dir))


# -- image grids ----------------------------------------------------------------------------

IMAGE_STYLES = ("image", "signed", "overlay")
TILE_PX = 72  # the HTML report's tile size: at least 64 px per image


def load_grid(spec: Mapping[str, Any], run_dir: Path | None) -> Any:
    """The tiles array of an image_grid spec: (rows, columns, C, H, W) float, from its NPZ artifact."""
    import numpy as np

    path = resolve_artifact(run_dir, spec.get("artifact"))
    with np.load(path, allow_pickle=False) as archive:
        key = str(spec.get("array", "tiles"))
        if key not in archive:
            raise FigureSpecError(f"artifact {spec.get('artifact')} has no array {key!r}")
        tiles = np.asarray(archive[key], dtype=float)
    if tiles.ndim == 4:
        tiles = tiles[:, :, None]
    if tiles.ndim != 5:
        raise FigureSpecError(f"image_grid tiles must be (rows, columns, [C,] H, W), got shape {tiles.shape}")
    return tiles


def grid_styles(spec: Mapping[str, Any], rows: int, columns: int) -> list[list[str]]:
    """The style of every tile: ``styles`` given per row or per column (``styles_by``)."""
    by = spec.get("styles_by", "row")
    styles = list(spec.get("styles") or [])
    count = rows if by == "row" else columns
    if not styles:
        styles = ["image"] * count
    if len(styles) != count or any(s not in IMAGE_STYLES for s in styles):
        raise FigureSpecError(f"image_grid needs {count} styles (one per {by}) from {', '.join(IMAGE_STYLES)}")
    return [[styles[r] if by == "row" else styles[c] for c in range(columns)] for r in range(rows)]


def tile_rgb(tiles: Any, styles: list[list[str]], row: int, column: int,
             bounds: tuple[float, float] = (0.0, 1.0)) -> Any:
    """One tile as an (H, W, 3) float array in [0, 1]: images in gray/RGB, signed maps in blue-white-red."""
    import numpy as np
    from matplotlib import colormaps

    style = styles[row][column]
    tile = tiles[row, column]
    if style == "image":
        return _image_rgb(tile, bounds)
    signed = np.nan_to_num(tile.sum(axis=0))
    scale = float(np.abs(signed).max()) or 1.0
    colored = colormaps["bwr"](0.5 + 0.5 * signed / scale)[..., :3]
    if style == "signed":
        return colored
    images = [c for c in range(len(styles[row])) if styles[row][c] == "image"]
    base = _image_rgb(tiles[row, images[0]], bounds) if images else np.ones_like(colored)
    weight = 0.75 * (np.abs(signed) / scale)[..., None]  # strong attribution covers, weak lets the input show
    return (1 - weight) * (0.35 + 0.65 * base) + weight * colored


def _image_rgb(tile: Any, bounds: tuple[float, float]) -> Any:
    import numpy as np

    low, high = bounds
    scaled = np.clip((np.nan_to_num(tile) - low) / max(high - low, 1e-12), 0.0, 1.0)
    if scaled.shape[0] == 3:
        return np.moveaxis(scaled, 0, -1)
    gray = scaled.mean(axis=0)
    return np.repeat(gray[..., None], 3, axis=-1)


def _grid_bounds(spec: Mapping[str, Any]) -> tuple[float, float]:
    bounds = spec.get("bounds") or [0.0, 1.0]
    return float(bounds[0]), float(bounds[1])


def _labels(spec: Mapping[str, Any], key: str, count: int) -> list[str]:
    labels = [str(v) for v in spec.get(key) or []]
    return labels if len(labels) == count else [""] * count


def _tile_labels(spec: Mapping[str, Any], rows: int, columns: int) -> list[list[str]]:
    given = spec.get("tile_labels") or []
    if len(given) != rows or any(len(r) != columns for r in given):
        return [[""] * columns for _ in range(rows)]
    return [[str(v) for v in r] for r in given]


def image_grid_view(spec: Mapping[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """An image_grid as rows of tiles, each a PNG data URI at the image's own resolution, with its caption.

    What the HTML report lays out (tiles scaled to ``TILE_PX`` with crisp pixels, captions as
    text) and what the dashboard can show tile by tile. Raises ``FigureSpecError``.
    """
    tiles = load_grid(spec, Path(run_dir) if run_dir is not None else None)
    rows, columns = tiles.shape[:2]
    styles = grid_styles(spec, rows, columns)
    bounds = _grid_bounds(spec)
    captions = _tile_labels(spec, rows, columns)
    row_labels = _labels(spec, "row_labels", rows)
    return {
        "columns": columns,
        "column_labels": _labels(spec, "column_labels", columns),
        "tile_px": TILE_PX,
        "rows": [{"label": row_labels[r],
                  "tiles": [{"uri": _png_uri(tile_rgb(tiles, styles, r, c, bounds)), "caption": captions[r][c]}
                            for c in range(columns)]}
                 for r in range(rows)],
    }


def _png_uri(rgb: Any) -> str:
    import numpy as np
    from PIL import Image

    pixels = (np.clip(rgb, 0.0, 1.0) * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_grid(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    """The grid as one matplotlib figure (dashboard, PNG export): 1 inch per tile, captions at 7 pt."""
    tiles = load_grid(spec, run_dir)
    rows, columns = tiles.shape[:2]
    styles = grid_styles(spec, rows, columns)
    bounds = _grid_bounds(spec)
    captions = _tile_labels(spec, rows, columns)
    row_labels = _labels(spec, "row_labels", rows)
    column_labels = _labels(spec, "column_labels", columns)
    fig = new_figure(1.05 * columns + 0.8, 1.35 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False)
    for r in range(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(tile_rgb(tiles, styles, r, c, bounds), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = "\n".join(t for t in (column_labels[c] if r == 0 else "", captions[r][c]) if t)
            ax.set_title(title, fontsize=7)
        if row_labels[r]:
            axes[r][0].set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(str(spec.get("title", "")), fontsize=10, x=0.01, ha="left")
    return fig


# -- trees ----------------------------------------------------------------------------------


def tree_view(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A tree spec as nested nodes: ``{"text", "samples", "leaf", "children": [yes, no]}``.

    ``nodes`` are in preorder (a node's first child follows it); an internal node has a
    ``feature`` and ``threshold`` and two children: ``feature <= threshold``, then ``>``.
    """
    from reports.views import format_value

    nodes = list(spec.get("nodes") or [])
    if not nodes:
        raise FigureSpecError("tree figure has no 'nodes'")
    position = 0

    def build(condition: str | None) -> dict[str, Any]:
        nonlocal position
        if position >= len(nodes):
            raise FigureSpecError("tree 'nodes' end before every internal node has two children")
        node = nodes[position]
        position += 1
        view = {"condition": condition, "samples": node.get("samples"), "label": str(node.get("label", "")),
                "leaf": bool(node.get("leaf")), "children": []}
        if not view["leaf"]:
            feature, threshold = str(node.get("feature", "?")), format_value(node.get("threshold"))
            view["children"] = [build(f"{feature} ≤ {threshold}"), build(f"{feature} > {threshold}")]
        return view

    root = build(None)
    if position != len(nodes):
        raise FigureSpecError(f"tree 'nodes' hold {len(nodes) - position} node(s) no parent reaches")
    return root


def _tree(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    """The tree drawn top-down: leaves spread evenly, a parent above the middle of its children."""
    root = tree_view(spec)
    placed: list[tuple[float, int, dict[str, Any]]] = []
    leaves = 0

    def place(node: dict[str, Any], depth: int) -> float:
        nonlocal leaves
        if node["leaf"]:
            x = float(leaves)
            leaves += 1
        else:
            x = sum(place(child, depth + 1) for child in node["children"]) / 2
        placed.append((x, depth, node))
        return x

    place(root, 0)
    depth = max(d for _, d, _ in placed)
    fig = new_figure(max(6.4, 1.5 * leaves), 1.1 * (depth + 1) + 0.6)
    ax = fig.add_subplot()
    where = {id(node): (x, -d) for x, d, node in placed}
    for x, d, node in placed:
        for child in node["children"]:
            cx, cy = where[id(child)]
            ax.plot([x, cx], [-d, cy], color="#9ca3af", linewidth=1, zorder=1)
            ax.text((x + cx) / 2, (-d + cy) / 2, child["condition"], fontsize=6.5, ha="center", va="center",
                    color="#374151", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"}, zorder=2)
        text = f"{node['label']}\n{format_samples(node['samples'])}"
        ax.text(x, -d, text, fontsize=7, ha="center", va="center", zorder=3,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#dbeafe" if node["leaf"] else "#f3f4f6", "ec": "#6b7280"})
    ax.set_xlim(-0.7, leaves - 0.3)
    ax.set_ylim(-depth - 0.5, 0.5)
    ax.set_axis_off()
    decorate(ax, spec)
    return fig


def format_samples(samples: Any) -> str:
    return "" if samples is None else f"{int(samples)} rows"


def artifact_data_uri(spec: Mapping[str, Any], run_dir: str | Path | None) -> str:
    """An image figure's PNG artifact itself, full size, as a data URI (no re-rendering, no shrinking)."""
    path = resolve_artifact(Path(run_dir) if run_dir is not None else None, spec.get("artifact"))
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise FigureSpecError(f"artifact {spec.get('artifact')} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_DRAWERS = {**CHART_DRAWERS, "image_grid": _image_grid, "tree": _tree, "text_pairs": draw_text_pairs,
            "token_heatmap": draw_token_heatmap}
