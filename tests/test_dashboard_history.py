"""The dashboard's history view over a SQLite results store holding real registered runs (Streamlit's AppTest):
metric trends across a model's versions, the verdict timeline, and two picked runs opening the compare view.

The store's view of the runs comes from ``reports.history`` (``trend_specs``, ``verdict_timeline``); the tests check
those against each run's results.json, then the page that shows them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from store_helpers import ROBUST_SECTIONS, run_config, write_config
from test_app import APP, TIMEOUT

from audit.engine.store import open_store
from audit.results import load_results
from reports.history import point_label, trend_metrics, trend_specs, verdict_timeline

PASS_GATE = {"rules": ["performance.accuracy >= 0.5"]}
FAIL_GATE = {"rules": ["performance.accuracy <= 0.01"]}
PLAN = (("v1", 0, PASS_GATE), ("v2", 1, FAIL_GATE), ("v3", 2, PASS_GATE))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> Path:
    import torch

    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.save(digits_cnn.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def history_store(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> tuple[str, list[Path]]:
    """Three versions of digits-cnn (gates pass, fail, pass) and one other model, registered in a SQLite store."""
    root = tmp_path_factory.mktemp("history")
    runs = [run_config(write_config(root / f"cfg-{version}", weights, version=version, seed=seed, gate=gate,
                                    sections=ROBUST_SECTIONS), root / f"run-{version}")
            for version, seed, gate in PLAN]
    other = run_config(write_config(root / "cfg-other", weights, name="other-model"), root / "run-other")
    url = str(root / "store.db")
    with open_store(url) as store:
        for run in [*runs, other]:
            store.register(run)
    return url, runs


def _stored(url: str) -> list[dict[str, Any]]:
    with open_store(url, migrate=False) as store:
        names = trend_metrics(store.metric_names(model="digits-cnn"))
        return [run.to_dict() for run in store.runs(model="digits-cnn", metrics=names)]


def test_trends_and_timeline_hold_each_runs_numbers(history_store: tuple[str, list[Path]]) -> None:
    url, runs = history_store
    stored = _stored(url)
    assert [run["model_version"] for run in stored] == ["v1", "v2", "v3"]
    specs = {spec["name"]: spec for spec in trend_specs(stored)}
    assert list(specs) == ["trend_robust"]  # these runs have no fairness, explanation or shift section
    series = {s["label"]: s for s in specs["trend_robust"]["series"]}
    assert set(series) == {"linf eps=0.05", "linf eps=0.1", "l2 eps=0.5"}
    for index, run in enumerate(runs):
        metrics = load_results(run)["sections"]["robustness"]["metrics"]
        for label, item in series.items():
            norm, eps = label.split(" eps=")
            assert item["y"][index] == metrics[f"robustness.worst_case.{norm}.eps={eps}.robust_accuracy"]
        assert item["x"][index] == point_label(stored[index])
    timeline = verdict_timeline(stored)
    assert [(row["version"], row["seed"], row["verdict"]) for row in timeline] == [("v1", "0", "PASS"),
                                                                                 ("v2", "1", "FAIL"),
                                                                                 ("v3", "2", "PASS")]


def test_trend_groups_from_stored_runs() -> None:
    """Disparity (the store's headline), faithfulness and shift metrics make their own trends; a run without a
    metric leaves a gap."""
    runs = [{"run_id": "a" * 32, "created_at": "2026-01-01T00:00:00+00:00", "model_version": "v1", "seed": 0,
             "headline": {"worst disparity": {"metric": "fairness.sex.demographic_parity_difference", "value": 0.2}},
             "metrics": {"explanations.ig.deletion_auc": 0.3, "corruptions.mean_accuracy": 0.7,
                         "performance.mean_accuracy": 0.9}},
            {"run_id": "b" * 32, "created_at": "2026-02-01T00:00:00+00:00", "model_version": "v2", "seed": 0,
             "headline": {}, "metrics": {"explanations.ig.deletion_auc": 0.25, "explanations.lime.deletion_auc": 0.4,
                                         "corruptions.mce": "Infinity"}}]
    specs = {spec["name"]: {s["label"]: s["y"] for s in spec["series"]} for spec in trend_specs(runs)}
    assert specs == {"trend_disparity": {"worst disparity": [0.2, None]},
                     "trend_faithfulness": {"ig": [0.3, 0.25], "lime": [None, 0.4]},
                     "trend_shift": {"corruptions.mean_accuracy": [0.7, None], "corruptions.mce": [None, float("inf")]}}


def _app(monkeypatch: pytest.MonkeyPatch, runs_dir: Path, url: str | None) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", str(runs_dir)])
    monkeypatch.delenv("NNAUDIT_RUNS_DIR", raising=False)
    if url is None:
        monkeypatch.delenv("NNAUDIT_STORE", raising=False)
    else:
        monkeypatch.setenv("NNAUDIT_STORE", url)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def test_history_view_charts_trends_and_opens_compare(history_store: tuple[str, list[Path]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = history_store
    at = _app(monkeypatch, tmp_path / "no-runs-here", url)  # a store alone is enough
    assert not at.exception
    assert at.sidebar.radio(key="view").options == ["History"]
    assert "History" in [t.value for t in at.main.title]
    assert at.selectbox(key="history_model").options == ["digits-cnn", "other-model"]
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1 and "Robust accuracy (worst case over attacks)" in charts[0].proto.spec
    timeline = at.dataframe[0].value
    assert list(timeline["version"]) == ["v1", "v2", "v3"] and list(timeline["verdict"]) == ["PASS", "FAIL", "PASS"]
    picker = at.multiselect(key="history_compare")
    stored = _stored(url)
    picker.set_value([point_label(stored[0]), point_label(stored[2])]).run()
    assert not at.exception
    assert "Compare runs" in [t.value for t in at.main.title]
    assert at.selectbox(key="compare_base").value == point_label(stored[0])
    assert at.selectbox(key="compare_candidate").value == point_label(stored[2])
    lines = [e.value for kind in ("success", "error", "warning") for e in getattr(at, kind)]
    assert any(line.startswith("Compare: ") for line in lines)

    at.selectbox(key="history_model").set_value("other-model").run()
    assert not at.exception
    assert list(at.dataframe[0].value["version"]) == ["-"]


def test_history_view_is_offered_only_with_a_store(history_store: tuple[str, list[Path]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, runs = history_store
    at = _app(monkeypatch, runs[0].parent, url)
    assert at.sidebar.radio(key="view").options == ["Run", "Compare runs", "History"]
    at = _app(monkeypatch, runs[0].parent, None)
    assert at.sidebar.radio(key="view").options == ["Run", "Compare runs"]
    broken = tmp_path / "empty.db"
    at = _app(monkeypatch, tmp_path / "none", str(broken))
    assert not at.exception
    assert any("Cannot read the results store" in e.value or "No runs in the results store" in e.value
               for e in [*at.error, *at.info])
