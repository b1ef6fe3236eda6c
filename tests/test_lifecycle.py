"""Run lifecycle in-process: statuses, exit codes, the directory lock, --overwrite and --resume decisions."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from plugin_helpers import registered_plugins
from resume_helpers import comparable

from audit.cli import EXIT_SECTION_ERROR, main
from audit.config import parse_config
from audit.context import OUTPUT_TYPES, AdversarialOutcome, AttributionSet
from audit.engine import checkpoint
from audit.engine.lock import LOCK_FILE, RunLock, inspect_lock
from audit.engine.rundir import ALREADY_A_RUN, LEFTOVERS, NOTHING_TO_RESUME
from audit.errors import RunDirError
from audit.results import RESULTS_FILE, load_results
from audit.runner import run_audit
from audit.runs import run_state

PLUGINS = '''
from audit.plugin import SectionPlugin

class Exploding(SectionPlugin):
    """Always fails."""
    name = "exploding"

    def run(self, ctx, result):
        raise RuntimeError("boom")

class Skipper(SectionPlugin):
    """Skips itself, with a reason."""
    name = "skipper"

    def run(self, ctx, result):
        result.status = "skipped"
        result.notes.append("nothing to check on this model")
'''


@pytest.fixture
def weights(tmp_path: Path, digits_cnn: Any) -> Path:
    path = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


@pytest.fixture
def extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with registered_plugins(tmp_path / "site", monkeypatch, module="nnaudit_lifecycle", source=PLUGINS,
                            entry_points="[nnaudit.sections]\nexploding = nnaudit_lifecycle:Exploding\n"
                                         "skipper = nnaudit_lifecycle:Skipper\n"):
        yield


def _config(weights: Path, sections: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
            "data": {"source": "digits", "limit": 90}, "device": "cpu", "report": False,
            "sections": sections or {"performance": {}, "imbalance": {"n_bins": 5}}, **extra}


def _yaml(tmp_path: Path, config: dict[str, Any], name: str = "audit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# -- statuses and exit codes ------------------------------------------------------------------


def test_section_error_fails_the_run_and_exits_3(tmp_path: Path, weights: Path, extra: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = _yaml(tmp_path, _config(weights, {"performance": {}, "exploding": {}, "skipper": {}}))
    assert main(["run", str(config), "--out", str(tmp_path / "a")]) == EXIT_SECTION_ERROR == 3
    results = load_results(tmp_path / "a")
    assert results["manifest"]["status"] == "failed"
    assert results["manifest"]["current_section"] is None
    assert run_state(results, tmp_path / "a").reason == "1 section(s) failed: exploding"
    err = capsys.readouterr().err  # the CLI logs to stderr
    assert "1 section(s) failed and are recorded with their error: exploding" in err
    lines = err.splitlines()
    assert "nnaudit: [2/3] exploding ERROR: plugin 'exploding' raised RuntimeError: boom (0.0 s)" in lines
    # a skipped section says why, and is not an error with an empty message
    assert "nnaudit: [3/3] skipper skipped: nothing to check on this model (0.0 s)" in lines
    assert not any(line.rstrip().endswith("ERROR:") or "ERROR:  (" in line for line in lines)
    assert main(["run", str(config), "--out", str(tmp_path / "b"), "--allow-errors"]) == 0
    assert load_results(tmp_path / "b")["manifest"]["status"] == "failed"


def test_complete_run_writes_its_config_path_and_fingerprints(tmp_path: Path, weights: Path) -> None:
    config = _yaml(tmp_path, _config(weights))
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 0
    results = load_results(tmp_path / "r")
    assert results["manifest"]["status"] == "complete"
    assert results["manifest"]["config_path"] == str(config.resolve())
    fingerprints = [s["fingerprint"] for s in results["sections"].values()]
    assert len(set(fingerprints)) == 2 and all(len(f) == 64 for f in fingerprints)
    assert not (tmp_path / "r" / LOCK_FILE).exists()  # released
    assert oct((tmp_path / "r" / RESULTS_FILE).stat().st_mode & 0o777) == "0o644"


# -- the output directory ---------------------------------------------------------------------


def test_rerun_into_a_finished_run_needs_a_flag(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "r"
    run_audit(parse_config(_config(weights)), out)
    before = _snapshot(out)
    with pytest.raises(RunDirError) as info:
        run_audit(parse_config(_config(weights)), out)
    created = load_results(out)["manifest"]["created_at"]
    assert str(info.value) == ALREADY_A_RUN.format(out=out, what=f"status complete, started {created}")
    assert "--overwrite" in str(info.value) and "--resume" in str(info.value)
    assert _snapshot(out) == before  # nothing touched


def test_overwrite_clears_the_old_run(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "r"
    run_audit(parse_config(_config(weights)), out)
    stale = out / "artifacts" / "old-section" / "leftover.npz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (out / "report.html").write_text("old report", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")  # not the run's: left alone
    old = load_results(out)
    run_audit(parse_config(_config(weights, seed=1)), out, existing="overwrite")
    assert not stale.exists() and not (out / "report.html").exists()
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    new = load_results(out)
    assert new["manifest"]["seed"] == 1 and "resumes" not in new["manifest"]
    assert new["manifest"]["created_at"] >= old["manifest"]["created_at"]


def test_leftover_artifacts_without_results_need_overwrite(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "r"
    (out / "artifacts").mkdir(parents=True)
    with pytest.raises(RunDirError) as info:
        run_audit(parse_config(_config(weights)), out)
    assert str(info.value) == LEFTOVERS.format(out=out, found="artifacts/")


def test_resume_of_a_directory_without_results(tmp_path: Path, weights: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError) as info:
        run_audit(parse_config(_config(weights)), tmp_path / "empty", existing="resume")
    assert str(info.value) == NOTHING_TO_RESUME.format(out=tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_live_lock_refuses_a_second_run(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "r"
    with RunLock(out):
        for existing in ("refuse", "overwrite", "resume"):
            with pytest.raises(RunDirError) as info:
                run_audit(parse_config(_config(weights)), out, existing=existing)
            assert f"is being written by another nnaudit run (pid {os.getpid()} on {socket.gethostname()}, " \
                   "started " in str(info.value)
        assert inspect_lock(out).state == "held"
    assert inspect_lock(out).state == "absent"


def test_a_stale_lock_is_taken_over(tmp_path: Path, weights: Path) -> None:
    """kill -9 leaves the lock file; nobody holds its flock any more, so the next run goes ahead."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "started_at": "2026-01-01T00:00:00+00:00"}), encoding="utf-8")
    info = inspect_lock(out)
    assert (info.state, info.pid) == ("stale", int(dead.stdout))
    run_audit(parse_config(_config(weights)), out)
    assert load_results(out)["manifest"]["status"] == "complete"
    assert not (out / LOCK_FILE).exists()


