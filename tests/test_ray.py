"""The Ray backend: chunks as Ray tasks on a local Ray instance with 2 workers give exactly the single-process
results; a task whose worker dies is retried; without Ray, --backend ray says how to install it."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audit.engine.backends import RAY_MISSING, BackendError, LocalBackend, RayBackend, make_backend
from audit.engine.chunks import ChunkStore, plan, run_chunks

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nnaudit[ray]'")


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    yield ray
    ray.shutdown()


def _robustness(make_context: Any, model: Any, data: Any, backend: Any, run_dir: str) -> tuple[Any, Any]:
    from attacks.section import RobustnessSection

    ctx = make_context(model, data, limit=40, seed=7)
    ctx.run_dir = ctx.run_dir.parent / run_dir
    ctx.backend = backend
    section = RobustnessSection(eps=[0.1, 0.2], attacks=["pgd", "apgd_dlr"], steps=5, minimal_norm=["fmn"],
                                minimal_samples=10, minimal_steps=10, check_samples=8, gallery_size=2,
                                chunk_size=10, red_flag_params={"attack_samples": 8})
    return section(ctx), ctx


def test_two_ray_workers_equal_one_process(local_ray: Any, make_context: Any, digits_cnn: Any,
                                           digits_test: Any) -> None:
    import torch

    torch.set_num_threads(1)  # the Ray tasks run with one torch thread each
    single, ctx1 = _robustness(make_context, digits_cnn, digits_test, LocalBackend(), "local")
    sharded, ctx2 = _robustness(make_context, digits_cnn, digits_test, RayBackend(workers=2), "ray")
    assert single.status == sharded.status == "ok", (single.error, sharded.error)
    assert len(list((ctx2.run_dir / "artifacts/robustness/chunks").glob("*.npz"))) == 4
    assert sharded.metrics == single.metrics
    assert sharded.findings == single.findings
    for key, outcome in ctx1.adversarial.items():
        other = ctx2.adversarial[key]
        np.testing.assert_array_equal(other.x_adv, outcome.x_adv)
        np.testing.assert_array_equal(other.robust_correct, outcome.robust_correct)
        np.testing.assert_array_equal(other.min_eps, outcome.min_eps)
    # the numbers are not trivial: some samples fooled, some not
    assert 0 < single.metrics["robustness.worst_case.linf.eps=0.1.robust_accuracy"] < 1


def _die_once(shared: Any, chunk: Any, progress: Any) -> dict[str, np.ndarray]:
    """Kills its worker process the first time chunk 1 runs (a crashed node), then succeeds."""
    marker = Path(shared) / f"died-{chunk.k}"
    if chunk.k == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return {"rows": chunk.rows * 2}


def test_a_task_whose_worker_dies_is_retried(local_ray: Any, tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks", "fp")
    chunks = plan(9, 3)

    def progress(items: Any, **_: Any) -> Any:
        return items

    ran = run_chunks(store, chunks, _die_once, str(tmp_path), backend=RayBackend(workers=2), progress=progress,
                     desc="chunks")
    assert ran == 3 and (tmp_path / "died-1").exists()  # the worker did die once
    np.testing.assert_array_equal(np.concatenate([store.load(c.k)["rows"] for c in chunks]), np.arange(9) * 2)


def _fails(shared: Any, chunk: Any, progress: Any) -> dict[str, np.ndarray]:
    raise ValueError(f"bad chunk {chunk.k}")


def test_a_task_error_fails_with_its_message(local_ray: Any, tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks", "fp")
    with pytest.raises(BackendError, match=r"chunk 0 failed on Ray: .*bad chunk 0"):
        run_chunks(store, plan(2, 2), _fails, None, backend=RayBackend(workers=1), progress=lambda i, **_: i,
                   desc="chunks")


def test_without_ray_the_cli_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(BackendError, match="pip install"):
        make_backend("ray")
    config = tmp_path / "audit.yaml"
    config.write_text("model: {factory: audit.zoo:digits_cnn}\ndata: {source: digits}\nsections: {performance: {}}\n")
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--backend", "ray"])
    assert code == 2
    assert RAY_MISSING in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(BackendError, match="--address and --workers need --backend ray"):
        make_backend("local", workers=2)


def test_cli_backend_ray_equals_the_local_run(local_ray: Any, tmp_path: Path, digits_cnn: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`nnaudit run --backend ray --workers 2` through the command line: the same results file as a plain run."""
    import json

    import torch
    import yaml

    from audit.cli import main

    torch.save(digits_cnn.state_dict(), tmp_path / "cnn.pt")
    config = {"seed": 2, "device": "cpu", "report": False,
              "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
              "data": {"source": "digits", "limit": 40},
              "sections": {"robustness": {"eps": [0.1], "attacks": ["fgsm", "pgd"], "steps": 3, "minimal_norm": [],
                                          "check_samples": 8, "gallery_size": 0, "chunk_size": 10}}}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "local")]) == 0
    sent: list[int] = []
    real_map = RayBackend.map

    def spy(self: RayBackend, fn: Any, shared: Any, chunks: list[Any], **kwargs: Any) -> Any:
        sent.extend(c.k for c in chunks)
        return real_map(self, fn, shared, chunks, **kwargs)

    monkeypatch.setattr(RayBackend, "map", spy)
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 0
    assert sorted(sent) == [0, 1, 2, 3]  # the chunks went to Ray
    local, sharded = (json.loads((tmp_path / d / "results.json").read_text())["sections"]["robustness"]
                      for d in ("local", "ray"))
    assert sharded["metrics"] == local["metrics"] and sharded["findings"] == local["findings"]


