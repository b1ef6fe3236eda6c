"""Chunks as the unit of work: per-chunk files, seeds per chunk, memory-mapped adversarial examples, and a run
killed with SIGKILL in the middle of the robustness section that resumes to the uninterrupted run's results.

The kill test stops the run inside the robustness section deterministically: a third-party attack (registered
through a real entry point) blocks in the second chunk until a gate file exists, so the test kills the process
when chunk 0 is on disk and chunk 1 is in flight, never after a sleep tuned to this machine. The attack draws
random signs from torch's global generator, and PGD draws random starts, so the resumed run equals the
uninterrupted one only if every chunk's draws come from its own seed.
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

import numpy as np
import pytest
import torch
import yaml
from plugin_helpers import write_plugin_dist
from resume_helpers import comparable, comparable_section, resume_notes

from audit.engine.chunks import CHUNKS_DIR, ChunkStore, chunk_seed, plan
from audit.results import RESULTS_FILE, load_results

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 300

ATTACK = '''
import os
import time
from pathlib import Path

import torch

from attacks.base import Attack

CALLS = [0]


class GatedSigns(Attack):
    """x + eps * random signs; the second call (chunk 1 of a fresh run) waits for $NNAUDIT_TEST_GATE."""

    name = "gated_signs"
    needs_gradients = False

    def _attack_batch(self, forward, x, y, *, eps, domain, target):
        CALLS[0] += 1
        gate = Path(os.environ["NNAUDIT_TEST_GATE"])
        if CALLS[0] == 2:
            while not gate.exists():
                time.sleep(0.02)
        signs = torch.randint(0, 2, x.shape, device=x.device).float() * 2 - 1
        return x + eps * signs
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("chunks")
    site = root / "site"
    write_plugin_dist(site, module="nnaudit_chunktest",
                      entry_points="[nnaudit.attacks]\ngated_signs = nnaudit_chunktest:GatedSigns\n", source=ATTACK)
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    config = {
        "title": "chunk kill test", "seed": 5, "device": "cpu", "report": False,
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
        "data": {"source": "digits", "limit": 48},
        "sections": {
            "performance": {},
            "robustness": {"eps": [0.15], "attacks": ["gated_signs", "pgd"], "steps": 3, "minimal_norm": ["fmn"],
                           "minimal_samples": 12, "minimal_steps": 5, "check_samples": 8, "gallery_size": 2,
                           "chunk_size": 12, "red_flag_params": {"attack_samples": 8}},
        },
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH"))
                                                        if p),
           "NNAUDIT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NNAUDIT_TEST_GATE": str(root / "gate-open")}
    (root / "gate-open").touch()
    reference = root / "reference"
    done = _nnaudit(["run", str(path), "--out", str(reference)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "gate-open").unlink()
    return {"root": root, "config": path, "env": env, "gate": root / "gate-open", "reference": load_results(reference),
            "reference_dir": reference}


def _nnaudit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=WAIT_S, check=False)


def test_kill_9_inside_robustness_then_resume(setup: dict[str, Any]) -> None:
    out = setup["root"] / "killed"
    chunks = out / "artifacts" / "robustness" / CHUNKS_DIR
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(setup["config"]), "--out", str(out)],
                            env=setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not (chunks / "0.npz").exists():  # chunk 0 saved; chunk 1 waits at the gate
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "chunk 0 never finished"
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))["manifest"]
    assert (manifest["status"], manifest["current_section"]) == ("running", "robustness")
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz"]  # nothing half-written left behind
    first = (chunks / "0.npz").stat()

    setup["gate"].touch()
    try:
        resumed = _nnaudit(["run", "--resume", str(out)], setup["env"])
    finally:
        setup["gate"].unlink()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_results(out)
    assert final["manifest"]["status"] == "complete"
    again = (chunks / "0.npz").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # chunk 0 was not redone
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz", "1.npz", "2.npz", "3.npz"]
    assert resume_notes(final["sections"]["robustness"]) == [
        "1 of 4 chunks kept from the interrupted run (artifacts/robustness/chunks/)"]
    assert comparable(final) == comparable(setup["reference"])
    # the adversarial examples themselves, not only the metrics
    for name in ("x_adv_linf_eps=0.15.npy",):
        a = np.load(out / "artifacts" / "robustness" / name)
        b = np.load(setup["reference_dir"] / "artifacts" / "robustness" / name)
        np.testing.assert_array_equal(a, b)
    # the random signs really moved some samples off the clean prediction (the check above has teeth)
    metrics = final["sections"]["robustness"]["metrics"]
    assert metrics["robustness.gated_signs.linf.eps=0.15.attack_success_rate"] > 0


def test_a_changed_config_drops_old_chunks(tmp_path: Path) -> None:
    folder = tmp_path / CHUNKS_DIR
    store = ChunkStore(folder, "fp-1")
    store.save(0, {"a": np.arange(3)})
    (folder / ".1.npz.abc123.tmp").write_bytes(b"half a chunk")  # a killed writer's temporary file
    assert ChunkStore(folder, "fp-1").done(0)  # same fingerprint: kept
    assert not list(folder.glob("*.tmp"))
    assert not ChunkStore(folder, "fp-2").done(0)  # another config: gone before any work
    assert not (folder / "0.npz").exists()
    store = ChunkStore(folder, None)  # outside the runner: nothing is kept
    store.save(0, {"a": np.arange(3)})
    assert not ChunkStore(folder, None).done(0)


def test_truncated_chunk_file_is_redone(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / CHUNKS_DIR, "fp")
    store.save(1, {"a": np.arange(1000)})
    data = store.path(1).read_bytes()
    store.path(1).write_bytes(data[: len(data) // 2])
    assert not store.done(1) and not store.path(1).exists()


def test_plan_and_seeds() -> None:
    chunks = plan(10, 4)
    assert [(c.k, c.start, c.stop) for c in chunks] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert chunk_seed(0, "robustness", "linf", 1) == chunk_seed(0, "robustness", "linf", 1)
    assert len({chunk_seed(0, "robustness", "linf", k) for k in range(100)}) == 100
    with pytest.raises(ValueError, match="chunk_size"):
        plan(3, 0)


def test_section_keeps_adversarial_examples_on_disk(make_context: Any, digits_cnn: Any, digits_test: Any) -> None:
    """The worst-case adversarial examples are memory-mapped from the section's artifacts, not held in memory;
    the runner's checkpoint refers to the file instead of copying it, and reloads it memory-mapped."""
    from attacks.section import RobustnessSection
    from audit.context import OUTPUT_TYPES
    from audit.engine import checkpoint

    ctx = make_context(digits_cnn, digits_test, limit=40)
    section = RobustnessSection(eps=[0.1], attacks=["fgsm"], minimal_norm=[], red_flags=False, gallery_size=0,
                                chunk_size=16)
    result = section(ctx)
    assert result.status == "ok", result.error
    outcome = ctx.adversarial["linf:0.1"]
    assert isinstance(outcome.x_adv, np.memmap) and outcome.x_adv.shape == (40, *ctx.data.input_shape)
    assert sorted(p.name for p in (ctx.run_dir / "artifacts/robustness/chunks").glob("*.npz")) == \
        ["0.npz", "1.npz", "2.npz"]
    path = ctx.run_dir / "artifacts/robustness/context.npz"
    checkpoint.save(path, {"adversarial": dict(ctx.adversarial)})
    with np.load(path) as npz:
        assert all(npz[k].size < 100 for k in npz.files if k != "__index__")  # no copy of x_adv inside
    back = checkpoint.load(path, OUTPUT_TYPES)["adversarial"]["linf:0.1"]
    assert isinstance(back.x_adv, np.memmap)
    np.testing.assert_array_equal(back.x_adv, outcome.x_adv)
    np.testing.assert_array_equal(back.robust_correct, outcome.robust_correct)


