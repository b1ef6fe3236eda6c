"""The explanations section end to end: digits (images, with stability under attack) and ResumeNames (tabular)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from plugin_helpers import validate_section

from audit.context import AdversarialOutcome
from audit.errors import ConfigError
from explain.section import ExplanationsSection
from explain.stability import pick_key, select_samples

FAST = {"n_samples": 16, "check_samples": 8, "background_size": 16, "infidelity_samples": 4,
        "sensitivity_samples": 2, "stability_samples": 10, "bootstrap_resamples": 200, "randomization_steps": 2,
        "method_params": {"lime": {"n_samples": 40}, "shap_gradient": {"n_samples": 8}, "shap_deep": {"n_samples": 8},
                          "ig": {"n_steps": 16}}}




def _fgsm(model: Any, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    xt = torch.as_tensor(x).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.as_tensor(y))
    (grad,) = torch.autograd.grad(loss, xt)
    return (xt + eps * grad.sign()).clamp(0, 1).detach().numpy()


def test_digits_section_with_stability_under_attack(make_context: Any, digits_cnn: Any, digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=80)
    pred = ctx.clean_predictions()
    x_adv = _fgsm(digits_cnn, ctx.data.x, ctx.data.y, 0.15)
    adv_pred = ctx.model.predict(x_adv)
    ctx.adversarial["linf:0.15"] = AdversarialOutcome(
        norm="linf", eps=0.15, attack="fgsm (test)", x_adv=x_adv, clean_correct=pred == ctx.data.y,
        robust_correct=adv_pred == ctx.data.y)
    result = ExplanationsSection(**FAST)(ctx)
    assert result.status == "ok", result.error
    validate_section(result, ctx)
    m = result.metrics
    for method in ("ig", "saliency", "gradient_shap", "lrp", "occlusion", "shap_gradient", "lime"):
        for key in ("deletion_auc", "insertion_auc", "infidelity", "sensitivity_max", "randomization_similarity"):
            assert m[f"explanations.{method}.{key}"] is not None, (method, key)
            low, high = m[f"explanations.{method}.{key}.ci_low"], m[f"explanations.{method}.{key}.ci_high"]
            assert low <= m[f"explanations.{method}.{key}"] <= high, (method, key)
        assert m[f"explanations.{method}.faithfulness_rank"] >= 1
        assert 0.0 <= m[f"explanations.stability.{method}.topk_overlap"] <= 1.0
        assert ctx.attributions[method].values.shape == (16, 1, 8, 8)
        assert (ctx.attributions[method].target == pred[ctx.attributions[method].index]).all()
    assert m["explanations.gradient_shap.deletion_auc"] < m["explanations.random.deletion_auc"]
    unfaithful = {f.message.split(":")[0] for f in result.findings if f.code == "explanations.not_faithful"}
    for method in ("ig", "saliency", "gradient_shap", "lrp", "occlusion", "shap_gradient", "lime"):
        # the finding is given exactly where the paired interval against the random ordering does not exclude 0
        assert (method in unfaithful) == (m[f"explanations.{method}.deletion_auc"] >= m[
            "explanations.random.deletion_auc"] or _difference_spans_zero(result, method)), method
    assert m["explanations.deletion_baseline_probability"] < 0.3  # the mean digit carries little class evidence
    assert m["explanations.stability.n_flipped"] + m["explanations.stability.n_unflipped"] == 10
    assert m["explanations.stability.n_flipped"] >= 1 and m["explanations.stability.n_unflipped"] >= 1
    for group in ("unflipped", "flipped_clean_class", "flipped_adversarial_class"):
        assert 0.0 <= m[f"explanations.stability.ig.topk_overlap_{group}"] <= 1.0
    # the noise reference has the attack's size in the threat model's norm, per sample
    assert m["explanations.stability.noise_linf"] == pytest.approx(m["explanations.stability.attack_linf"], rel=1e-5)
    assert m["explanations.stability.noise_l2"] == pytest.approx(m["explanations.stability.attack_l2"], rel=0.05)
    ranking = next(t for t in result.tables if t.name == "faithfulness")
    ranked = [row for row in ranking.rows if row[0] is not None]
    assert [row[0] for row in ranked] == sorted(row[0] for row in ranked)  # ranks follow the order
    assert all(row[3].startswith("[") for row in ranking.rows)  # every AUC with its interval
    assert any(t.name == "faithfulness_differences" for t in result.tables)
    kinds = {f["name"]: f["kind"] for f in result.figures}
    assert kinds["heatmaps"] == "image_grid" and kinds["deletion_curves"] == "line"
    assert kinds["faithfulness_ranking"] == "bar" and kinds["randomization_cascade"] == "line"
    grid = next(f for f in result.figures if f["name"] == "heatmaps")
    with np.load(ctx.run_dir / result.artifacts["heatmaps"]) as archive:
        tiles = archive["tiles"]
    methods = grid["column_labels"][1:]
    assert tiles.shape[:2] == (len(grid["row_labels"]), 1 + len(methods)) and grid["styles"][0] == "image"
    assert tiles.shape[2:] == ctx.data.x.shape[1:]
    with np.load(ctx.run_dir / result.artifacts["attributions"]) as saved:
        np.testing.assert_allclose(saved["ig"], ctx.attributions["ig"].values)
    with np.load(ctx.run_dir / result.artifacts["quality"]) as per_sample:
        assert per_sample["deletion_auc.ig"].mean() == pytest.approx(m["explanations.ig.deletion_auc"])


def _difference_spans_zero(result: Any, method: str) -> bool:
    row = next(r for r in next(t for t in result.tables if t.name == "faithfulness").rows if r[1] == method)
    low, high = (float(v) for v in row[7].strip("[]").split(", "))
    return low <= 0 <= high


def test_randomization_control_fails_while_methods_are_reported_with_intervals(make_context: Any, digits_cnn: Any,
                                                                                  digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=80)
    result = ExplanationsSection(methods=["ig", "occlusion", "saliency"], quality=["randomization"], n_samples=30,
                                 check_samples=20, stability=False)(ctx)
    assert result.status == "ok", result.error
    table = next(t for t in result.tables if t.name == "randomization")
    rows = {row[0]: row for row in table.rows}
    control = next(row for name, row in rows.items() if name.startswith("control"))
    assert control[1] == pytest.approx(1.0) and control[-1] == "fails"
    m = result.metrics
    assert abs(m["explanations.randomization.control_signed_spearman"]) < 0.2  # a signed check would pass it
    for method in ("ig", "occlusion", "saliency"):
        low, high = m[f"explanations.{method}.randomization_similarity.ci_low"], \
            m[f"explanations.{method}.randomization_similarity.ci_high"]
        assert low < high < 1.0 and rows[method][2] == f"[{low:.3g}, {high:.3g}]"
        assert rows[method][-1] in ("passes", "fails", "inconclusive")
        assert m[f"explanations.{method}.randomization_ssim"] is not None
    cascade = next(f for f in result.figures if f["name"] == "randomization_cascade")
    assert cascade["series"][0]["x"] == ["8", "+ 6", "+ 2", "+ 0"]  # output layer first, cumulative
    assert not any(f.code == "explanations.randomization_check_failed" and "control" in f.message
                   for f in result.findings)


def test_progress_per_method(make_context: Any, digits_cnn: Any, digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=40)
    seen: list[tuple[str, list[Any]]] = []
    original = ctx.progress

    def recording(iterable: Any, *, desc: str, total: int | None = None) -> Any:
        items = list(iterable)
        seen.append((desc, items))
        return original(items, desc=desc, total=total)

    ctx.progress = recording  # type: ignore[method-assign]
    ExplanationsSection(methods=["saliency", "ig"], quality=["deletion", "sensitivity"], n_samples=6,
                        check_samples=3)(ctx)
    assert ("explanations: attributions", ["saliency", "ig"]) in seen
    assert ("explanations: infidelity, sensitivity", ["saliency", "ig"]) in seen


def test_stability_picks_the_eps_that_splits_fooled_and_resisting_samples_most_evenly() -> None:
    clean = np.ones(10, bool)

    def outcome(eps: float, resisting: int, norm: str = "linf") -> AdversarialOutcome:
        return AdversarialOutcome(norm=norm, eps=eps, attack="test", x_adv=np.zeros((10, 2)), clean_correct=clean,
                                  robust_correct=np.arange(10) < resisting)

    found = {"linf:0.05": outcome(0.05, 9), "linf:0.1": outcome(0.1, 4), "linf:0.2": outcome(0.2, 0),
             "l2:1.0": outcome(1.0, 5, "l2")}
    assert pick_key(found, None) == "linf:0.1"  # 4 resist, 6 fooled: both cases measured
    assert pick_key(found, "linf:0.2") == "linf:0.2"
    assert pick_key({"l2:1.0": found["l2:1.0"], "l2:2.0": outcome(2.0, 5, "l2")}, None) == "l2:2.0"  # tie: larger


def test_stability_samples_map_the_outcome_rows_to_data_rows() -> None:
    """An outcome for data rows [1, 4, 6, 7] (a robustness subset): only those can be chosen, each with its own
    adversarial input; rows 4 and 7 were moved (7 with a changed prediction), 1 and 6 were not."""
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    rows = np.array([1, 4, 6, 7])
    x_adv = x[rows].copy()
    x_adv[1] += 0.5
    x_adv[3] -= 0.5
    outcome = AdversarialOutcome(norm="linf", eps=0.5, attack="test", x_adv=x_adv, clean_correct=np.ones(4, bool),
                                 robust_correct=np.array([True, True, True, False]), index=rows)
    clean_pred = np.zeros(8, np.int64)
    sample = select_samples(outcome, x, clean_pred, np.array([0, 0, 0, 1]), n=10, seed=0)
    assert sample.index.tolist() == [4, 7] and sample.position.tolist() == [1, 3]
    assert sample.flipped.tolist() == [False, True]
    assert (sample.attacked, sample.perturbed) == (4, 2)
    with pytest.raises(ValueError, match="4 inputs for 3 row ids"):
        select_samples(AdversarialOutcome(norm="linf", eps=0.5, attack="test", x_adv=x_adv,
                                          clean_correct=np.ones(4, bool), robust_correct=np.ones(4, bool),
                                          index=rows[:3]), x, clean_pred, np.zeros(4, np.int64), n=10, seed=0)


def test_stability_is_skipped_with_a_note_without_robustness(make_context: Any, digits_cnn: Any,
                                                              digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=40)
    params = {**FAST, "n_samples": 4}
    result = ExplanationsSection(methods=["saliency", "ig"], quality=["deletion"], **params)(ctx)
    assert result.status == "ok", result.error
    assert any("stability under attack not measured" in note and "robustness" in note for note in result.notes)
    assert not any(k.startswith("explanations.stability.") for k in result.metrics)
    again = ExplanationsSection(methods=["saliency", "ig"], quality=["deletion"], **params)(
        make_context(digits_cnn, digits_test, limit=40))
    assert again.metrics == result.metrics  # deterministic for a seed


def test_resume_tabular_section(make_context: Any, resume_mlp: Any, resume_test: Any) -> None:
    ctx = make_context(resume_mlp, resume_test, limit=300)
    result = ExplanationsSection(**FAST)(ctx)
    assert result.status == "ok", result.error
    validate_section(result, ctx)
    m = result.metrics
    assert 0.5 <= m["explanations.surrogate.fidelity"] <= 1.0
    assert any(k.startswith("explanations.permutation_importance.") for k in m)
    assert any("surrogate decision tree" in note and "|---" in note for note in result.notes)
    tree = next(f for f in result.figures if f["name"] == "surrogate_tree")
    assert tree["kind"] == "tree" and tree["fidelity"] == m["explanations.surrogate.fidelity"]
    internal = [n for n in tree["nodes"] if not n["leaf"]]
    assert tree["nodes"][0]["samples"] == sum(n["samples"] for n in tree["nodes"] if n["leaf"])
    assert len([n for n in tree["nodes"] if n["leaf"]]) == len(internal) + 1  # a binary tree
    assert {n["feature"] for n in internal} <= set(resume_test.feature_names)
    assert {n["label"] for n in tree["nodes"]} <= set(resume_test.class_names)
    heat = next(f for f in result.figures if f["name"] == "top_features")
    assert heat["kind"] == "heatmap" and len(heat["y_labels"]) == 10 == len(heat["matrix"])
    assert set(heat["y_labels"]) <= set(resume_test.feature_names)
    assert len(heat["matrix"][0]) == len(heat["x_labels"])
    assert ctx.attributions["lime"].values.shape == (16, resume_test.x.shape[1])


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown explanation methods \\['gradcam'\\]"):
        ExplanationsSection(methods=["gradcam"])


def test_black_box_model_runs_the_perturbation_methods(make_context: Any, digits_cnn: Any, digits_test: Any) -> None:
    from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return digits_cnn(torch.as_tensor(batch, dtype=torch.float32)).numpy()

    box = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                 bounds=Bounds(0.0, 1.0), device=torch.device("cpu"), batch_size=256, source="fn",
                                 sha256="0" * 64)
    ctx = make_context(box, digits_test, limit=40)
    result = ExplanationsSection(**{**FAST, "n_samples": 4})(ctx)
    assert result.status == "ok", result.error
    assert set(ctx.attributions) == {"occlusion", "lime"}
    assert any(note.startswith("ig: not run") and "black box" in note for note in result.notes)
    assert any("randomization check not run" in note for note in result.notes)
    assert not result.findings or all(f.code != "explanations.method_unavailable" for f in result.findings)
    asked = ExplanationsSection(methods=["ig", "lime"], quality=["deletion"], **{**FAST, "n_samples": 4})(
        make_context(box, digits_test, limit=40))
    assert [f.code for f in asked.findings].count("explanations.method_unavailable") == 1


def test_stability_after_robustness_on_a_subset_of_the_samples(tmp_path: Any, digits_cnn: Any) -> None:
    """A real audit where the robustness section attacks 60 of 120 digits (max_samples): stability compares only
    attacked samples, each with its own adversarial input (the outcome's rows follow outcome.index)."""
    from audit.config import parse_config
    from audit.runner import run_audit

    weights = tmp_path / "digits.pt"
    torch.save(digits_cnn.state_dict(), weights)
    sections = {"robustness": {"eps": [0.1], "attacks": ["apgd_ce"], "steps": 10, "minimal_samples": 0,
                               "max_samples": 60, "red_flags": False, "gallery_size": 0},
                "explanations": {"methods": ["saliency"], "n_samples": 4, "check_samples": 2, "quality": [],
                                 "stability_samples": 12, "bootstrap_resamples": 100, "randomization_steps": 1}}
    config = {"title": "stability on a subset", "device": "cpu", "seed": 0, "sections": sections,
              "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": str(weights)},
              "data": {"source": "digits", "limit": 120}}
    results = run_audit(parse_config(config), tmp_path / "run")
    explained = results["sections"]["explanations"]
    assert explained["status"] == "ok", explained.get("error")
    m = explained["metrics"]
    assert m["explanations.stability.n_flipped"] + m["explanations.stability.n_unflipped"] == 12
    note = next(n for n in explained["notes"] if n.startswith("stability at linf:0.1: the robustness section attacked"))
    assert "60 of the 120 samples" in note
    # each compared sample is paired with its own adversarial input: within eps of it (another row's would be a
    # different digit, far beyond eps), and moved
    assert 0.0 < m["explanations.stability.attack_linf"] <= 0.1 + 1e-6
    robust = results["sections"]["robustness"]["metrics"]
    fooled = round(robust["robustness.worst_case.linf.eps=0.1.attack_success_rate"] * robust["robustness.n_attacked"])
    assert m["explanations.stability.n_flipped"] <= fooled  # a changed prediction of a clean-correct attacked row