def test_a_lock_from_another_host_counts_by_its_heartbeat(tmp_path: Path) -> None:
    from audit.engine import lock

    out = tmp_path / "r"
    out.mkdir()
    path = out / LOCK_FILE
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started_at": "x"}), encoding="utf-8")
    assert inspect_lock(out).state == "held"  # touched just now
    old = path.stat().st_mtime - lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    assert inspect_lock(out).state == "stale"



HOLDER = """
import sys
from audit.engine import lock
lock._hostname = lambda: "elsewhere.example"  # a holder on another machine: readers go by its heartbeat
held = lock.RunLock(sys.argv[1], heartbeat_s=0.05)
held.acquire()
print("held", flush=True)
sys.stdin.read()  # hold until killed
"""


def test_the_heartbeat_thread_keeps_a_lock_held_until_its_holder_dies(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on another host holds the directory: nobody but its heartbeat thread touches the lock, yet a lock
    that looked long dead turns fresh again and readers see it held; once the holder is killed (no release),
    the file ages and readers see it stale."""
    from audit.engine import lock

    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                                   os.environ.get("PYTHONPATH")) if p)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held", holder.stderr
        path = out / LOCK_FILE
        long_ago = time.time() - 1000
        os.utime(path, (long_ago, long_ago))  # as if its last heartbeat were 1000 s ago
        deadline = time.monotonic() + 120
        while path.stat().st_mtime < long_ago + 500:  # wait for the holder's thread to touch it again
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the heartbeat never touched the lock"
            time.sleep(0.02)
        info = inspect_lock(out)
        assert (info.state, info.host) == ("held", "elsewhere.example")
        assert info.heartbeat_age_s is not None and info.heartbeat_age_s < lock.STALE_AFTER_S
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert path.exists()  # killed: never released
    last = path.stat().st_mtime_ns
    monkeypatch.setattr(lock, "STALE_AFTER_S", 1.0)
    deadline = time.monotonic() + 120
    while inspect_lock(out).state != "stale":
        assert time.monotonic() < deadline, "a dead holder's lock never went stale"
        time.sleep(0.05)
    assert path.stat().st_mtime_ns == last  # nothing touched it after the holder died

# -- resume decisions -------------------------------------------------------------------------


def test_resume_keeps_unchanged_sections_only(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "r"
    first = run_audit(parse_config(_config(weights)), out)
    # same config: everything kept, byte-identical sections
    again = run_audit(parse_config(_config(weights)), out, existing="resume")
    assert again["manifest"]["resumes"][-1]["kept"] == ["performance", "imbalance"]
    assert again["sections"] == first["sections"]
    assert again["manifest"]["created_at"] == first["manifest"]["created_at"]
    # one section's parameters changed: only it runs again
    changed = run_audit(parse_config(_config(weights, {"performance": {}, "imbalance": {"n_bins": 7}})), out,
                        existing="resume")
    assert changed["manifest"]["resumes"][-1]["kept"] == ["performance"]
    assert changed["sections"]["performance"] == first["sections"]["performance"]
    assert changed["sections"]["imbalance"]["params"]["n_bins"] == 7
    # what runs again equals a fresh run of the same config, tables and notes included
    fresh = run_audit(parse_config(_config(weights, {"performance": {}, "imbalance": {"n_bins": 7}})),
                      tmp_path / "fresh")
    assert comparable(changed) == comparable(fresh)
    # another seed (or model, or data): nothing kept
    reseeded = run_audit(parse_config(_config(weights, seed=5)), out, existing="resume")
    assert reseeded["manifest"]["resumes"][-1]["kept"] == []


def test_resume_reruns_a_failed_section(tmp_path: Path, weights: Path, extra: None) -> None:
    out = tmp_path / "r"
    run_audit(parse_config(_config(weights, {"performance": {}, "exploding": {}})), out)
    assert load_results(out)["manifest"]["status"] == "failed"
    results = run_audit(parse_config(_config(weights, {"performance": {}, "exploding": {"enabled": False}})), out,
                        existing="resume")
    assert results["manifest"]["status"] == "complete"
    assert list(results["sections"]) == ["performance"]


def test_resume_from_the_run_directory_alone(tmp_path: Path, weights: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = _yaml(tmp_path, _config(weights))
    out = tmp_path / "r"
    assert main(["run", str(config), "--out", str(out)]) == 0
    config.unlink()  # the manifest holds the config
    assert main(["run", "--resume", str(out)]) == 0
    assert load_results(out)["manifest"]["resumes"][-1]["kept"] == ["performance", "imbalance"]
    assert "nnaudit: [1/2] performance kept from the previous run" in capsys.readouterr().err.splitlines()


def test_resume_reruns_a_section_whose_checkpoint_holds_the_removed_shared_store(
        tmp_path: Path, weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint from a version that had ``ctx.shared`` (a 'shared' store) cannot be put back: the section
    runs again, the log says why, and the sections that do not read it are kept."""
    out = tmp_path / "r"
    first = run_audit(parse_config(_config(weights)), out)
    checkpoint.save(out / "artifacts" / "performance" / "context.npz", {"shared": {"threshold": 0.5}})
    results = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    results["sections"]["performance"]["context"] = "artifacts/performance/context.npz"
    (out / RESULTS_FILE).write_text(json.dumps(results), encoding="utf-8")
    nnaudit_log = logging.getLogger("nnaudit")  # the CLI tests leave it not propagating: listen on it directly
    nnaudit_log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="nnaudit"):
            again = run_audit(parse_config(_config(weights)), out, existing="resume")
    finally:
        nnaudit_log.removeHandler(caplog.handler)
    assert again["manifest"]["resumes"][-1]["kept"] == ["imbalance"]
    assert "resume: 'performance' runs again: its saved outputs cannot be read (the checkpoint holds the store " \
           "'shared' of ctx.shared, which nnaudit no longer has (nothing read it))" in caplog.messages
    assert again["sections"]["performance"]["metrics"] == first["sections"]["performance"]["metrics"]
    assert "context" not in again["sections"]["performance"]  # performance leaves nothing for later sections

