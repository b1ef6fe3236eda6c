"""Kill tests: `nnaudit run` as a subprocess, stopped in the middle of a section by kill -9, SIGINT or SIGTERM.

A test plugin (registered through a real entry point) holds its section open until a gate file
exists, so the tests stop the run inside that section deterministically: they wait for
results.json to name it as the section in flight, never for a sleep tuned to this machine. The
sections after it read what robustness left in memory (``ctx.adversarial``), so a resumed run
only equals an uninterrupted one when the runner saved and reloaded it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from plugin_helpers import write_plugin_dist
from resume_helpers import comparable

from audit.engine.lock import LOCK_FILE, inspect_lock
from audit.results import RESULTS_FILE, load_results
from audit.runs import run_state

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 300  # upper bound for a subprocess to reach a section boundary; the tests poll, they do not sleep to it
SECTIONS = ["performance", "robustness", "gatekeeper", "explanations"]

PLUGIN = '''
import os
import time
from pathlib import Path

import numpy as np

from audit.plugin import SectionPlugin


class Gatekeeper(SectionPlugin):
    """Waits for the file $NNAUDIT_TEST_GATE, then records seeded draws from the model's outputs and robustness."""

    name = "gatekeeper"
    reads_sections = ("robustness",)

    def run(self, ctx, result):
        gate = Path(os.environ["NNAUDIT_TEST_GATE"])
        while not gate.exists():
            time.sleep(0.02)
        rows = np.random.choice(ctx.data.n_samples, 20, replace=False)  # seeded by the plugin base class
        result.metric("mean_confidence", float(ctx.clean_probabilities()[rows].max(axis=1).mean()))
        outcome = ctx.adversarial["linf:0.1"]
        result.metric("robust_share", float(outcome.robust_correct.mean()))
        result.metric("x_adv_checksum", float(np.abs(outcome.x_adv).sum()))
        result.metric("min_eps_median", float(np.median(outcome.min_eps)) if outcome.min_eps is not None else None)
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kill")
    site = root / "site"
    write_plugin_dist(site, module="nnaudit_killtest",
                      entry_points="[nnaudit.sections]\ngatekeeper = nnaudit_killtest:Gatekeeper\n", source=PLUGIN)
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    config = {
        "title": "kill test", "seed": 3, "device": "cpu", "report": True,
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
        "data": {"source": "digits", "limit": 60},
        "sections": {
            "performance": {},
            "robustness": {"eps": [0.05, 0.1], "attacks": ["fgsm", "pgd"], "steps": 5, "minimal_norm": ["fmn"],
                           "minimal_samples": 10, "minimal_steps": 10, "red_flags": False, "gallery_size": 2},
            "gatekeeper": {},
            "explanations": {"methods": ["saliency", "ig"], "n_samples": 6, "quality": ["deletion"],
                             "stability_samples": 6, "stability_key": "linf:0.1"},
        },
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH"))
                                                        if p),
           "NNAUDIT_PROGRESS": "log", "NNAUDIT_PROGRESS_INTERVAL": "3600", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NNAUDIT_TEST_GATE": str(root / "gate-open")}
    (root / "gate-open").touch()
    reference = root / "reference"
    done = _nnaudit(["run", str(path), "--out", str(reference)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "gate-open").unlink()
    return {"root": root, "config": path, "env": env, "gate": root / "gate-open", "reference": load_results(reference),
            "reference_log": done.stderr}


def _nnaudit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S, check=False)


