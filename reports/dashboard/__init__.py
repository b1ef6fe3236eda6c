"""The Streamlit dashboard: a read-only review of audit runs.

- ``page``: the Streamlit page (verdict, headline, charts, findings, sample explorer, compare);
- ``samples``: per-sample data for the explorer, read lazily from a run's artifacts;
- ``text``: how strings from data, config and results reach the page (as text, never Markdown);
- ``server``: ``nnaudit dashboard`` (localhost by default, no file watcher, stops with its parent);
- ``script/nnaudit_dashboard.py``: the script Streamlit runs (``app.py`` at the repository root does the same).

Importing this package imports neither streamlit nor torch.
"""

from pathlib import Path

RUNS_ENV = "NNAUDIT_RUNS_DIR"
SCRIPT = Path(__file__).resolve().parent / "script" / "nnaudit_dashboard.py"

__all__ = ["RUNS_ENV", "SCRIPT"]