def test_context_checkpoint_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    outcome = AdversarialOutcome(norm="linf", eps=0.1, attack="worst of pgd", x_adv=rng.random((5, 1, 8, 8)),
                                 clean_correct=rng.random(5) > 0.5, robust_correct=rng.random(5) > 0.5,
                                 min_eps=np.array([0.0, 0.2, np.inf, 0.05, np.inf]), index=None)
    attributions = AttributionSet(method="ig", index=np.arange(3), target=np.array([1, 2, 0]),
                                  values=rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    path = tmp_path / "context.npz"
    checkpoint.save(path, {"adversarial": {"linf:0.1": outcome}, "attributions": {"ig": attributions},
                           "shared": {"threshold": 0.5, "counts": np.arange(4)}})
    loaded = checkpoint.load(path, OUTPUT_TYPES)
    back = loaded["adversarial"]["linf:0.1"]
    assert isinstance(back, AdversarialOutcome) and back.index is None and back.eps == 0.1
    for name in ("x_adv", "clean_correct", "robust_correct", "min_eps"):
        np.testing.assert_array_equal(getattr(back, name), getattr(outcome, name))
    assert loaded["attributions"]["ig"].values.dtype == np.float32
    np.testing.assert_array_equal(loaded["attributions"]["ig"].values, attributions.values)
    assert loaded["shared"]["threshold"] == 0.5
    with pytest.raises(checkpoint.NotPersistable, match=r"shared\.0: a object cannot be saved"):
        checkpoint.save(tmp_path / "bad.npz", {"shared": {"fn": object()}})
