"""The HTML report: one self-contained, offline file.

CSS is inline, figures are base64 PNG data URIs, there is no JavaScript and no external URL.
Image grids (adversarial galleries, attribution maps) are laid out in HTML from the full-size
arrays in ``artifacts/``, every tile at least 64 px with its caption as text; trees are nested
lists; everything else is drawn by ``reports.figures``.
Every value from the results goes through jinja2's autoescaping, so a class or feature name
that holds markup shows as text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from audit.results import atomic_write_text, decode_number, load_results, resolve_results_path
from audit.runs import RunState, run_state
from reports.figures import FigureSpecError, artifact_data_uri, figure_data_uri, image_grid_view, tree_view
from reports.headline import headline_view, verdict_view
from reports.text_pairs import text_pairs_view
from reports.tokens import token_heatmap_view
from reports.views import (
    SEVERITIES_WORST_FIRST,
    all_findings,
    format_value,
    manifest_rows,
    run_summary,
    section_views,
)

REPORT_FILE = "report.html"
TEMPLATE_NAME = "report.html.j2"


def report_view(results: Mapping[str, Any], state: RunState | None = None, *,
                run_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The whole report: verdict, headline, summary, manifest rows, top findings, sections."""
    manifest = results.get("manifest", {})
    return {
        "verdict": verdict_view(results, run_dir),
        "headline": headline_view(results),
        "summary": run_summary(results, state),
        "manifest_rows": manifest_rows(results),
        "top_findings": all_findings(results, min_severity="medium"),
        "sections": section_views(results),
        "config": manifest.get("config", {}),
        "libraries": dict(sorted(manifest.get("libraries", {}).items())),
    }


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = format_value
    env.filters["pretty_json"] = _pretty_json
    return env


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


WIDE_KINDS = ("image_grid", "tree", "small_multiples", "image", "text_pairs", "token_heatmap")


def figure_view(spec: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """What the template needs to show one figure spec.

    ``mode``: ``grid`` (image tiles laid out in HTML, captions as text), ``tree`` (nested
    lists), or ``img`` (a PNG data URI: the renderer's drawing, or an image artifact itself at
    full size). A spec that cannot be shown gives the renderer's placeholder, never an error.
    """
    kind = spec.get("kind")
    view: dict[str, Any] = {"name": spec.get("name", ""), "title": spec.get("title", ""), "kind": kind,
                            "wide": kind in WIDE_KINDS, "mode": "img"}
    try:
        if kind == "image_grid":
            return {**view, "mode": "grid", "grid": image_grid_view(spec, run_dir)}
        if kind == "tree":
            fidelity = spec.get("fidelity")
            return {**view, "mode": "tree", "tree": tree_view(spec),
                    "fidelity_text": None if fidelity is None else format_value(decode_number(fidelity))}
        if kind == "image":
            return {**view, "data_uri": artifact_data_uri(spec, run_dir)}
        if kind == "text_pairs":  # adversarial texts: laid out as escaped HTML text, changed words in <mark>
            return {**view, "mode": "pairs", "pairs": text_pairs_view(spec)}
        if kind == "token_heatmap":
            return {**view, "mode": "tokens", "rows": token_heatmap_view(spec)}
    except (FigureSpecError, OSError, ValueError, KeyError, TypeError):
        pass  # drawn below: the placeholder says what is wrong
    return {**view, "data_uri": figure_data_uri(spec, run_dir)}


def _with_images(view: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """Turn every section's figure specs into figure views (see ``figure_view``)."""
    for section in view["sections"]:
        section["figures"] = [figure_view(spec, run_dir) for spec in section["figures"]]
    return view


def render_html(results: dict[str, Any], run_dir: str | os.PathLike[str] | None = None) -> str:
    """The report for ``results`` as one HTML string.

    ``run_dir`` resolves image artifacts and tells a live run from one whose process died (its lock).
    """
    state = run_state(results, run_dir)
    view = _with_images(report_view(results, state, run_dir=run_dir), Path(run_dir) if run_dir is not None else None)
    template = _environment().get_template(TEMPLATE_NAME)
    text: str = template.render(view=view, severities=SEVERITIES_WORST_FIRST)
    return text


def write_report(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 validate: bool = True) -> Path:
    """Render ``run_dir/results.json`` to ``run_dir/report.html`` (or ``out``), atomically.

    ``run_dir`` may also be the results file itself. Raises ``ResultsError`` when the results
    are missing or invalid.
    """
    results_file = resolve_results_path(run_dir)
    results = load_results(results_file, validate=validate)
    target = Path(out) if out is not None else results_file.parent / REPORT_FILE
    atomic_write_text(target, render_html(results, results_file.parent))
    return target