def test_explanations_in_chunks_resume_and_match_one_pass(make_context: Any, digits_cnn: Any,
                                                          digits_test: Any) -> None:
    """Attributions in chunks of 4 equal one pass (float32 tolerance: only the batches differ, the random draws
    are keyed per sample); a rerun with the same fingerprint loads the finished chunks and redoes a missing one,
    with every metric equal."""
    from explain.section import ExplanationsSection

    params = {"methods": ["saliency", "gradient_shap"], "n_samples": 10, "quality": ["deletion"],
              "stability": False, "randomization_steps": 1, "bootstrap_resamples": 100}
    ctx = make_context(digits_cnn, digits_test, limit=60)
    ctx.fingerprints["explanations"] = "fp"
    first = ExplanationsSection(chunk_size=4, **params)(ctx)
    assert first.status == "ok", first.error
    chunks = ctx.run_dir / "artifacts/explanations/chunks"
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz", "1.npz", "2.npz"]
    kept = (chunks / "0.npz").stat().st_mtime_ns
    (chunks / "2.npz").unlink()  # the chunk in flight when the run was killed
    chunked = {m: a.values.copy() for m, a in ctx.attributions.items()}
    again = ExplanationsSection(chunk_size=4, **params)(ctx)
    assert (chunks / "0.npz").stat().st_mtime_ns == kept and (chunks / "2.npz").exists()
    assert comparable_section(again) == comparable_section(first)

    whole = make_context(digits_cnn, digits_test, limit=60)
    one = ExplanationsSection(chunk_size=1000, **params)(whole)
    for method, values in chunked.items():
        reference = whole.attributions[method].values
        scale = float(np.abs(reference).max())
        np.testing.assert_allclose(values, reference, rtol=0, atol=scale * 1e-5)
    assert one.metrics["explanations.gradient_shap.model_evaluations_per_sample"] == \
        first.metrics["explanations.gradient_shap.model_evaluations_per_sample"]


