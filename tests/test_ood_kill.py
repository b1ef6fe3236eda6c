"""``nnaudit run`` killed with SIGKILL inside the ood section, then ``nnaudit run --resume``: every metric, table,
figure, finding and note equals an uninterrupted run's, and the chunk finished before the kill is kept.

As in tests/test_shift_kill.py, the model is a black box that blocks once the section's chunk 0 is on disk until a
gate file exists, so the kill lands inside the section without a sleep tuned to this machine. The synthetic and
near-OOD sets draw random numbers (uniform and Gaussian noise, permutations, glass blur) and the autoencoder is
trained before the chunks: the resumed run equals the plain one only if each sample's draws come from its own
seed and the training is seeded.
"""

from __future__ import annotations

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
from resume_helpers import comparable, resume_notes
from test_shift_kill import MODEL

from audit.engine.chunks import CHUNKS_DIR
from audit.results import load_results

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 600


def _nnaudit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S, check=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oodkill")
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    (root / "killmodel.py").write_text(MODEL)
    config = {
        "title": "ood kill test", "seed": 5, "device": "cpu", "report": False, "batch_size": 16,
        "model": {"predict_fn": "killmodel:predict", "input_bounds": [0.0, 1.0], "output": "logits"},
        "data": {"source": "digits", "limit": 90},
        "sections": {"ood": {"near_ood": ["gaussian_noise", "glass_blur"],
                             "calibration_corruptions": ["gaussian_noise", "fog"], "severities": [1, 5],
                             "knn_k": 5, "chunk_size": 20, "autoencoder": {"hidden": [16], "epochs": 3}}},
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "NNAUDIT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NNAUDIT_TEST_GATE": str(root / "gate-open"), "NNAUDIT_TEST_CHUNK0": str(root / "none")}
    (root / "gate-open").touch()
    reference = root / "reference"
    done = _nnaudit(["run", str(path), "--out", str(reference)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "gate-open").unlink()
    return {"root": root, "config": path, "env": env, "gate": root / "gate-open", "reference": reference}


def test_kill_9_inside_ood_then_resume(setup: dict[str, Any]) -> None:
    out = setup["root"] / "killed"
    chunks = out / "artifacts" / "ood" / CHUNKS_DIR
    env = {**setup["env"], "NNAUDIT_TEST_CHUNK0": str(chunks / "0.npz")}
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(setup["config"]), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not (chunks / "0.npz").exists():  # chunk 0 saved; chunk 1 waits at the gate
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "chunk 0 never finished"
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    partial = load_results(out, validate=False)
    assert (partial["manifest"]["status"], partial["manifest"]["current_section"]) == ("running", "ood")
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz"]
    first = (chunks / "0.npz").stat()

    setup["gate"].touch()
    try:
        resumed = _nnaudit(["run", "--resume", str(out)], env)
    finally:
        setup["gate"].unlink()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_results(out)
    reference = load_results(setup["reference"])
    assert final["manifest"]["status"] == "complete"
    again = (chunks / "0.npz").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # chunk 0 was not redone
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz", "1.npz", "2.npz", "3.npz"]
    assert resume_notes(final["sections"]["ood"]) == ["1 of 4 chunks kept from the interrupted run "
                                                      "(artifacts/ood/chunks/)"]
    assert comparable(final) == comparable(reference)
    metrics = final["sections"]["ood"]["metrics"]
    # a black box: the logit detectors and the autoencoder; ODIN, Mahalanobis and KNN skipped with a note
    summaries = {k.split(".")[1] for k in metrics if k.endswith(".auroc") and k.count(".") == 2}
    assert summaries == {"msp", "max_logit", "energy", "autoencoder"}
