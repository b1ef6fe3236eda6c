"""Rendering of nnaudit results: view models, figures, the HTML report, JUnit XML and Markdown.

Everything here reads a results dict (``audit.results.load_results``) and never imports torch.
"""

from reports.figures import figure_to_png_base64, render_figure
from reports.html import render_html, write_report
from reports.junit import gate_to_junit, write_junit
from reports.markdown import gate_to_markdown, write_markdown
from reports.views import compare_runs, report_view, run_summary, section_view

__all__ = [
    "compare_runs",
    "figure_to_png_base64",
    "gate_to_junit",
    "gate_to_markdown",
    "render_figure",
    "render_html",
    "report_view",
    "run_summary",
    "section_view",
    "write_junit",
    "write_markdown",
    "write_report",
]
