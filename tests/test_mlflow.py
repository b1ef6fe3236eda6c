"""MLflow export (``nnaudit export mlflow``, ``nnaudit run --mlflow``; audit/mlflow_export.py) against a real local
MLflow tracking store (SQLite in tmp_path), read back with ``MlflowClient``: the metrics equal results.json's numeric
metrics, the verdict and status are tags, the files are artifacts, and keys that MLflow would merge stay apart.

The demo is the session's ``demo_dir`` (``NNAUDIT_DEMO_DIR=DIR`` names a finished one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from store_helpers import FAST_SECTIONS, write_config

from audit.cli import main
from audit.mlflow_export import MAX_KEY, MAX_PARAM_VALUE, KeyMap, flatten_config, mlflow_key, payload
from audit.results import all_metrics

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store; artifacts go under tmp_path (MLflow's default root is relative to the cwd)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def _check_exported(client: Any, run_id: str, run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    run = client.get_run(run_id)
    local = Path(client.download_artifacts(run_id, "metric_keys.json"))
    key_map = json.loads(local.read_text(encoding="utf-8"))
    expected = {name: value for name, value in all_metrics(results).items() if value is not None}
    logged = {key_map["metrics"][key]: value for key, value in run.data.metrics.items()}
    assert logged.keys() == expected.keys()
    for name, value in expected.items():
        assert logged[name] == value or (math.isinf(value) and abs(logged[name]) > 1e300), name
    assert set(key_map["not_logged"]) == {n for n, v in all_metrics(results).items() if v is None}
    tags = run.data.tags
    assert tags["nnaudit.verdict"] == results.get("verdict", {}).get("status", "not_gated")
    assert tags["nnaudit.status"] == results["manifest"]["status"]
    assert tags["nnaudit.run_id"] == results["manifest"]["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(results["manifest"]["config"]["seed"])
    return {"results": results, "run": run, "artifacts": _artifacts(client, run_id), "key_map": key_map}


def test_demo_run_exports_every_metric_tag_and_artifact(demo_dir: Path, tracking: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    run_dir = demo_dir / "resume-mlp"
    assert main(["export", "mlflow", str(run_dir), "--tracking-uri", tracking, "--experiment", "audits"]) == 0
    out = capsys.readouterr().out
    run_id = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=tracking)
    assert client.get_experiment_by_name("audits") is not None
    seen = _check_exported(client, run_id, run_dir)
    results = seen["results"]
    assert len(seen["run"].data.metrics) >= 400  # the fairness section alone has hundreds
    assert f"{len(seen['run'].data.metrics)} metrics" in out
    # nnaudit names with '=' (eps=0.05, group=afam) reach MLflow under keys it allows, mapped back
    renamed = {key: name for key, name in seen["key_map"]["metrics"].items() if key != name}
    assert len(renamed) > 100 and all("=" in name and "=" not in key for key, name in renamed.items())
    artifacts = seen["artifacts"]
    assert {"results.json", "report.html", "model_card.md", "metric_keys.json"} <= set(artifacts)
    figures = [a for a in artifacts if a.startswith("figures/") and a.endswith(".png")]
    n_specs = sum(1 for s in results["sections"].values() for f in s["figures"] if f["kind"] != "tree")
    assert len(figures) == n_specs > 0
    results_copy = Path(client.download_artifacts(run_id, "results.json"))
    assert json.loads(results_copy.read_text(encoding="utf-8")) == results


def test_keys_that_would_collide_stay_apart() -> None:
    keys = KeyMap()
    names = ["fairness.group=a&b.rate", "fairness.group_a_b.rate", "fairness.group=a_b.rate", "x" * 400,
             "x" * 399 + "y", ".hidden", "a/../b"]
    mapped = [keys.add(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert {keys.keys[k] for k in mapped} == set(names)
    from mlflow.utils.validation import _validate_metric_name

    for key in mapped:
        assert len(key) <= MAX_KEY
        _validate_metric_name(key)  # MLflow's own check: raises on a key it refuses
    assert mlflow_key("robustness.worst_case.linf.eps=0.05.robust_accuracy") == \
        "robustness.worst_case.linf.eps_0.05.robust_accuracy"


def test_params_flatten_the_config_within_mlflow_limits() -> None:
    flat = flatten_config({"model": {"factory": "a:b", "kwargs": {}, "weights": None}, "sections": {"x": {"eps": [
        0.1, 0.2]}}, "seed": 3})
    assert flat == {"model.factory": "a:b", "model.kwargs": "{}", "sections.x.eps": "[0.1, 0.2]", "seed": "3"}
    results = {"manifest": {"config": {"title": "t" * (MAX_PARAM_VALUE + 10), "seed": 1}, "status": "complete"},
               "sections": {"s": {"metrics": {"s.a": 1.0, "s.b": None, "s.c": "Infinity"}}}}
    data = payload(results)
    assert len(data.params["title"]) == MAX_PARAM_VALUE
    assert data.key_map["truncated_params"] == ["title"]
    assert data.metrics == {"s.a": 1.0, "s.c": math.inf}
    assert data.key_map["not_logged"] == {"s.b": "not computed (null in results.json)"}
    assert data.tags["nnaudit.verdict"] == "not_gated"


def test_run_with_mlflow_exports_and_a_failed_export_leaves_the_run_complete(
        digits_cnn: Any, tmp_path: Path, tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from mlflow.tracking import MlflowClient

    weights = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), weights)
    config = write_config(tmp_path / "cfg", weights, name="digits-cnn", sections=FAST_SECTIONS,
                          gate={"rules": ["performance.accuracy >= 0.5"]})
    good = tmp_path / "good"
    assert main(["run", str(config), "--out", str(good), "--no-report", "--mlflow", tracking]) == 0
    out = capsys.readouterr().out
    assert "  mlflow:    nnaudit: exported to MLflow run " in out
    run_id = out.split("MLflow run ")[1].split()[0]
    seen = _check_exported(MlflowClient(tracking_uri=tracking), run_id, good)
    assert seen["run"].data.tags["nnaudit.verdict"] == "pass"
    assert "report.html" not in seen["artifacts"]  # --no-report: none to log

    bad = tmp_path / "bad"
    assert main(["run", str(config), "--out", str(bad), "--no-report", "--mlflow", "nosuchscheme://x"]) == 0
    captured = capsys.readouterr()
    assert (bad / "results.json").is_file() and "audit written to" in captured.out
    assert "warning: the MLflow export failed" in captured.err
    later = f"nnaudit export mlflow {bad} --tracking-uri nosuchscheme://x"
    assert f"export it later with `{later}`" in captured.err
    assert main(["export", "mlflow", str(bad), "--tracking-uri", tracking]) == 0


def test_export_errors(tmp_path: Path, tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "mlflow", str(tmp_path / "missing"), "--tracking-uri", tracking]) == 2
    assert "no results file" in capsys.readouterr().err
