"""Token heatmaps (figure kind ``token_heatmap``): per explained text and method, its tokens coloured by their
attribution, red toward the explained class and blue against, each row scaled to its largest |attribution|.

Tokens come from the data, so they are text, never markup: the HTML report lays them out from ``token_rows``
through its autoescaping template (``<script>`` shows as the characters it is), the dashboard through
``reports.text.escape_markdown``, and ``draw_token_heatmap`` draws them with matplotlib without mathtext.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.plots import FigureSpecError, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FOR, AGAINST = (220, 38, 38), (37, 99, 235)  # red, blue
MAX_TOKENS = 400  # per row shown


def token_rows(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{label, tokens: [{text, value, rgb, alpha}]}]`` of a token_heatmap spec; FigureSpecError if malformed."""
    rows = spec.get("rows")
    if not isinstance(rows, list):
        raise FigureSpecError("a token_heatmap needs 'rows': [{label, tokens, values}]")
    out = []
    for row in rows:
        tokens, values = row.get("tokens"), row.get("values")
        if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
            raise FigureSpecError("every token_heatmap row needs as many 'values' as 'tokens'")
        numbers = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
        scale = max((abs(v) for v in numbers), default=0.0) or 1.0
        cells = [{"text": str(t), "value": v, "rgb": FOR if v >= 0 else AGAINST, "alpha": abs(v) / scale}
                 for t, v in zip(tokens[:MAX_TOKENS], numbers[:MAX_TOKENS], strict=True)]
        out.append({"label": str(row.get("label", "")), "tokens": cells, "cut": max(0, len(tokens) - MAX_TOKENS)})
    return out


def token_heatmap_view(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the HTML template shows: per row its label and, per token, its text, a background style built from
    numbers only, and a tooltip with the value."""
    return [{"label": row["label"], "cut": row["cut"],
             "tokens": [{"text": cell["text"], "title": f"{cell['value']:+.4g}",
                         "style": "background: rgba({}, {}, {}, {:.3f})".format(*cell["rgb"], 0.85 * cell["alpha"])}
                        for cell in row["tokens"]]}
            for row in token_rows(spec)]


def explained_text_spec(run_dir: Path, results: Mapping[str, Any], row: int) -> dict[str, Any] | None:
    """A token_heatmap spec of one data row from the explanations section's ``attributions.npz`` (saved on text
    with each row's tokens by position), every method one line; None when the row was not explained or the run
    saved no token attributions."""
    import numpy as np

    for name, section in results.get("sections", {}).items():
        rel = section.get("artifacts", {}).get("attributions")
        if section.get("plugin") != "explanations" or not rel:
            continue
        path = (run_dir / rel).resolve()
        if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            if "tokens" not in saved.files:
                return None
            hits = np.flatnonzero(saved["index"] == row)
            if not len(hits):
                return None
            at = int(hits[0])
            tokens = saved["tokens"][at]
            kept = tokens != ""
            skip = {"index", "target", "x", "tokens"}
            rows = [{"label": method, "tokens": [str(t) for t in tokens[kept]],
                     "values": [float(v) for v in saved[method][at][kept]]}
                    for method in saved.files if method not in skip]
            label = _class_name(results, int(saved["target"][at]))
            return {"name": "token_heatmap", "kind": "token_heatmap", "rows": rows,
                    "title": f"Token attributions ({name}) toward class {label}"}
    return None


def _class_name(results: Mapping[str, Any], index: int) -> str:
    names = results.get("manifest", {}).get("data", {}).get("class_names") or []
    return str(names[index]) if 0 <= index < len(names) else str(index)


def draw_token_heatmap(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    """The heatmap as a matplotlib figure (PNG exports, the dashboard): tokens wrapped into lines per row."""
    rows = token_rows(spec)
    per_line = 14
    lines = sum(1 + max(1, -(-len(r["tokens"]) // per_line)) for r in rows) or 1
    fig = new_figure(10.0, 0.8 + 0.28 * lines)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(str(spec.get("title", "")), fontsize=11, loc="left")
    ax.set_xlim(0, per_line)
    ax.set_ylim(lines, 0)
    y = 0.5
    for row in rows:
        ax.text(0, y, row["label"], fontsize=8, fontweight="bold", va="center")
        y += 1
        for i, cell in enumerate(row["tokens"]):
            if i and i % per_line == 0:
                y += 1
            rgb = tuple(c / 255 for c in cell["rgb"])
            ax.text(i % per_line + 0.05, y, cell["text"][:12], fontsize=7, va="center",
                    bbox={"facecolor": (*rgb, 0.85 * cell["alpha"]), "edgecolor": "none", "pad": 1.5})
        y += 1
    return fig
