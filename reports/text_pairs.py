"""The ``text_pairs`` figure: adversarial texts beside their originals, changed words marked.

A spec holds ``pairs``, each ``{"caption", "original", "adversarial"}`` where a text is a list of segments
``[text, changed]`` (``changed``: 0/1). The HTML report lays the pairs out as HTML (``text_pairs_view``; the template
escapes every segment and wraps the changed ones in ``<mark>``); the dashboard and PNG exports get a matplotlib
drawing (``draw_text_pairs``) with the changed words in bold red. Text from the data is always text: no segment is
ever markup, and matplotlib's mathtext is off (``render_figure``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.plots import FigureSpecError, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PAIRS = 100


def _segments(value: Any, where: str) -> list[tuple[str, bool]]:
    if not isinstance(value, list):
        raise FigureSpecError(f"text_pairs {where} is not a list of [text, changed] segments")
    out = []
    for seg in value:
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise FigureSpecError(f"text_pairs {where}: a segment is not [text, changed]")
        out.append((str(seg[0]), bool(seg[1])))
    return out


def text_pairs_view(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pairs as ``{"caption", "original": [(text, changed)...], "adversarial": [...]}`` (checked)."""
    pairs = spec.get("pairs")
    if not isinstance(pairs, list) or not pairs:
        raise FigureSpecError("text_pairs figure has no 'pairs'")
    return [{"caption": str(p.get("caption", "")) if isinstance(p, Mapping) else "",
             "original": _segments(p.get("original") if isinstance(p, Mapping) else None, f"pair {i} original"),
             "adversarial": _segments(p.get("adversarial") if isinstance(p, Mapping) else None,
                                      f"pair {i} adversarial")}
            for i, p in enumerate(pairs[:MAX_PAIRS])]


def _plain(segments: list[tuple[str, bool]]) -> str:
    return "".join(f"⟦{t}⟧" if changed else t for t, changed in segments)


def draw_text_pairs(spec: Mapping[str, Any], run_dir: Path | None) -> Figure:
    """The pairs as wrapped text, original above adversarial; changed words marked ⟦so⟧ and in red."""
    import textwrap

    pairs = text_pairs_view(spec)
    blocks: list[tuple[str, str]] = []
    for p in pairs:
        blocks.append((p["caption"], "#111827"))
        for label, key in (("original", "original"), ("adversarial", "adversarial")):
            text = textwrap.fill(f"{label}: {_plain(p[key])}", 110, max_lines=6, placeholder=" …")
            blocks.append((text, "#b91c1c" if key == "adversarial" else "#374151"))
    lines = sum(b[0].count("\n") + 1 for b in blocks) + len(pairs)
    fig = new_figure(9.0, 0.6 + 0.17 * lines)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(str(spec.get("title", "")), fontsize=11, loc="left")
    y = 1.0
    step = 1.0 / max(lines, 1)
    for text, colour in blocks:
        ax.text(0.0, y, text, ha="left", va="top", fontsize=7.5, color=colour, family="monospace",
                transform=ax.transAxes)
        y -= step * (text.count("\n") + 1)
        if colour == "#b91c1c":
            y -= step
    return fig

