"""The HTML report: one self-contained, offline file.

CSS is inline, figures are base64 PNG data URIs, there is no JavaScript and no external URL.
Every value from the results goes through jinja2's autoescaping, so a class or feature name
that holds markup shows as text.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from audit.results import atomic_write_text, load_results, resolve_results_path, run_state
from reports.figures import figure_data_uri
from reports.views import SEVERITIES_WORST_FIRST, format_value, report_view

REPORT_FILE = "report.html"
TEMPLATE_NAME = "report.html.j2"


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


def _with_images(view: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """Add a ``data_uri`` to every figure of every section."""
    for section in view["sections"]:
        section["figures"] = [
            {"name": spec.get("name", ""), "title": spec.get("title", ""), "kind": spec.get("kind"),
             "data_uri": figure_data_uri(spec, run_dir)}
            for spec in section["figures"]
        ]
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
