"""``nnaudit run --backend ray`` killed with SIGKILL while chunks run as Ray tasks, then ``nnaudit run --resume
--backend ray``: the uninterrupted single-process run's results, the chunks saved before the kill kept as they were,
and whatever the killed driver's Ray instance left running does not change anything.

The kill happens while a chunk is certainly in flight, never after a sleep tuned to this machine: a third-party
attack (a real entry point, imported by the Ray workers through PYTHONPATH) lets the first worker process that calls
it run freely and holds every other worker process inside its chunk until a gate file exists. So when the first chunk
file is on disk, at least one chunk is held in flight. The attack draws random signs from torch's global generator
(and PGD draws random starts), so the resumed run equals the uninterrupted one only if every chunk's draws come from
its own seed, on whichever worker it runs.
"""

from __future__ import annotations

import contextlib
import json
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
from plugin_helpers import write_plugin_dist
from resume_helpers import comparable, resume_notes

from audit.engine.chunks import CHUNKS_DIR
from audit.results import RESULTS_FILE, load_results

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nnaudit[ray]'")

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 400

ATTACK = '''
import os
import time
from pathlib import Path

import torch

from attacks.base import Attack


class HeldSigns(Attack):
    """x + eps * random signs. The first process to call it claims $NNAUDIT_TEST_CLAIM and runs freely; any other
    process waits for $NNAUDIT_TEST_GATE (a Ray worker holding its chunk in flight)."""

    name = "held_signs"
    needs_gradients = False

    def _attack_batch(self, forward, x, y, *, eps, domain, target):
        claim, gate = Path(os.environ["NNAUDIT_TEST_CLAIM"]), Path(os.environ["NNAUDIT_TEST_GATE"])
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        except FileExistsError:
            pass
        while not gate.exists() and claim.read_text() != str(os.getpid()):
            time.sleep(0.02)
        signs = torch.randint(0, 2, x.shape, device=x.device).float() * 2 - 1
        return x + eps * signs
'''


def _nnaudit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S, check=False)


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (the killed driver's session: its Ray instance)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("raykill")
    site = root / "site"
    write_plugin_dist(site, module="nnaudit_raykilltest", source=ATTACK,
                      entry_points="[nnaudit.attacks]\nheld_signs = nnaudit_raykilltest:HeldSigns\n")
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    config = {
        "title": "ray kill test", "seed": 5, "device": "cpu", "report": False,
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
        "data": {"source": "digits", "limit": 48},
        "sections": {
            "performance": {},
            "robustness": {"eps": [0.15], "attacks": ["held_signs", "pgd"], "steps": 3, "minimal_norm": [],
                           "check_samples": 8, "gallery_size": 2, "chunk_size": 8,
                           "red_flag_params": {"attack_samples": 8}},
        },
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH"))
                                                        if p),
           "NNAUDIT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_ADDRESS": "",
           "NNAUDIT_TEST_GATE": str(root / "gate-open"), "NNAUDIT_TEST_CLAIM": str(root / "claim")}
    (root / "gate-open").touch()
    reference = root / "reference"  # uninterrupted, in one process
    done = _nnaudit(["run", str(path), "--out", str(reference)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "gate-open").unlink()
    return {"root": root, "config": path, "env": env, "gate": root / "gate-open", "claim": root / "claim",
            "reference": load_results(reference), "reference_dir": reference}


def test_kill_9_of_a_ray_driver_then_resume(setup: dict[str, Any]) -> None:
    out = setup["root"] / "killed"
    chunks = out / "artifacts" / "robustness" / CHUNKS_DIR
    setup["claim"].unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(setup["config"]), "--out", str(out),
                             "--backend", "ray", "--workers", "2"], env=setup["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not any(chunks.glob("*.npz")):  # a chunk saved; every worker but the claiming one is held
            assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no chunk finished"
            time.sleep(0.05)
        proc.kill()  # SIGKILL to the driver alone: its Ray instance gets no goodbye
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        manifest = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))["manifest"]
        assert (manifest["status"], manifest["current_section"]) == ("running", "robustness")
        saved = sorted(p.name for p in chunks.glob("*.npz"))
        assert 1 <= len(saved) < 6, saved  # at least one chunk was held in flight
        assert not list(chunks.glob(".*.tmp"))  # only the driver writes chunk files, whole or not at all
        stamps = {name: ((chunks / name).stat().st_ino, (chunks / name).stat().st_mtime_ns) for name in saved}

        # resume while whatever the killed instance left is still alive, with the gate open: a held worker that
        # survived would now finish its chunk, but it has no driver to return to, and the new run starts its own Ray
        setup["gate"].touch()
        try:
            resumed = _nnaudit(["run", "--resume", str(out), "--backend", "ray", "--workers", "2"], setup["env"])
        finally:
            setup["gate"].unlink()
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        for pid in _group(proc.pid):  # the killed driver's leftovers (its session only)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    final = load_results(out)
    assert final["manifest"]["status"] == "complete"
    assert sorted(p.name for p in chunks.glob("*.npz")) == [f"{k}.npz" for k in range(6)]
    for name, stamp in stamps.items():  # the chunks saved before the kill were kept, not redone
        assert ((chunks / name).stat().st_ino, (chunks / name).stat().st_mtime_ns) == stamp, name
    assert resume_notes(final["sections"]["robustness"]) == [
        f"{len(saved)} of 6 chunks kept from the interrupted run (artifacts/robustness/chunks/)"]
    robustness = final["sections"]["robustness"]
    robustness["notes"] = [n for n in robustness["notes"] if "ran as ray tasks" not in n]
    assert comparable(final) == comparable(setup["reference"])
    name = "x_adv_linf_eps=0.15.npy"
    np.testing.assert_array_equal(np.load(out / "artifacts/robustness" / name),
                                  np.load(setup["reference_dir"] / "artifacts/robustness" / name))
    assert final["sections"]["robustness"]["metrics"]["robustness.held_signs.linf.eps=0.15.attack_success_rate"] > 0