def _start(setup: dict[str, Any], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(setup["config"]), "--out", str(out)],
                            env=setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_section(proc: subprocess.Popen[str], out: Path, section: str) -> dict[str, Any]:
    """Poll results.json until it names ``section`` as the one in flight (the runner writes that as it starts)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nnaudit exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        try:
            data = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if data.get("manifest", {}).get("current_section") == section:
            return data
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{section} never started within {WAIT_S} s")


def _report_state(run: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    import re

    done = _nnaudit(["report", str(run)], env)
    assert done.returncode == 0, done.stderr
    html = (run / "report.html").read_text(encoding="utf-8")
    badge = re.search(r'<h1>.*?<span class="badge status-([a-z]+)">', html)
    block = re.search(r'<ul class="never-ran">(.*?)</ul>', html, re.DOTALL)
    assert badge is not None
    never = re.findall(r'<li><span class="mono">([^<]+)</span>', block.group(1)) if block else []
    return badge.group(1), never


def test_reference_run_is_complete(setup: dict[str, Any]) -> None:
    reference = setup["reference"]
    assert reference["manifest"]["status"] == "complete"
    assert list(reference["sections"]) == SECTIONS
    assert all(s["status"] == "ok" for s in reference["sections"].values())
    # the sections after robustness really used its adversarial outcome
    assert 0 < reference["sections"]["gatekeeper"]["metrics"]["gatekeeper.robust_share"] < 1
    assert "explanations.stability.saliency.topk_overlap" in reference["sections"]["explanations"]["metrics"]
    # the resume comparisons below are not vacuous: the sections that run again have tables and notes to compare
    shown = comparable(reference)
    assert all(shown[name]["tables"] for name in ("performance", "robustness", "explanations"))
    assert shown["explanations"]["notes"] and shown["robustness"]["figures"]


def test_kill_9_then_resume(setup: dict[str, Any]) -> None:
    out = setup["root"] / "killed"
    proc = _start(setup, out)
    _wait_for_section(proc, out, "gatekeeper")
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # results.json: valid, still 'running', the sections finished so far present
    results = load_results(out)
    assert results["manifest"]["status"] == "running"
    assert results["manifest"]["current_section"] == "gatekeeper"
    assert list(results["sections"]) == ["performance", "robustness"]
    assert (out / LOCK_FILE).exists() and inspect_lock(out).state == "stale"
    state = run_state(results, out)
    assert (state.status, state.never_ran, state.in_flight) == ("incomplete", ("gatekeeper", "explanations"),
                                                                "gatekeeper")
    # the report says incomplete and lists the sections that never ran; the gate refuses it
    assert _report_state(out, setup["env"]) == ("incomplete", ["gatekeeper", "explanations"])
    policy = setup["root"] / "policy.yaml"
    policy.write_text("rules: ['performance.accuracy >= 0.5']\n", encoding="utf-8")
    gate = _nnaudit(["gate", str(out), "--policy", str(policy)], setup["env"])
    assert gate.returncode == 2 and "the run is incomplete" in gate.stdout and "--resume" in gate.stdout
    # a plain rerun is refused and leaves everything as it was
    before = (out / RESULTS_FILE).read_bytes()
    refused = _nnaudit(["run", str(setup["config"]), "--out", str(out)], setup["env"])
    assert refused.returncode == 2 and "pass --overwrite" in refused.stderr and "--resume" in refused.stderr
    assert (out / RESULTS_FILE).read_bytes() == before

    # resume from the run directory alone: finishes with the same results as the uninterrupted run
    setup["gate"].touch()
    try:
        resumed = _nnaudit(["run", "--resume", str(out)], setup["env"])
    finally:
        setup["gate"].unlink()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[1/4] performance kept from the previous run" in resumed.stderr
    assert "[2/4] robustness kept from the previous run" in resumed.stderr
    final = load_results(out)
    assert final["manifest"]["status"] == "complete"
    assert final["manifest"]["resumes"][-1]["kept"] == ["performance", "robustness"]
    assert comparable(final) == comparable(setup["reference"])
    assert not (out / LOCK_FILE).exists()
    assert _report_state(out, setup["env"]) == ("complete", [])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_interrupted_then_resume(setup: dict[str, Any], sig: signal.Signals, code: int) -> None:
    out = setup["root"] / f"stopped-{sig.name}"
    proc = _start(setup, out)
    _wait_for_section(proc, out, "gatekeeper")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert f"stopped by {sig.name}" in err and f"nnaudit run --resume {out}" in err
    results = load_results(out)
    manifest = results["manifest"]
    assert (manifest["status"], manifest["interrupted_by"], manifest["current_section"]) == (
        "interrupted", sig.name, "gatekeeper")
    assert manifest["finished_at"] is not None
    assert list(results["sections"]) == ["performance", "robustness"]
    assert not (out / LOCK_FILE).exists()  # released on the way out
    assert _report_state(out, setup["env"]) == ("interrupted", ["gatekeeper", "explanations"])
    if sig != signal.SIGINT:
        return
    # resume with the config given: the same results as the uninterrupted run
    setup["gate"].touch()
    try:
        resumed = _nnaudit(["run", str(setup["config"]), "--resume", str(out)], setup["env"])
    finally:
        setup["gate"].unlink()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_results(out)
    assert final["manifest"]["status"] == "complete"
    assert comparable(final) == comparable(setup["reference"])


def test_progress_lines_in_a_ci_log(setup: dict[str, Any]) -> None:
    """Off a terminal the run's stderr carries progress lines naming the section and the loop."""
    lines = [line for line in setup["reference_log"].splitlines() if line.startswith("nnaudit: [2/4] robustness > ")]
    assert lines and lines[-1].startswith("nnaudit: [2/4] robustness > chunks 0/1 > attacks (linf) ")
    assert "(100%, " in lines[-1]
    assert "nnaudit: [3/4] gatekeeper ok (" in setup["reference_log"]