def test_folding_an_attack_into_the_reduced_worst_case_reaches_the_file(make_context: Any, digits_cnn: Any,
                                                                       digits_test: Any) -> None:
    """A later step (escalation) folds another attack into the worst case reduced from chunks: the artifact file,
    the worst-case sizes and what later sections get (copy-on-write) all show the folded rows."""
    from attacks.base import Domain
    from attacks.chunks import ChunkInputs, NormPlan, evaluate_chunk, reduce_chunks
    from attacks.evaluate import make_attack, perturbation_size
    from audit.engine.backends import LocalBackend
    from audit.engine.chunks import copy_on_write, run_chunks

    ctx = make_context(digits_cnn, digits_test, limit=30)
    x, y = ctx.data.x, ctx.data.y
    pred = ctx.clean_predictions()
    domain = Domain.from_model_data(ctx.model, ctx.data)
    norm_plan = NormPlan(norm="linf", eps=[0.05], attacks=[make_attack("fgsm", norm="linf", steps=1)],
                         minimal_attacks=[], minimal_index=np.zeros(0, np.int64), keep=np.array([0, 1]))
    shared = ChunkInputs(model=ctx.model, x=x, y=y, clean_pred=pred, domain=domain, norms=[norm_plan], seed=0,
                         section="robustness", batch_size=8)
    store = ChunkStore(tmp := ctx.run_dir / "chunks", None)
    chunks = plan(len(y), 10)
    run_chunks(store, chunks, evaluate_chunk, shared, backend=LocalBackend(), progress=lambda i, **_: i, desc="c")
    ev = reduce_chunks(store, chunks, norm_plan, n=len(y), input_shape=tuple(ctx.data.input_shape),
                       x_adv_path=lambda e: tmp / "x_adv.npy")
    robust = ev.worst_robust[0.05].copy()
    assert robust.any()
    other = np.clip(x + 0.05 * np.sign(np.random.default_rng(0).standard_normal(x.shape)), 0, 1).astype(np.float32)
    newly = ev.fold_worst(0.05, np.ones(len(y), bool), other, "other", x)
    np.testing.assert_array_equal(newly, robust)
    assert not ev.worst_robust[0.05].any() and set(ev.fooled_by[0.05][robust]) == {"other"}
    on_disk = np.load(tmp / "x_adv.npy")
    np.testing.assert_array_equal(on_disk[robust], other[robust])
    np.testing.assert_array_equal(ev.worst_size[0.05][robust], perturbation_size(other[robust], x[robust], "linf"))
    later = copy_on_write(ev.worst_x_adv[0.05])
    later[0] = -1.0  # a later section writing into its copy changes neither the file nor the section's array
    assert (np.load(tmp / "x_adv.npy")[0] != -1.0).any() and (ev.worst_x_adv[0.05][0] != -1.0).any()


