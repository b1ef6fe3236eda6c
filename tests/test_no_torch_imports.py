"""reports/, app.py, audit.results and the decision layer (audit.decide, audit.policy, audit.numbers) read results
only: they must work with torch absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from results_factory import write_run

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchvision", "shap", "lime", "captum", "foolbox", "fairlearn")

SCRIPT = textwrap.dedent("""
    import io, sys
    for name in {blocked!r}:
        sys.modules[name] = None  # any import of it now raises ImportError

    import audit.results
    import audit.numbers
    import audit.policy
    import audit.findings
    import audit.decide
    import audit.decide.checks
    import audit.decide.compare
    import audit.decide.gate
    import audit.decide.pairing
    import audit.decide.stats
    import audit.decide.verdict
    import audit.cli
    import audit.cli_decide
    import reports
    import reports.ci
    import reports.compare
    import reports.hardening
    import reports.headline
    import reports.figures
    import reports.html
    import reports.text
    import reports.views
    import app
    import reports.dashboard.explorer
    import reports.dashboard.samples
    import reports.dashboard.server

    run_dir, policy = sys.argv[1], sys.argv[2]
    path = reports.html.write_report(run_dir)
    assert path.stat().st_size > 10_000, path
    code = audit.cli_decide.run_gate(run_dir, policy, junit=run_dir + "/junit.xml", summary=run_dir + "/summary.md",
                                     stream=io.StringIO())
    assert code == 1, code
    results = audit.results.load_results(run_dir)
    assert reports.headline.verdict_view(results)["status"] == "not_gated"
    assert reports.headline.headline_view(results)["cards"]
    print("ok")
""")


def test_reports_gate_and_app_work_without_torch(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: ['performance.accuracy >= 0.95']\nfail_on_section_error: false\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED), str(run), str(policy)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize("module", ["audit.results", "audit.numbers", "audit.policy", "audit.decide", "reports.views",
                                    "reports.html", "reports.ci", "reports.compare"])
def test_modules_do_not_import_torch_at_import_time(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
