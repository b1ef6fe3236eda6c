"""The nnaudit command as a user runs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from audit.cli import main
from audit.results import load_results

HEAVY = ("torch", "shap", "lime", "streamlit", "captum", "foolbox", "fairlearn", "sklearn", "matplotlib")


def test_help_starts_without_heavy_imports() -> None:
    code = ("import sys; from audit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: nnaudit" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", "heavy modules imported at start-up"


def test_config_error_exits_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "audit.yaml").write_text("model: {factory: 'audit.zoo:digits_cnn'}\ndata: {source: digits}\n"
                                         "sections: {performance: {}}\nbatchsize: 3\n")
    assert main(["run", str(tmp_path / "audit.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "config error at 'batchsize'" in err and "unknown key" in err


def test_demo_audits_both_models(demo_dir: Path) -> None:
    digits = load_results(demo_dir / "digits-cnn")  # validates against the shipped schema
    resume = load_results(demo_dir / "resume-mlp")
    assert digits["sections"]["performance"]["metrics"]["performance.accuracy"] > 0.9
    assert digits["manifest"]["status"] == resume["manifest"]["status"] == "complete"
    assert resume["manifest"]["data"]["sensitive"] == ["ethnicity", "gender"]
    for run in (digits, resume):
        assert all(s["status"] != "error" for s in run["sections"].values()), \
            {k: s["error"] for k, s in run["sections"].items() if s["error"]}
    for name in ("digits-cnn", "resume-mlp"):
        html = (demo_dir / name / "report.html").read_text()
        assert "data:image/png;base64," in html and "performance.accuracy" in html
    # the demo's configs re-run through the plain `nnaudit run` path
    assert (demo_dir / "configs" / "digits-cnn.yaml").exists()
    # digits: both defenses evaluated at every eps with the adaptive attack their kind calls for (BPDA for the
    # deterministic bit depth, EOT for the randomized noise, never the other); the adaptive number is the share
    # correct under naive, adaptive and transfer attacks together, so at least what the union bound leaves
    defended = digits["sections"]["defenses"]["metrics"]
    eps_list = digits["sections"]["robustness"]["params"]["eps"]
    for eps in eps_list:
        for name, kind, other in (("bit_depth", "bpda", "eot"), ("gaussian_noise", "eot", "bpda")):
            prefix = f"defenses.{name}.linf.eps={eps:g}"
            assert f"{prefix}.{kind}_robust_accuracy" in defended
            assert f"{prefix}.{other}_robust_accuracy" not in defended
            parts = [defended[f"{prefix}.{k}_robust_accuracy"] for k in ("naive", kind, "transfer")]
            clean = defended[f"defenses.{name}.clean_accuracy"]
            assert defended[f"{prefix}.adaptive_robust_accuracy"] >= sum(parts) - 2 * clean - 1e-9
    # bit depth masks gradients (round): at the largest eps BPDA alone leaves far less accuracy than the naive attack,
    # by more than three standard deviations (at most 1/sqrt(n)) of a paired difference of two shares of n samples
    n = min(digits["sections"]["robustness"]["metrics"]["robustness.n_samples"],
            digits["sections"]["defenses"]["params"]["max_samples"])
    top = f"defenses.bit_depth.linf.eps={max(eps_list):g}"
    assert defended[f"{top}.naive_robust_accuracy"] - defended[f"{top}.bpda_robust_accuracy"] > 3 / math.sqrt(n)


def test_rerun_demo_config_and_report_command(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert main(["run", str(demo_dir / "configs" / "digits-cnn.yaml"), "--out", str(out), "--limit", "60",
                 "--no-report", "--device", "cpu"]) == 0
    assert not (out / "report.html").exists()
    assert load_results(out)["manifest"]["data"]["n_samples"] == 60
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()
    assert main(["validate", str(out)]) == 0


def test_gate_pass_and_fail_on_demo(demo_dir: Path, tmp_path: Path) -> None:
    passing = tmp_path / "pass.yaml"
    passing.write_text("rules:\n  - performance.accuracy >= 0.9\n  - imbalance.balanced_accuracy >= 0.8\n")
    failing = tmp_path / "fail.yaml"
    failing.write_text("rules:\n  - performance.accuracy >= 0.999\n")
    missing = tmp_path / "missing.yaml"
    missing.write_text("rules:\n  - performance.nonexistent >= 0.5\n")
    run = demo_dir / "digits-cnn"
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(run), "--policy", str(passing), "--junit", str(junit),
                 "--summary", str(tmp_path / "gate.md")]) == 0
    assert junit.exists() and (tmp_path / "gate.md").exists()
    assert main(["gate", str(run), "--policy", str(failing)]) == 1
    assert main(["gate", str(run), "--policy", str(missing)]) == 2
    # the policies the demo writes pass on the demo's own runs
    for name in ("digits-cnn", "resume-mlp"):
        assert main(["gate", str(demo_dir / name), "--policy", str(demo_dir / "policies" / f"{name}.yaml")]) == 0


def test_plugins_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "performance" in out and "imbalance" in out and "UNAVAILABLE" not in out


def test_broken_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": "1.0"}))
    assert main(["validate", str(tmp_path)]) == 2


def test_results_written_by_tests_validate(tmp_path: Path, demo_dir: Path) -> None:
    """Every results.json under the demo validates (the schema ships inside the package)."""
    from importlib import resources

    assert resources.files("audit").joinpath("schema/results.schema.json").is_file()
    files = list(demo_dir.rglob("results.json"))
    assert len(files) == 2
    for file in files:
        load_results(file)


def test_module_entry_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "nnaudit" in proc.stdout