ALL_METHODS = ["ig", "saliency", "gradient_shap", "deeplift", "lrp", "occlusion", "shap_gradient", "shap_deep",
               "shap_kernel", "lime"]


def test_a_samples_attributions_do_not_depend_on_what_else_is_explained(make_context: Any, digits_cnn: Any,
                                                                          digits_test: Any) -> None:
    """20 of 30 digits explained, then all 30 (which include those 20): the 20 get the same attributions from
    every method. The background is keyed to the run seed alone; it used to be drawn from the rows not explained,
    which moved the background methods' attributions (gradient_shap, shap_gradient, shap_deep, shap_kernel). Equal
    up to float32 rounding: a gradient method's batch of 20 rows rounds the last bit differently from one of 64."""
    params: dict[str, Any] = {"methods": ALL_METHODS, "quality": [], "stability": False, "background_size": 16,
                              "method_params": {"shap_kernel": {"n_samples": 128}, "lime": {"n_samples": 40},
                                                "shap_gradient": {"n_samples": 8}, "shap_deep": {"n_samples": 8}}}
    few = make_context(digits_cnn, digits_test, limit=30)
    assert ExplanationsSection(n_samples=20, **params)(few).status == "ok"
    every = make_context(digits_cnn, digits_test, limit=30)
    assert ExplanationsSection(n_samples=30, **params)(every).status == "ok"
    for method in ALL_METHODS:
        some, whole = few.attributions[method], every.attributions[method]
        assert len(some.index) == 20 and whole.index.tolist() == list(range(30)), method
        shared = whole.values[some.index]
        scale = float(np.abs(shared).max())
        assert scale > 0, method
        np.testing.assert_allclose(some.values, shared, rtol=1e-5, atol=1e-6 * scale, err_msg=method)