def test_run_x_adv_reads_kept_rows_and_full_runs() -> None:
    """After the reduction a run holds only the check samples' adversarial inputs; a run added later (escalation)
    holds every row. ``run_x_adv`` reads both by row, and refuses a row that was not kept."""
    from attacks.base import AttackOutput
    from attacks.evaluate import NormEvaluation

    ev = NormEvaluation(norm="linf", eps=[0.1], clean_correct=np.ones(5, bool), kept_rows=np.array([1, 3]))
    none = np.zeros(5, bool)
    ev.runs[("kept", 0.1)] = AttackOutput("kept", "linf", 0.1, np.array([[10.0], [30.0]]), none, np.zeros(5), 0.0)
    ev.runs[("full", 0.1)] = AttackOutput("full", "linf", 0.1, np.arange(5.0)[:, None], none, np.zeros(5), 0.0)
    np.testing.assert_array_equal(ev.run_x_adv("kept", 0.1, np.array([1, 3])), [[10.0], [30.0]])
    np.testing.assert_array_equal(ev.run_x_adv("full", 0.1, np.array([3])), [[3.0]])
    with pytest.raises(KeyError, match="kept only for the check samples"):
        ev.run_x_adv("kept", 0.1, np.array([2]))


QUALITY_PARAMS: dict[str, Any] = {
    "methods": ["saliency", "gradient_shap", "shap_gradient", "lime", "occlusion"], "n_samples": 12,
    "check_samples": 6, "background_size": 8, "infidelity_samples": 4, "sensitivity_samples": 2,
    "randomization_steps": 2, "bootstrap_resamples": 200, "stability": False,
    "method_params": {"lime": {"n_samples": 40}, "shap_gradient": {"n_samples": 8}}}


