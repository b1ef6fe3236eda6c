"""Metric directions: each section declares which way its metrics are better; results.json records them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from results_factory import make_results

from audit.config import parse_config
from audit.plugin import SectionPlugin
from audit.results import (
    Direction,
    SectionResult,
    all_directions,
    metric_direction,
    resolve_directions,
    validate_results,
)
from audit.runner import run_audit


def test_first_matching_pattern_wins_relative_to_the_section() -> None:
    patterns: dict[str, Direction] = {"*.ci_low": None, "*.deletion_auc*": "lower", "accuracy": "higher"}
    metrics = {"expl2.ig.deletion_auc": 0.1, "expl2.ig.deletion_auc.ci_low": 0.05, "expl2.accuracy": 0.9,
               "expl2.other": 1.0}
    assert resolve_directions(patterns, "expl2", metrics) == {
        "expl2.ig.deletion_auc": "lower", "expl2.ig.deletion_auc.ci_low": None, "expl2.accuracy": "higher"}


def test_a_bad_direction_is_refused_when_the_plugin_class_is_defined() -> None:
    with pytest.raises(TypeError, match="'better'"):
        class Bad(SectionPlugin):
            name = "bad"
            metric_directions: ClassVar[dict[str, Any]] = {"x": "better"}

            def run(self, ctx: Any, result: SectionResult) -> None:
                pass


def test_results_without_directions_still_read() -> None:
    data = make_results(with_error=False)
    assert all("directions" not in s for s in data["sections"].values())
    validate_results(data)
    assert metric_direction(data, "performance.accuracy") is None and all_directions(data) == {}


def test_runner_records_directions_and_they_survive_the_round_trip(tmp_path: Path, digits_cnn: Any) -> None:
    weights = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), weights)
    config = {"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
              "data": {"source": "digits", "limit": 60}, "device": "cpu", "report": False,
              "sections": {"performance": {}, "perf2": {"plugin": "performance"}, "imbalance": {"n_bins": 5}}}
    run_audit(parse_config(config), tmp_path / "run")
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    validate_results(data)
    assert metric_direction(data, "performance.accuracy") == "higher"
    assert metric_direction(data, "perf2.loss") == "lower"  # a renamed section: patterns are relative to it
    assert metric_direction(data, "imbalance.ece") == "lower"
    assert metric_direction(data, "imbalance.class=3.recall") == "higher"
    assert "imbalance.imbalance_ratio" in data["sections"]["imbalance"]["directions"]  # declared: neither
    assert metric_direction(data, "imbalance.imbalance_ratio") is None
    # every metric of the built-in sections has a declared entry (a new metric without one fails here)
    for section in data["sections"].values():
        assert set(section["directions"]) == set(section["metrics"])
    kept = SectionResult.from_dict(data["sections"]["imbalance"])
    assert kept.to_dict()["directions"] == data["sections"]["imbalance"]["directions"]


def test_robustness_escalation_and_defenses_metrics_have_directions() -> None:
    """Every metric the escalation writes (recorded through its own ``record``) has a declared direction; the
    defenses section's verdicts: higher is better."""
    from types import SimpleNamespace

    from attacks.defenses.section import DefensesSection
    from attacks.escalate import Escalation, record
    from attacks.section import RobustnessSection

    result = SectionResult(name="robustness", plugin="robustness")
    esc = Escalation(norm="linf", ran=["square", "bpda_apgd_dlr"], before={0.1: 0.9, 0.3: 0.8})
    record(result, esc, SimpleNamespace(worst_accuracy=lambda e: 0.1))  # type: ignore[arg-type]
    assert result.metrics
    directions = resolve_directions(RobustnessSection.metric_directions, "robustness", result.metrics)
    assert set(directions) == set(result.metrics)
    assert directions["robustness.escalation.linf.eps=0.1.robust_accuracy_before"] == "higher"
    assert directions["robustness.escalation.linf.attacks"] is None
    names = {f"defenses.bit_depth.{k}": 0.0 for k in ("verdict", "linf.eps=0.1.verdict", "clean_accuracy_cost",
                                                     "linf.eps=0.1.adaptive_robust_accuracy",
                                                     "linf.eps=0.1.naive_robust_accuracy")}
    got = resolve_directions(DefensesSection.metric_directions, "defenses", names)
    assert got == {"defenses.bit_depth.verdict": "higher", "defenses.bit_depth.linf.eps=0.1.verdict": "higher",
                   "defenses.bit_depth.clean_accuracy_cost": "lower",
                   "defenses.bit_depth.linf.eps=0.1.adaptive_robust_accuracy": "higher",
                   "defenses.bit_depth.linf.eps=0.1.naive_robust_accuracy": None}
