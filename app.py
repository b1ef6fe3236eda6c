"""nnaudit dashboard, for ``streamlit run app.py -- RUNS_DIR`` from a source checkout.

A thin shim: the dashboard lives in the package (``reports/dashboard``), and ``nnaudit dashboard
RUNS_DIR`` starts it without this file. The installed distribution has no top-level ``app``.
"""

from reports.dashboard.page import main, run_label, runs_dir

__all__ = ["main", "run_label", "runs_dir"]

if __name__ == "__main__":
    main()
