"""Bad-input corpus for the run lifecycle, the gate and results files.

One case per bad input, each asserting the exact outcome (exit code, the key and the words the
message must hold) and that nothing already written was lost or changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from audit.cli import main
from audit.engine.lock import RunLock
from audit.results import RESULTS_FILE, load_results

CliRun = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRun:
    def run(*args: Any) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    """A finished run (with its report) and the config that made it."""
    root = tmp_path_factory.mktemp("corpus")
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    config = {"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
              "data": {"source": "digits", "limit": 60}, "device": "cpu",
              "sections": {"performance": {}, "imbalance": {"n_bins": 5}}}
    (root / "audit.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    assert main(["run", str(root / "audit.yaml"), "--out", str(root / "run")]) == 0
    return root


@pytest.fixture
def work(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run and its config."""
    target = tmp_path / "w"
    shutil.copytree(finished, target)
    config = yaml.safe_load((target / "audit.yaml").read_text(encoding="utf-8"))
    config["model"]["weights"] = str(target / "cnn.pt")
    (target / "audit.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _config(work: Path, **changes: Any) -> Path:
    config = yaml.safe_load((work / "audit.yaml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        holder = config
        *parents, last = dotted.split("__")
        for key in parents:
            holder = holder[key]
        holder[last] = value
    path = work / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# -- gate policies with typos -----------------------------------------------------------------


@pytest.mark.parametrize(("policy", "fragment"), [
    ("rule:\n  - performance.accuracy >= 0.9\n",
     "config error at 'rule': unknown key 'rule' (did you mean 'rules'?); a policy has only: rules, "),
    ("rules:\n  - {metrics: performance.accuracy, op: '>=', value: 0.9}\n",
     "config error at 'rules[0].metrics': unknown key 'metrics' in a rule (did you mean 'metric'?)"),
    ("rules:\n  - performance.accuracy => 0.9\n",
     "config error at 'rules[0]': cannot read rule 'performance.accuracy => 0.9': write '<metric> <op> <number>'"),
    ("rules:\n  - {metric: performance.accuracy, op: '=>', value: 0.9}\n",
     "config error at 'rules[0].op': operator '=>' is not one of >=, >, <=, <, ==, !="),
    ("rules:\n  - performance.accuracy >= 0.9\nfail_on_section_error: maybe\n",
     "config error at 'fail_on_section_error': 'fail_on_section_error' must be true or false, got 'maybe'"),
    ("- performance.accuracy >= 0.9\n",
     "config error at 'policy': a policy is a YAML mapping with 'rules:' at the top level, got list"),
    ("rules: [performance.accuracy >= 0.9\n", "config error at 'policy': cannot read the policy"),
], ids=["policy-key-typo", "rule-key-typo", "operator-typo-string", "operator-typo-mapping", "flag-not-bool",
        "policy-is-a-list", "policy-not-yaml"])
def test_policy_typos(cli: CliRun, work: Path, policy: str, fragment: str) -> None:
    path = work / "policy.yaml"
    path.write_text(policy, encoding="utf-8")
    before = _snapshot(work / "run")
    code, out, err = cli("gate", work / "run", "--policy", path)
    assert code == 2 and out == ""
    assert fragment in err
    assert _snapshot(work / "run") == before


def test_metric_name_typo_suggests_the_name(cli: CliRun, work: Path) -> None:
    path = work / "policy.yaml"
    path.write_text("rules:\n  - performance.acuracy >= 0.9\n", encoding="utf-8")
    code, out, _ = cli("gate", work / "run", "--policy", path)
    assert code == 2
    assert re.search(r"^MISSING +performance\.acuracy >= 0\.9 +metric 'performance\.acuracy' is not in the results; "
                     r"did you mean 'performance\.accuracy'\?$", out, re.MULTILINE), out


# -- results files ----------------------------------------------------------------------------


def test_results_from_a_newer_schema(cli: CliRun, work: Path) -> None:
    run = work / "run"
    data = json.loads((run / RESULTS_FILE).read_text(encoding="utf-8"))
    data["schema_version"] = "3.0"
    data["manifest"]["nnaudit_version"] = "9.0.0"
    (run / RESULTS_FILE).write_text(json.dumps(data), encoding="utf-8")
    (work / "policy.yaml").write_text("rules: ['performance.accuracy >= 0.5']\n", encoding="utf-8")
    before = _snapshot(run)
    for args in (("report", run), ("validate", run), ("gate", run, "--policy", work / "policy.yaml")):
        code, _, err = cli(*args)
        assert code == 2, args
        assert "was written by nnaudit 9.0.0 with results schema 3.0" in err
        assert "Upgrade nnaudit (pip install -U nnaudit) to read it" in err and "does not match" not in err
    assert _snapshot(run) == before  # the old report.html is still there, untouched


def test_truncated_results(cli: CliRun, work: Path) -> None:
    run = work / "run"
    text = (run / RESULTS_FILE).read_text(encoding="utf-8")
    (run / RESULTS_FILE).write_text(text[: len(text) // 2], encoding="utf-8")
    (work / "policy.yaml").write_text("rules: ['performance.accuracy >= 0.5']\n", encoding="utf-8")
    before = _snapshot(run)
    code, _, err = cli("report", run)
    assert code == 2 and f"cannot read {run / RESULTS_FILE}: " in err and "Re-run the audit" in err
    code, _, err = cli("gate", run, "--policy", work / "policy.yaml")
    assert code == 2 and "cannot read" in err
    code, _, err = cli("run", work / "audit.yaml", "--resume", run)
    assert code == 2 and f"cannot resume {run}: cannot read" in err and "start it again with --overwrite" in err
    code, _, err = cli("run", "--resume", run)  # config from the manifest: unreadable too
    assert code == 2 and "cannot read" in err
    assert _snapshot(run) == before


# -- the output directory ---------------------------------------------------------------------


def test_rerun_into_a_finished_run_without_flags(cli: CliRun, work: Path) -> None:
    run = work / "run"
    before = _snapshot(run)
    code, _, err = cli("run", work / "audit.yaml", "--out", run)
    assert code == 2
    assert f"{run} already holds an audit (status complete, started " in err
    assert "pass --overwrite to replace it" in err and "--resume to keep its finished sections" in err
    assert _snapshot(run) == before


def test_locked_run_directory(cli: CliRun, work: Path) -> None:
    run = work / "run"
    with RunLock(run):
        before = _snapshot(run)
        code, _, err = cli("run", work / "audit.yaml", "--out", run, "--overwrite")
        assert _snapshot(run) == before
    assert code == 2
    assert f"is being written by another nnaudit run (pid {os.getpid()} on {socket.gethostname()}, started " in err
    assert "wait for it to finish, stop it, or pass another --out" in err
    assert _snapshot(run) == {k: v for k, v in before.items() if k != ".nnaudit.lock"}


def test_resume_without_results(cli: CliRun, work: Path) -> None:
    empty = work / "empty"
    empty.mkdir()
    code, _, err = cli("run", "--resume", empty)
    assert code == 2 and f"nothing to resume in {empty}: it has no results.json" in err
    code, _, err = cli("run", work / "audit.yaml", "--resume", empty)
    assert code == 2 and "nothing to resume" in err
    code, _, err = cli("run", "--resume", work / "missing")
    assert code == 2 and "nothing to resume" in err
    assert list(empty.iterdir()) == [] and not (work / "missing").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--overwrite", "--resume"], "--overwrite and --resume exclude each other"),
    (["--resume"], "--resume needs the run directory"),
], ids=["overwrite-and-resume", "resume-without-dir"])
def test_contradictory_flags(cli: CliRun, work: Path, args: list[str], fragment: str) -> None:
    before = _snapshot(work)
    code, _, err = cli("run", work / "audit.yaml", *args)
    assert code == 2 and fragment in err
    assert _snapshot(work) == before


def test_out_is_a_file(cli: CliRun, work: Path) -> None:
    code, _, err = cli("run", work / "audit.yaml", "--out", work / "cnn.pt")
    assert code == 2 and f"--out {work / 'cnn.pt'} is a file, not a directory" in err


# -- configs and model files ------------------------------------------------------------------


def _pickle(path: Path) -> Path:
    torch.save({"weights": np.zeros(3)}, path)  # a numpy array: safe loading refuses it
    return path


@pytest.mark.parametrize(("make", "key", "fragment"), [
    (lambda w: _write(w / "c.yaml", "model: {factory: audit.zoo:digits_cnn\ndata: [\n"), "<file>",
     "is not valid YAML"),
    (lambda w: _config(w, batch_size="big"), "batch_size", "Input should be a valid integer"),
    (lambda w: _config(w, seed=[1]), "seed", "Input should be a valid integer"),
    (lambda w: _config(w, sections="performance"), "sections", "Input should be a valid dictionary"),
    (lambda w: _config(w, data__limit=-5), "data.limit", "Input should be greater than 0"),
    (lambda w: _config(w, model__weights=str(w)), "model.weights", "is a directory; point model.weights at the "
     "saved model file"),
    (lambda w: _config(w, model__weights="/dev/zero"), "model.weights", "/dev/zero is not a regular file"),
    (lambda w: _config(w, model__weights=str(_pickle(w / "pickled.pt"))), "model.weights",
     "holds pickled objects that safe loading refuses. Save a state_dict"),
    (lambda w: _config(w, model__weights=str(_write(w / "zeros.pt", "\0" * 1000))), "model.weights",
     "is not a file written by torch.save (neither a zip archive nor a pickle)"),
], ids=["malformed-yaml", "batch-size-type", "seed-type", "sections-type", "negative-limit", "weights-directory",
        "weights-dev-zero", "weights-pickle", "weights-garbage"])
def test_bad_config(cli: CliRun, work: Path, make: Callable[[Path], Path], key: str, fragment: str) -> None:
    config = make(work)
    before = _snapshot(work / "run")
    code, _, err = cli("run", config, "--out", work / "new")
    assert code == 2
    assert f"nnaudit: error: config error at '{key}': " in err and fragment in err
    assert not (work / "new").exists()  # stopped before creating anything
    # and into the existing run with --overwrite: the old run survives a config that fails
    code, _, err = cli("run", config, "--out", work / "run", "--overwrite")
    assert code == 2 and fragment in err
    assert _snapshot(work / "run") == before


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_nan_in_data(cli: CliRun, work: Path) -> None:
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    np.savez(work / "nan.npz", x=x, y=np.arange(30) % 3)
    config = {"model": {"factory": "toy_models:linear"}, "data": {"source": "npz", "path": "nan.npz"},
              "device": "cpu", "sections": {"performance": {}}}
    path = _write(work / "nan.yaml", yaml.safe_dump(config))
    before = _snapshot(work / "run")
    code, _, err = cli("run", path, "--out", work / "run", "--overwrite")
    assert code == 2
    assert "nnaudit: error: nan.npz: 2 samples hold NaN or infinite values; clean or drop them first" in err
    assert _snapshot(work / "run") == before
    assert load_results(work / "run")["manifest"]["status"] == "complete"
