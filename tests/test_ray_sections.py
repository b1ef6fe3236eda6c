"""Every chunked section on Ray: one ``nnaudit run --backend ray --workers 2`` of robustness, explanations, randomized-
smoothing certification (the defenses section) and corruptions gives the single-process run's results (metrics,
findings, tables, figures, artifacts), and each section's chunks really went to Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from resume_helpers import comparable

from audit.engine.backends import RayBackend

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nnaudit[ray]'")

CONFIG: dict[str, Any] = {
    "seed": 4, "device": "cpu", "report": False,
    "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt"},
    "data": {"source": "digits", "limit": 40},
    "sections": {
        "robustness": {"eps": [0.1], "attacks": ["fgsm", "pgd"], "steps": 3, "minimal_norm": [], "check_samples": 8,
                       "gallery_size": 0, "chunk_size": 20},
        "explanations": {"methods": ["saliency", "lime"], "n_samples": 8, "chunk_size": 4, "check_samples": 4,
                         "background_size": 8, "infidelity_samples": 4, "sensitivity_samples": 2,
                         "randomization_steps": 2, "bootstrap_resamples": 200, "stability": False,
                         "method_params": {"lime": {"n_samples": 40}}},
        "defenses": {"defenses": ["smoothing"], "detection": False, "defense_params": {"smoothing": {
            "sigma": 0.12, "n0": 32, "n": 256, "radii": [0.0, 0.1, 0.25], "steps": 3, "eot_samples": 2,
            "n_eval": 32, "max_samples": 12, "attack_batch": 4, "chunk_size": 4}}},
        "corruptions": {"corruptions": ["gaussian_noise", "fog", "jpeg_compression"], "severities": [1, 5],
                        "max_samples": 24, "chunk_size": 8},
    },
}
CHUNKS = {"robustness": 2, "explanations": 2, "defenses": 3, "corruptions": 3}


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _without_ray_notes(results: dict[str, Any]) -> dict[str, Any]:
    out = comparable(results)
    for section in out.values():
        section["notes"] = [n for n in section["notes"] if "ran as ray tasks" not in n]
        # the explanations' cost table: seconds per method differ between any two runs
        section["tables"] = [t if t["name"] != "cost" else {**t, "rows": [[r[0], *r[2:]] for r in t["rows"]]}
                             for t in section["tables"]]
    return out


def test_every_chunked_section_on_ray_equals_one_process(local_ray: Any, tmp_path: Path, digits_cnn: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import yaml

    from audit.cli import main

    torch.set_num_threads(1)  # the Ray tasks run with one torch thread each
    torch.save(digits_cnn.state_dict(), tmp_path / "cnn.pt")
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(CONFIG, sort_keys=False), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "local")]) == 0
    sent: dict[str, list[int]] = {}
    real_map = RayBackend.map

    def spy(self: RayBackend, fn: Any, shared: Any, chunks: list[Any], **kwargs: Any) -> Any:
        sent.setdefault(fn.__module__, []).extend(c.k for c in chunks)
        return real_map(self, fn, shared, chunks, **kwargs)

    monkeypatch.setattr(RayBackend, "map", spy)
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 0
    assert {module: sorted(ks) for module, ks in sent.items()} == {
        "attacks.chunks": [0, 1], "explain.chunks": [0, 1], "attacks.defenses.smoothing_chunks": [0, 1, 2],
        "audit.shift.evaluate": [0, 1, 2]}
    local, sharded = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("local", "ray"))
    for name, count in CHUNKS.items():
        folder = tmp_path / "ray/artifacts" / name / "chunks"
        assert len(list(folder.rglob("*.npz"))) == count, name
        assert local["sections"][name]["status"] == "ok", local["sections"][name].get("error")
    notes = sharded["sections"]["defenses"]["notes"]
    assert any(n.startswith("smoothing: 3 chunk(s) of 4 samples ran as ray tasks") for n in notes), notes
    assert _without_ray_notes(sharded) == _without_ray_notes(local)
    # the per-sample artifacts too, not only what results.json summarizes
    for artifact in ("defenses/smoothing_sigma_0.12.npz", "explanations/attributions.npz"):
        with np.load(tmp_path / "local/artifacts" / artifact) as a, np.load(tmp_path / "ray/artifacts" / artifact) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{artifact}: {key}")
    # the numbers are not trivial
    metrics = local["sections"]
    assert 0 < metrics["defenses"]["metrics"]["defenses.smoothing.l2.radius=0.1.certified_accuracy"] < 1
    assert metrics["corruptions"]["metrics"]["corruptions.gaussian_noise.severity=5.accuracy"] < \
        metrics["corruptions"]["metrics"]["corruptions.clean_accuracy"]