def test_explanation_chunks_on_two_ray_workers_equal_one_process(local_ray: Any, make_context: Any,
                                                                 digits_cnn: Any, digits_test: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The explanations section's chunks (attributions and per-sample quality scores) as Ray tasks: the same
    attributions, scores, metrics, findings and tables as in this process, exactly (the same chunks, one torch
    thread each)."""
    import torch

    from explain.section import ExplanationsSection

    torch.set_num_threads(1)
    params: dict[str, Any] = {
        "methods": ["saliency", "gradient_shap", "lime"], "n_samples": 12, "chunk_size": 4, "check_samples": 6,
        "background_size": 8, "infidelity_samples": 4, "sensitivity_samples": 2, "randomization_steps": 2,
        "bootstrap_resamples": 200, "stability": False, "method_params": {"lime": {"n_samples": 40}}}
    sent: list[int] = []
    real_map = RayBackend.map

    def spy(self: RayBackend, fn: Any, shared: Any, chunks: list[Any], **kwargs: Any) -> Any:
        sent.extend(c.k for c in chunks)
        return real_map(self, fn, shared, chunks, **kwargs)

    monkeypatch.setattr(RayBackend, "map", spy)
    runs = {}
    for name, backend in (("local", LocalBackend()), ("ray", RayBackend(workers=2))):
        ctx = make_context(digits_cnn, digits_test, limit=40, seed=4)
        ctx.run_dir = ctx.run_dir.parent / name
        ctx.backend = backend
        result = ExplanationsSection(**params)(ctx)
        assert result.status == "ok", result.error
        runs[name] = (result, ctx)
    assert sorted(sent) == [0, 1, 2]  # the chunks went to Ray
    (local, local_ctx), (sharded, ray_ctx) = runs["local"], runs["ray"]
    assert "3 chunk(s) of 4 explained samples ran as ray tasks" in " ".join(sharded.notes)
    assert sharded.metrics == local.metrics and sharded.findings == local.findings
    assert [t for t in sharded.tables if t.name != "cost"] == [t for t in local.tables if t.name != "cost"]
    for method, attributions in local_ctx.attributions.items():
        np.testing.assert_array_equal(ray_ctx.attributions[method].values, attributions.values, err_msg=method)
    with np.load(ray_ctx.run_dir / sharded.artifacts["quality"]) as a, \
            np.load(local_ctx.run_dir / local.artifacts["quality"]) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert local.metrics["explanations.lime.sensitivity_max"] is not None