def test_explanation_chunks_with_every_quality_metric_equal_one_chunk(make_context: Any, digits_cnn: Any,
                                                                      digits_test: Any) -> None:
    """Chunks of 5 explained samples (check samples in every chunk) give one chunk's attributions, per-sample
    quality scores and metrics. Random draws are keyed per sample id, so only float32 rounding differs, where a
    model evaluation of other rows rounds the last bit differently (measured: 2e-6 on attributions up to 10, 3e-6
    relative on metrics); counts, ranks and verdicts are equal."""
    from explain.section import ExplanationsSection

    chunked_ctx = make_context(digits_cnn, digits_test, limit=60)
    chunked = ExplanationsSection(chunk_size=5, **QUALITY_PARAMS)(chunked_ctx)
    assert chunked.status == "ok", chunked.error
    assert sorted(p.name for p in (chunked_ctx.run_dir / "artifacts/explanations/chunks").glob("*.npz")) == \
        ["0.npz", "1.npz", "2.npz"]
    with np.load(chunked_ctx.run_dir / chunked.artifacts["quality"]) as npz:
        chunked_scores = {k: npz[k] for k in npz.files}
    one_ctx = make_context(digits_cnn, digits_test, limit=60)
    one = ExplanationsSection(**QUALITY_PARAMS)(one_ctx)
    assert one.status == "ok", one.error
    for method, attributions in one_ctx.attributions.items():
        scale = float(np.abs(attributions.values).max())
        np.testing.assert_allclose(chunked_ctx.attributions[method].values, attributions.values, rtol=1e-5,
                                   atol=1e-6 * scale, err_msg=method)
    with np.load(one_ctx.run_dir / one.artifacts["quality"]) as npz:
        assert sorted(npz.files) == sorted(chunked_scores)
        for key in npz.files:
            np.testing.assert_allclose(chunked_scores[key], npz[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert len(chunked_scores["sensitivity_max.lime"]) == 6 and len(chunked_scores["infidelity.lime"]) == 12
    assert list(chunked.metrics) == list(one.metrics)
    for key, value in one.metrics.items():
        if key.endswith(("_rank", "_passes")) or isinstance(value, int) or value is None:
            assert chunked.metrics[key] == value, key
        else:
            assert chunked.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert [f.code for f in chunked.findings] == [f.code for f in one.findings]
    assert [t.name for t in chunked.tables] == [t.name for t in one.tables]


EXPLAINER = '''
import os
import time
from pathlib import Path

import torch

from explain.base import Explainer

FIRST: list[set[int]] = []


class GatedNoisyGradient(Explainer):
    """Gradient x input at the input plus noise from torch's global generator (a third-party explainer that does
    not key its draws: the chunk's seed is all that makes it repeatable). The first call on samples of a chunk other
    than the first one this process met (chunk 1 of a fresh run) waits for $NNAUDIT_TEST_GATE."""

    method = "gated_noisy_gradient"

    def _attribute(self, x, target):
        ids = {int(i) for i in self.batch_ids}
        if not FIRST:
            FIRST.append(ids)
        gate = Path(os.environ["NNAUDIT_TEST_GATE"])
        if not ids & FIRST[0]:
            while not gate.exists():
                time.sleep(0.02)
        noisy = (x + 0.05 * torch.randn_like(x)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.class_score_sum(noisy, target), noisy)
        return grad * x
'''


@pytest.fixture(scope="module")
def explain_setup(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain_chunks")
    site = root / "site"
    write_plugin_dist(site, module="nnaudit_explaintest", source=EXPLAINER, entry_points=(
        "[nnaudit.explainers]\ngated_noisy_gradient = nnaudit_explaintest:GatedNoisyGradient\n"))
    torch.save(digits_cnn.state_dict(), root / "cnn.pt")
    config = {
        "title": "explanation chunk kill test", "seed": 3, "device": "cpu", "report": False,
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
        "data": {"source": "digits", "limit": 40},
        "sections": {"explanations": {
            "methods": ["gated_noisy_gradient", "gradient_shap", "lime"], "n_samples": 16, "chunk_size": 4,
            "check_samples": 6, "background_size": 8, "infidelity_samples": 4, "sensitivity_samples": 2,
            "randomization_steps": 2, "bootstrap_resamples": 200, "stability": False,
            "method_params": {"lime": {"n_samples": 40}}}},
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH"))
                                                        if p),
           "NNAUDIT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NNAUDIT_TEST_GATE": str(root / "gate-open")}
    (root / "gate-open").touch()
    reference = root / "reference"
    done = _nnaudit(["run", str(path), "--out", str(reference)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "gate-open").unlink()
    return {"root": root, "config": path, "env": env, "gate": root / "gate-open", "reference": reference}


def _explanations(run: Path) -> dict[str, Any]:
    """Everything the section recorded, but the seconds in its cost table and the note a resumed run adds."""
    section = load_results(run)["sections"]["explanations"]
    tables = [t if t["name"] != "cost" else {**t, "rows": [[r[0], *r[2:]] for r in t["rows"]]}
              for t in section["tables"]]
    notes = [n for n in section["notes"] if not n.endswith("chunks kept from the interrupted run")]
    return {"status": section["status"], "metrics": section["metrics"], "findings": section["findings"],
            "tables": tables, "figures": section["figures"], "notes": notes, "artifacts": section["artifacts"],
            "fingerprint": section.get("fingerprint")}


def test_kill_9_inside_explanations_then_resume(explain_setup: dict[str, Any]) -> None:
    out = explain_setup["root"] / "killed"
    chunks = out / "artifacts" / "explanations" / CHUNKS_DIR
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(explain_setup["config"]), "--out",
                             str(out)], env=explain_setup["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + WAIT_S
    while not (chunks / "0.npz").exists():  # chunk 0 saved; chunk 1 waits at the gate
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "chunk 0 never finished"
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))["manifest"]
    assert (manifest["status"], manifest["current_section"]) == ("running", "explanations")
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz"]
    first = (chunks / "0.npz").stat()

    explain_setup["gate"].touch()
    try:
        resumed = _nnaudit(["run", "--resume", str(out)], explain_setup["env"])
    finally:
        explain_setup["gate"].unlink()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_results(out)["manifest"]["status"] == "complete"
    again = (chunks / "0.npz").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # chunk 0 was kept
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["0.npz", "1.npz", "2.npz", "3.npz"]
    assert "1 of 4 chunks kept from the interrupted run" in load_results(out)["sections"]["explanations"]["notes"]
    final, reference = _explanations(out), _explanations(explain_setup["reference"])
    assert final == reference
    for name in ("attributions.npz", "quality.npz"):
        with np.load(out / "artifacts/explanations" / name) as a, \
                np.load(explain_setup["reference"] / "artifacts/explanations" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    # every method ran and every quality metric was measured (the comparison above has something to compare)
    metrics = final["metrics"]
    for method in ("gated_noisy_gradient", "gradient_shap", "lime"):
        for metric in ("deletion_auc", "infidelity", "sensitivity_max", "randomization_similarity"):
            assert metrics[f"explanations.{method}.{metric}"] is not None, (method, metric)
