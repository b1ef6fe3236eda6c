"""Rendering of nnaudit results and decisions: view models, figures, the HTML report, the terminal table,
JUnit XML and Markdown.

Everything here reads a results dict (``audit.results.load_results``) or a decision (``audit.decide``) and
never imports torch.
"""

from reports.ci import format_gate, gate_to_markdown, junit_xml, write_junit, write_markdown
from reports.figures import figure_to_png_base64, render_figure
from reports.html import render_html, report_view, write_report
from reports.views import compare_runs, run_summary, section_view

__all__ = [
    "compare_runs",
    "figure_to_png_base64",
    "format_gate",
    "gate_to_markdown",
    "junit_xml",
    "render_figure",
    "render_html",
    "report_view",
    "run_summary",
    "section_view",
    "write_junit",
    "write_markdown",
    "write_report",
]
