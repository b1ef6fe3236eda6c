"""Per-sample outcomes (audit/outcomes.py): what the sections save for pairing runs and the sample explorer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attacks.section import RobustnessSection
from audit.outcomes import OUTCOMES_FILE, OutcomesError, load_outcomes, outcomes_path, save_outcomes
from audit.performance import ImbalanceSection, PerformanceSection
from audit.results import SectionResult


@pytest.fixture
def ctx(make_context: Callable[..., Any], digits_cnn: Any, digits_test: Any) -> Any:
    return make_context(digits_cnn, digits_test, limit=90)


def test_performance_outcomes_average_to_its_metrics(ctx: Any) -> None:
    result = PerformanceSection(top_k=3)(ctx)
    assert result.status == "ok"
    saved = load_outcomes(ctx.run_dir, "performance")
    assert saved is not None and result.artifacts["outcomes"] == f"artifacts/performance/{OUTCOMES_FILE}"
    assert saved.data_sha256 == ctx.data.sha256() and np.array_equal(saved.sample_id, np.arange(90))
    assert set(saved.values) == {"performance.accuracy", "performance.error_rate", "performance.loss",
                                 "performance.top3_accuracy"}
    for name, values in saved.values.items():
        assert values.mean() == pytest.approx(result.metrics[name], rel=1e-12)
    pred = ctx.clean_predictions()
    assert np.array_equal(saved.values["performance.accuracy"], (pred == ctx.data.y).astype(float))
    assert np.array_equal(saved.extra["label"], ctx.data.y) and np.array_equal(saved.extra["prediction"], pred)
    assert saved.meta["performance.accuracy"] == {"kind": "correct"}


def test_sensitive_columns_go_with_the_performance_outcomes(make_context: Callable[..., Any], resume_mlp: Any,
                                                            resume_test: Any) -> None:
    ctx = make_context(resume_mlp, resume_test, limit=200)
    PerformanceSection()(ctx)
    saved = load_outcomes(ctx.run_dir, "performance")
    assert saved is not None and set(ctx.data.sensitive) == {"gender", "ethnicity"}
    for name, column in ctx.data.sensitive.items():
        assert np.array_equal(saved.extra[f"group/{name}"], np.asarray(column).astype(str))


def test_imbalance_outcomes_average_to_balanced_accuracy_on_imbalanced_data(
        make_context: Callable[..., Any], digits_cnn: Any, digits_test: Any) -> None:
    from sklearn.metrics import balanced_accuracy_score

    keep = np.flatnonzero((digits_test.y != 3) | (np.arange(digits_test.n_samples) % 6 == 0))  # few 3s
    ctx = make_context(digits_cnn, digits_test.subset(keep))
    result = ImbalanceSection()(ctx)
    saved = load_outcomes(ctx.run_dir, "imbalance")
    assert saved is not None and set(saved.values) == {"imbalance.balanced_accuracy"}
    expected = balanced_accuracy_score(ctx.data.y, ctx.clean_predictions())
    assert saved.values["imbalance.balanced_accuracy"].mean() == pytest.approx(expected, rel=1e-12)
    assert result.metrics["imbalance.balanced_accuracy"] == pytest.approx(expected, rel=1e-12)


def test_robustness_outcomes_per_attack_norm_and_eps(make_context: Callable[..., Any], digits_cnn: Any,
                                                     digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=120)
    section = RobustnessSection(norm=["linf", "l2"], eps={"linf": [0.05, 0.1], "l2": [0.5]}, attacks=["fgsm", "pgd"],
                                steps=5, minimal_norm=[], red_flags=False, gallery_size=0, max_samples=80)
    result = section(ctx)
    assert result.status == "ok", result.error
    saved = load_outcomes(ctx.run_dir, "robustness")
    assert saved is not None and saved.n == 80
    assert np.array_equal(saved.sample_id, ctx.adversarial["linf:0.1"].index)  # the attacked subset's rows
    expected = {f"robustness.{a}.{n}.eps={e}.robust_accuracy" for a in ("fgsm", "pgd", "worst_case")
                for n, e in (("linf", "0.05"), ("linf", "0.1"), ("l2", "0.5"))} | {"robustness.clean_accuracy"}
    expected.remove("robustness.fgsm.l2.eps=0.5.robust_accuracy")  # fgsm is L-inf only
    assert set(saved.values) == expected
    for name, values in saved.values.items():
        assert values.mean() == pytest.approx(result.metrics[name], rel=1e-12)
    worst = saved.values["robustness.worst_case.linf.eps=0.1.robust_accuracy"].astype(bool)
    assert np.array_equal(worst, ctx.adversarial["linf:0.1"].robust_correct)
    for attack in ("fgsm", "pgd"):  # worst case: robust under every attack
        assert not (worst & ~saved.values[f"robustness.{attack}.linf.eps=0.1.robust_accuracy"].astype(bool)).any()
    assert saved.meta["robustness.pgd.l2.eps=0.5.robust_accuracy"] == {"kind": "robust", "norm": "l2", "eps": 0.5,
                                                                      "attack": "pgd"}
    # the explorer's view: a robust sample keeps its label under attack; a fooled one does not
    adv = saved.extra["adv_prediction/linf/eps=0.1"]
    label = saved.extra["label"]
    assert np.array_equal(adv[worst], label[worst])
    fooled = saved.values["robustness.clean_accuracy"].astype(bool) & ~worst
    assert fooled.any() and (adv[fooled] != label[fooled]).all()
    assert set(saved.extra["fooled_by/linf/eps=0.1"][fooled]) <= {"fgsm", "pgd"}


def _result(tmp_ctx: Any, accuracy: float) -> SectionResult:
    result = SectionResult(name="toy", plugin="toy")
    result.metric("accuracy", accuracy)
    return result


def test_save_outcomes_refuses_values_that_do_not_average_to_the_metric(ctx: Any) -> None:
    correct = np.array([1, 0, 1, 1], dtype=float)
    with pytest.raises(ValueError, match=r"average to 0\.75"):
        save_outcomes(ctx, _result(ctx, 0.5), sample_id=np.arange(4), values={"accuracy": correct})
    with pytest.raises(ValueError, match="3 values for 4 sample ids"):
        save_outcomes(ctx, _result(ctx, 0.75), sample_id=np.arange(4), values={"accuracy": correct[:3]})
    with pytest.raises(ValueError, match="duplicates"):
        save_outcomes(ctx, _result(ctx, 0.75), sample_id=np.array([0, 1, 1, 2]), values={"accuracy": correct})
    assert not outcomes_path(ctx.run_dir, "toy").exists()


def test_no_file_reads_as_none_and_a_broken_file_is_an_error(tmp_path: Path) -> None:
    assert load_outcomes(tmp_path, "performance") is None
    path = outcomes_path(tmp_path, "performance")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(OutcomesError, match="cannot read"):
        load_outcomes(tmp_path, "performance")
    np.savez(path, something=np.arange(3))
    with pytest.raises(OutcomesError, match="not an nnaudit outcomes file"):
        load_outcomes(tmp_path, "performance")


def test_robustness_keeps_adversarial_probabilities_consistent_with_its_predictions(
        make_context: Callable[..., Any], digits_cnn: Any, digits_test: Any) -> None:
    """One forward pass per (norm, eps) feeds the explorer's probability vectors and the prediction extras."""
    import torch

    ctx = make_context(digits_cnn, digits_test, limit=40)
    section = RobustnessSection(norm=["linf"], eps=[0.1], attacks=["fgsm"], minimal_norm=[], red_flags=False,
                                gallery_size=0)
    assert section(ctx).status == "ok"
    saved = load_outcomes(ctx.run_dir, "robustness")
    assert saved is not None
    proba = saved.extra["adv_proba/linf/eps=0.1"]
    assert proba.shape == (40, ctx.data.num_classes)
    assert np.array_equal(proba.argmax(axis=1), saved.extra["adv_prediction/linf/eps=0.1"])
    with torch.no_grad():
        expected = ctx.model.logits(ctx.adversarial["linf:0.1"].x_adv).double().softmax(dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-6)  # float32 storage of float64 probabilities
    assert load_outcomes(ctx.run_dir, "robustness", extra=False).extra == {}  # type: ignore[union-attr]


def test_performance_outcomes_hold_what_the_explorer_shows(ctx: Any) -> None:
    PerformanceSection()(ctx)
    saved = load_outcomes(ctx.run_dir, "performance")
    assert saved is not None
    assert np.array_equal(saved.extra["x"], ctx.data.x)
    np.testing.assert_allclose(saved.extra["proba"], ctx.clean_probabilities(), atol=1e-6)
    assert not (Path(ctx.run_dir) / "artifacts" / "performance" / "samples.npz").exists()
