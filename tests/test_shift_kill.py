"""``nnaudit run`` killed with SIGKILL inside the corruptions section, then ``nnaudit run --resume``: the result
equals an uninterrupted run's, and the chunk finished before the kill is kept, not redone.

The model is a black box (``model.predict_fn``, the digits CNN behind a numpy function): the section needs only
predictions. To stop the run inside the section deterministically, the function blocks once the section's first
chunk is on disk (the next call is chunk 1's) until a gate file exists; the test kills the process then, never
after a sleep tuned to this machine. The corruptions draw random numbers (noise, glass, fog), so the resumed run
equals the uninterrupted one only if each sample's draws come from its own seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from audit.engine.chunks import CHUNKS_DIR
from audit.results import load_results

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 300

MODEL = '''
import os
import time
from pathlib import Path

import numpy as np
import torch

from audit.zoo import digits_cnn

_NET = digits_cnn(width=8)
_NET.load_state_dict(torch.load(Path(__file__).with_name("cnn.pt"), weights_only=True))
_NET.eval()


def predict(x):
    """The digits CNN as a black box; blocks after the corruptions' chunk 0 is saved until the gate opens."""
    chunk0 = Path(os.environ["NNAUDIT_TEST_CHUNK0"])
    gate = Path(os.environ["NNAUDIT_TEST_GATE"])
    while chunk0.exists() and not gate.exists():
        time.sleep(0.02)
    with torch.no_grad():
        return _NET(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
'''


def _nnaudit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S, check=False)


def _comparable(results: dict[str, Any]) -> dict[str, Any]:
    return {name: {"status": s["status"], "metrics": s["metrics"], "findings": s["findings"],
                   "artifacts": s["artifacts"], "fingerprint": s.get("fingerprint")}
            for name, s in results["sections"].items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shiftkill")
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    (root / "killmodel.py").write_text(MODEL)
    config = {
        "title": "corruptions kill test", "seed": 7, "device": "cpu", "report": False, "batch_size": 16,
        "model": {"predict_fn": "killmodel:predict", "input_bounds": [0.0, 1.0], "output": "logits"},
        "data": {"source": "digits", "limit": 60},
        "sections": {"performance": {},
                     "corruptions": {"corruptions": ["gaussian_noise", "glass_blur", "fog", "jpeg_compression"],
                                     "severities": [1, 3, 5], "chunk_size": 20}},
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


def test_kill_9_inside_corruptions_then_resume(setup: dict[str, Any]) -> None:
    out = setup["root"] / "killed"
    chunks = out / "artifacts" / "corruptions" / CHUNKS_DIR
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
    assert (partial["manifest"]["status"], partial["manifest"]["current_section"]) == ("running", "corruptions")
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
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz", "1.npz", "2.npz"]
    assert "1 of 3 chunks kept from the interrupted run" in " ".join(final["sections"]["corruptions"]["notes"])
    assert _comparable(final) == _comparable(reference)
    for name in ("outcomes.npz", "examples.npz"):  # per-sample predictions and the grid's corrupted images
        with np.load(out / "artifacts" / "corruptions" / name) as a, \
                np.load(setup["reference"] / "artifacts" / "corruptions" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    metrics = final["sections"]["corruptions"]["metrics"]  # the corruptions really changed predictions
    assert metrics["corruptions.glass_blur.severity=5.accuracy"] < metrics["corruptions.clean_accuracy"]
