"""End to end: config -> runner -> results.json (schema-valid, section by section), errors recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from plugin_helpers import registered_plugins

from audit.config import load_config, parse_config
from audit.errors import ConfigError, ModelError, PluginError
from audit.plugin import available
from audit.results import load_results, validate_results
from audit.runner import run_audit


@pytest.fixture
def weights(tmp_path: Path, digits_cnn: Any) -> Path:
    path = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


def _config(weights: Path, **extra: Any) -> dict[str, Any]:
    return {"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
            "data": {"source": "digits", "limit": 120}, "device": "cpu",
            "sections": {"performance": {}, "imbalance": {"n_bins": 5}}, **extra}


@pytest.fixture
def extra_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Third-party sections registered through a real entry point, installing nothing."""
    entry_points = """
        [nnaudit.sections]
        mean_confidence = nnaudit_extra:MeanConfidence
        exploding = nnaudit_extra:Exploding
        peek = nnaudit_extra:Peek
    """
    with registered_plugins(tmp_path / "site", monkeypatch, module="nnaudit_extra", entry_points=entry_points,
                            source='''
        import json
        from audit.plugin import Params, SectionPlugin

        class MeanConfidence(SectionPlugin):
            """Mean top-class probability (a third-party check)."""
            name = "mean_confidence"

            def run(self, ctx, result):
                result.metric("value", float(ctx.clean_probabilities().max(axis=1).mean()))

        class Exploding(SectionPlugin):
            """Always fails."""
            name = "exploding"

            def run(self, ctx, result):
                raise RuntimeError("boom")

        class PeekParams(Params):
            expect: list[str] = []

        class Peek(SectionPlugin):
            """Reads results.json from disk while running."""
            name = "peek"
            ParamsModel = PeekParams

            def run(self, ctx, result):
                on_disk = json.loads((ctx.run_dir / "results.json").read_text())
                result.metric("sections_on_disk", len(on_disk["sections"]))
                result.notes.append(",".join(on_disk["sections"]))
    '''):
        yield


def test_run_writes_valid_results(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "run"
    results = run_audit(parse_config(_config(weights)), out)
    on_disk = load_results(out)  # validates against the shipped schema
    assert on_disk == json.loads(json.dumps(results))
    manifest = on_disk["manifest"]
    assert manifest["status"] == "complete" and manifest["data"]["n_samples"] == 120
    assert manifest["model"]["sha256"] and manifest["data"]["sha256"] and manifest["libraries"]["torch"]
    assert set(manifest["timings"]) >= {"load", "performance", "imbalance", "total"}
    assert on_disk["sections"]["performance"]["metrics"]["performance.accuracy"] > 0.85
    assert not (out / "report.html").exists()  # the runner writes results only: the CLI asks reports/ for it


def test_third_party_plugins_run_and_failures_are_recorded(tmp_path: Path, weights: Path,
                                                           extra_plugins: Any) -> None:
    assert available()["mean_confidence"] == "nnaudit_extra:MeanConfidence"
    config = _config(weights, sections={"performance": {}, "exploding": {}, "mean_confidence": {},
                                        "peek": {"expect": ["x"]}})
    results = run_audit(parse_config(config), tmp_path / "run")
    sections = results["sections"]
    assert sections["exploding"]["status"] == "error"
    assert "boom" in sections["exploding"]["error"]["message"]
    assert "exploding" in sections["exploding"]["error"]["message"]  # the error names the plugin
    assert sections["mean_confidence"]["status"] == "ok"
    assert 0.5 < sections["mean_confidence"]["metrics"]["mean_confidence.value"] <= 1.0
    # written section by section: when 'peek' ran, the three earlier sections were already on disk
    assert sections["peek"]["metrics"]["peek.sections_on_disk"] == 3
    validate_results(results)


def test_duplicate_plugin_names_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with registered_plugins(tmp_path / "dup", monkeypatch, module="dup",
                            entry_points="[nnaudit.sections]\nperformance = dup:Other\n", source=""):
        with pytest.raises(PluginError, match="registered twice") as info:
            available()
        assert "audit.performance.section:PerformanceSection" in str(info.value) and "dup:Other" in str(info.value)


def test_bad_section_config_stops_before_any_work(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(ConfigError) as info:
        run_audit(parse_config(_config(weights, sections={"imbalance": {"n_binz": 3}})), tmp_path / "a")
    assert info.value.key == "sections.imbalance.n_binz" and "n_bins" in info.value.message
    with pytest.raises(ConfigError) as info:
        run_audit(parse_config(_config(weights, sections={"nope": {}})), tmp_path / "b")
    assert info.value.key == "sections.nope.plugin" and "performance" in info.value.message
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_output_width_mismatch_stops_before_any_work(tmp_path: Path) -> None:
    config = {"model": {"factory": "audit.zoo:tabular_mlp", "kwargs": {"in_features": 64, "num_classes": 3}},
              "data": {"source": "resume_names"}, "device": "cpu", "sections": {"performance": {}}}
    with pytest.raises(ModelError, match="outputs 3 scores per sample but the data has 2 classes"):
        run_audit(parse_config(config), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_yaml_round_trip_and_relative_weights(tmp_path: Path, weights: Path) -> None:
    config = _config(Path(weights.name))
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(tmp_path / "audit.yaml")
    assert loaded.model.weights == weights.resolve()
    assert parse_config(loaded.model_dump(mode="json")) == loaded


def test_section_order_must_put_producers_first(tmp_path: Path, weights: Path) -> None:
    sections: dict[str, Any] = {"fairness": {}, "robustness": {}}
    with pytest.raises(ConfigError, match="move 'robustness' above 'fairness'") as info:
        run_audit(parse_config(_config(weights, sections=sections)), tmp_path / "run")
    assert info.value.key == "sections.robustness"
