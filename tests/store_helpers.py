"""Helpers of the results store tests: stores on both back ends, small real runs, subprocess environments."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pg_helpers import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 300  # upper bound for a subprocess to reach a hook; the tests poll, they do not sleep to it

FAST_SECTIONS: dict[str, Any] = {"performance": {}, "imbalance": {}}
ROBUST_SECTIONS: dict[str, Any] = {
    "performance": {},
    "robustness": {"norm": ["linf", "l2"], "eps": {"linf": [0.05, 0.1], "l2": [0.5]}, "attacks": ["fgsm", "pgd"],
                   "steps": 2, "minimal_norm": [], "red_flags": True, "gallery_size": 0},
}


def store_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty store URL on ``backend``; PostgreSQL reads its password from PGPASSWORD (set here)."""
    if backend == "sqlite":
        return str(tmp_path / "stores" / "store.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("PGPASSWORD", server.password)
    return server.url(server.new_database())


def write_config(folder: Path, weights: Path, *, name: str | None = "digits-cnn", version: str | None = None,
                 seed: int = 0, sections: dict[str, Any] | None = None, gate: dict[str, Any] | None = None,
                 limit: int = 60, store: str | None = None, file: str = "audit.yaml") -> Path:
    """A digits audit config (the session's small CNN) in ``folder``."""
    model: dict[str, Any] = {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)}
    if name is not None:
        model["name"] = name
    if version is not None:
        model["version"] = version
    config: dict[str, Any] = {"title": f"{name} seed {seed}", "seed": seed, "device": "cpu", "report": False,
                              "model": model, "data": {"source": "digits", "limit": limit},
                              "sections": sections or FAST_SECTIONS}
    if gate is not None:
        config["gate"] = gate
    if store is not None:
        config["store"] = store
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_config(config_path: Path, out: Path, **overrides: Any) -> Path:
    """Run the audit in this process (the runner, as `nnaudit run` calls it); returns the run directory."""
    from audit.config import load_config
    from audit.decide.verdict import evaluate_verdict
    from audit.runner import run_audit

    config = load_config(config_path)
    for key, value in overrides.items():
        setattr(config, key, value)
    run_audit(config, out, config_path=config_path, verdict_of=evaluate_verdict)
    return out


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an `nnaudit` subprocess: this checkout importable, quiet progress, one thread."""
    env = {**os.environ, "NNAUDIT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("NNAUDIT_STORE", None)
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def register_script(url: str, run_dir: Path) -> list[str]:
    """Arguments of a python subprocess that registers one run through the store API."""
    code = ("import sys; from audit.engine.store import register_run; "
            "print(register_run(sys.argv[1], sys.argv[2]).run_id)")
    return ["-c", code, url, str(run_dir)]


def wait_for(condition: Callable[[], bool], what: str, procs: Sequence[subprocess.Popen[str]] = ()) -> None:
    """Poll until ``condition()``; fail early (with their stderr) if one of ``procs`` exits meanwhile."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"a process exited ({proc.returncode}) before {what}: {err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def reached(gate: Path) -> list[Path]:
    """The marker files of the processes that reached the hook waiting on ``gate``."""
    return sorted(gate.parent.glob(gate.name + ".*.reached"))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, out, err
