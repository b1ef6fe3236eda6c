"""The corruptions section end to end: on the digits CNN (white box and the same network as a black-box predict
function), mCE against a baseline run, tabular shifts on breast cancer, and the config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from plugin_helpers import section_document, validate_section

from audit.errors import ConfigError
from audit.outcomes import load_outcomes
from audit.shift.catalog import COMMON, EXTRAS, FAMILIES
from audit.shift.corruptions import corrupt
from audit.shift.sampling import sample_seeds
from audit.shift.section import CorruptionsSection

LIMIT = 90


def run(ctx: Any, **params: Any) -> Any:
    section = CorruptionsSection(**params)
    section.validate(ctx)
    result = section(ctx)
    assert result.status == "ok", result.error
    return result


@pytest.fixture(scope="module")
def weak_cnn(digits_train: Any) -> Any:
    """A baseline for the corruption errors: a narrower CNN trained for one epoch."""
    from audit.demo import _train
    from audit.zoo import digits_cnn

    torch.manual_seed(1)
    model = digits_cnn(width=4)
    _train(model, digits_train.x, digits_train.y, epochs=1, lr=3e-3, seed=1)
    return model.eval()


@pytest.fixture(scope="module")
def digits_result(digits_cnn: Any, digits_test: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from audit.context import AuditContext
    from audit.data import stratified_subset
    from audit.model import AdaptedNetwork, Bounds, SelectOutput, TorchModelAdapter

    data = digits_test.subset(stratified_subset(digits_test.y, LIMIT, 0))
    adapter = TorchModelAdapter(AdaptedNetwork(digits_cnn, None, SelectOutput(None, "logits", False)), num_classes=10,
                                output_kind="logits", bounds=Bounds(0.0, 1.0), device=torch.device("cpu"),
                                batch_size=64, source="test", sha256="0" * 64)
    ctx = AuditContext(model=adapter, data=data, run_dir=tmp_path_factory.mktemp("corr") / "run", seed=4,
                       batch_size=64)
    return ctx, run(ctx, chunk_size=40)


def test_metrics_names_directions_and_means(digits_result: tuple[Any, Any]) -> None:
    ctx, result = digits_result
    m = result.metrics
    names = [n for n in (*COMMON, *EXTRAS) if n != "saturate"]  # the digits are gray: no colour saturation
    for name in names:
        per = [m[f"corruptions.{name}.severity={s}.accuracy"] for s in range(1, 6)]
        assert m[f"corruptions.{name}.accuracy"] == pytest.approx(np.mean(per), abs=1e-12)
    assert not any("saturate" in k for k in m)
    means = {n: m[f"corruptions.{n}.accuracy"] for n in names}
    assert m["corruptions.mean_accuracy"] == pytest.approx(np.mean([means[n] for n in COMMON]), abs=1e-12)
    assert m["corruptions.worst_accuracy"] == min(means.values())
    assert m["corruptions.clean_accuracy"] == pytest.approx(float((ctx.clean_predictions() == ctx.data.y).mean()))
    assert m["corruptions.n_samples"] == LIMIT and m["corruptions.nonfinite_outputs"] == 0
    assert m["corruptions.mean_accuracy"] < m["corruptions.clean_accuracy"]
    d = result.directions
    assert d["corruptions.fog.severity=3.accuracy"] == "higher" and d["corruptions.mean_accuracy"] == "higher"
    assert d["corruptions.clean_accuracy"] == "higher" and d["corruptions.n_samples"] is None
    assert set(d) == set(m)  # every metric has a declared direction
    worst = min(means, key=means.get)  # type: ignore[arg-type]
    assert any(f"worst corruption: {worst}" in note for note in result.notes)
    validate_section(result, ctx)
    json.dumps(section_document(result, ctx), allow_nan=False)


def test_a_metric_equals_the_corruption_applied_by_hand(digits_result: tuple[Any, Any]) -> None:
    """The section's number for one random and one deterministic corruption: the same images, the same per-sample
    seeds (run seed, section, corruption, severity, sample id), the model's argmax."""
    ctx, result = digits_result
    x = torch.as_tensor(ctx.data.x)
    ids = np.arange(ctx.data.n_samples)
    for name, severity in (("glass_blur", 4), ("contrast", 2)):
        seeds = sample_seeds(ctx.seed, "corruptions", name, severity, ids)
        pred = ctx.model.logits(corrupt(x, name, severity, seeds=seeds)).argmax(dim=1).numpy()
        assert result.metrics[f"corruptions.{name}.severity={severity}.accuracy"] == float((pred == ctx.data.y).mean())


def test_outcomes_findings_and_figures(digits_result: tuple[Any, Any]) -> None:
    from reports.figures import image_grid_view, render_figure

    ctx, result = digits_result
    outcomes = load_outcomes(ctx.run_dir, "corruptions")
    assert outcomes is not None
    key = "corruptions.motion_blur.severity=5.accuracy"
    assert outcomes.values[key].mean() == result.metrics[key]
    assert set(np.unique(outcomes.values[key])) <= {0.0, 1.0}
    pred = outcomes.extra["prediction/motion_blur/severity=5"]
    np.testing.assert_array_equal(outcomes.values[key], (pred == ctx.data.y).astype(float))
    for finding in result.findings:  # a finding names a corruption far below clean
        if finding.code == "corruption_drop":
            assert finding.value <= result.metrics["corruptions.clean_accuracy"] - 0.2
    assert any(f.code == "corruption_drop" for f in result.findings)
    figures = {f["name"]: f for f in result.figures}
    assert {p["title"] for p in figures["accuracy_vs_severity"]["panels"]} == set(FAMILIES)
    heat = figures["corruption_heatmap"]
    assert len(heat["matrix"]) == 18 and len(heat["matrix"][0]) == 5
    grid = image_grid_view(figures["corruption_examples"], ctx.run_dir)
    assert [r["label"] for r in grid["rows"]] == list(FAMILIES) and grid["columns"] == 6
    for spec in figures.values():
        fig = render_figure(spec, ctx.run_dir)
        assert "cannot draw" not in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_black_box_gives_the_white_box_numbers(digits_result: tuple[Any, Any], digits_cnn: Any) -> None:
    from audit.context import AuditContext
    from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

    ctx, white = digits_result

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return digits_cnn(torch.as_tensor(x)).numpy()

    black = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                   bounds=Bounds(0.0, 1.0), device=torch.device("cpu"), batch_size=64, source="fn",
                                   sha256="1" * 64)
    box = AuditContext(model=black, data=ctx.data, run_dir=ctx.run_dir.parent / "black", seed=ctx.seed, batch_size=64)
    result = run(box, chunk_size=40, corruptions=["glass_blur", "fog", "jpeg_compression"])
    for key, value in result.metrics.items():
        if key in white.metrics and ".severity=" in key:
            assert value == white.metrics[key], key


def _write_run(result: Any, ctx: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(section_document(result, ctx), allow_nan=False))
    return folder


def test_mce_against_a_baseline_run(digits_result: tuple[Any, Any], weak_cnn: Any, make_context: Any,
                                    tmp_path: Path) -> None:
    ctx, _ = digits_result
    params = {"chunk_size": 40, "corruptions": ["gaussian_noise", "motion_blur", "fog", "speckle_noise"]}
    weak = make_context(weak_cnn, ctx.data, seed=ctx.seed, batch_size=64)
    base = run(weak, **params)
    folder = _write_run(base, weak, tmp_path / "baseline")
    ours = run(make_context(ctx.model, ctx.data, seed=ctx.seed, batch_size=64), **params, baseline=str(folder))
    m, b = ours.metrics, base.metrics
    clean, base_clean = m["corruptions.clean_accuracy"], b["corruptions.clean_accuracy"]
    for name in params["corruptions"]:
        err = [1 - m[f"corruptions.{name}.severity={s}.accuracy"] for s in range(1, 6)]
        base_err = [1 - b[f"corruptions.{name}.severity={s}.accuracy"] for s in range(1, 6)]
        assert m[f"corruptions.{name}.ce"] == pytest.approx(sum(err) / sum(base_err), rel=1e-12)
        expected = sum(e - (1 - clean) for e in err) / sum(e - (1 - base_clean) for e in base_err)
        assert m[f"corruptions.{name}.relative_ce"] == pytest.approx(expected, rel=1e-12)
    common = ["gaussian_noise", "motion_blur", "fog"]  # speckle_noise is a held-out extra: not in the mCE
    assert m["corruptions.mce"] == pytest.approx(np.mean([m[f"corruptions.{n}.ce"] for n in common]), rel=1e-12)
    assert m["corruptions.relative_mce"] == pytest.approx(
        np.mean([m[f"corruptions.{n}.relative_ce"] for n in common]), rel=1e-12)
    assert m["corruptions.mce"] < 1  # the trained CNN errs less than the one-epoch baseline
    assert ours.directions["corruptions.mce"] == "lower" and ours.directions["corruptions.fog.ce"] == "lower"
    assert ours.directions["corruptions.fog.relative_ce"] == "lower" and set(ours.directions) == set(m)
    same = run(make_context(weak_cnn, ctx.data, seed=ctx.seed, batch_size=64), **params, baseline=str(folder))
    assert same.metrics["corruptions.mce"] == pytest.approx(1.0, abs=1e-12)  # a model against itself


def test_baseline_that_cannot_serve_is_refused(digits_result: tuple[Any, Any], weak_cnn: Any, make_context: Any,
                                               tmp_path: Path) -> None:
    ctx, _ = digits_result
    weak = make_context(weak_cnn, ctx.data, seed=ctx.seed, batch_size=64)
    base = run(weak, chunk_size=90, corruptions=["fog", "contrast"], severities=[1, 2])
    folder = _write_run(base, weak, tmp_path / "b")
    cases = [({"corruptions": ["fog", "contrast"], "severities": [1, 2, 3]}, "other corruptions or severities"),
             ({"corruptions": ["fog", "snow"], "severities": [1, 2]}, "did not evaluate snow severity 1"),
             ({"corruptions": ["fog"], "severities": [1], "pixel_scale": 0.5}, "pixel_scale"),
             ({"corruptions": ["fog"], "severities": [1], "baseline_section": "nope"}, "no section 'nope'")]
    for params, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            CorruptionsSection(**params, baseline=str(folder)).validate(ctx)
        assert err.value.key == "sections.corruptions.baseline"
    doc = json.loads((folder / "results.json").read_text())
    doc["manifest"]["data"]["sha256"] = "f" * 64
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="other data"):
        CorruptionsSection(corruptions=["fog"], severities=[1], baseline=str(tmp_path / "other")).validate(ctx)
    with pytest.raises(ConfigError, match="cannot read the baseline run"):
        CorruptionsSection(baseline=str(tmp_path / "missing")).validate(ctx)


def test_config_errors_name_the_key(digits_result: tuple[Any, Any], cancer_mlp: Any, cancer_test: Any,
                                    make_context: Any, digits_cnn: Any, digits_test: Any) -> None:
    ctx, _ = digits_result
    tabular = make_context(cancer_mlp, cancer_test)
    cases: list[tuple[Any, dict[str, Any], str, str]] = [
        (tabular, {"corruptions": ["motion_blur"]}, "corruptions", "image corruption and the data are tabular"),
        (ctx, {"corruptions": ["missing_values"]}, "corruptions", "tabular shift and the data are images"),
        (ctx, {"corruptions": ["saturate"]}, "corruptions", "these images are gray"),
        (tabular, {"corruptions": ["feature_shift"]}, "corruptions", "list them under tabular.shift_features"),
        (tabular, {"tabular": {"shift_features": ["mean radiuss"]}}, "tabular.shift_features",
         "did you mean 'mean radius'"),
        (tabular, {"tabular": {"imputation": "model"}}, "tabular.imputation", "does not impute"),
        (tabular, {"tabular": {"spread": {"nope": 1.0}}}, "tabular.spread", "no feature named 'nope'"),
    ]
    for context, params, key, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            CorruptionsSection(**params).validate(context)
        assert err.value.key == f"sections.corruptions.{key}"
    for params, key, message in (({"corruptions": ["motion_blurr"]}, "corruptions", "did you mean 'motion_blur'"),
                                 ({"severities": [0, 3]}, "severities", "from \\[1, 2, 3, 4, 5\\]"),
                                 ({"tabular": {"noise": [0.1]}}, "tabular.noise", "one per severity")):
        with pytest.raises(ConfigError, match=message) as err:
            CorruptionsSection(**params)
        assert err.value.key == f"sections.corruptions.{key}"
    unbounded = make_context(digits_cnn, digits_test, limit=20)
    unbounded.model.bounds = None
    unbounded.data = unbounded.data.subset(np.arange(20))
    unbounded.data.lower = unbounded.data.upper = None
    with pytest.raises(ConfigError, match="value range") as err:
        CorruptionsSection().validate(unbounded)
    assert err.value.key == "model.input_bounds"


# -- tabular ------------------------------------------------------------------------------------


def test_tabular_shifts_on_breast_cancer(cancer_mlp: Any, cancer_test: Any, make_context: Any) -> None:
    ctx = make_context(cancer_mlp, cancer_test)
    result = run(ctx, tabular={"shift_features": ["mean radius", "worst area"]}, chunk_size=50)
    m = result.metrics
    names = ["feature_noise", "missing_values", "feature_shift=mean_radius", "feature_shift=worst_area"]
    for name in names:
        for s in range(1, 6):
            assert 0 <= m[f"corruptions.{name}.severity={s}.accuracy"] <= 1
    assert m["corruptions.mean_accuracy"] == pytest.approx(np.mean([m[f"corruptions.{n}.accuracy"] for n in names]))
    settings = {r[0]: r[1] for r in next(t for t in result.tables if t.name == "settings").rows}
    assert settings["missing values"] == "filled with the feature's mean over the audited rows"  # the MLP gives NaN
    validate_section(result, ctx)
    # no noise and no missing values: exactly the clean accuracy (the shifts change nothing else)
    zero = run(make_context(cancer_mlp, cancer_test), corruptions=["feature_noise", "missing_values"],
               tabular={"noise": [0.0] * 5, "missing": [0.0] * 5})
    for name in ("feature_noise", "missing_values"):
        assert zero.metrics[f"corruptions.{name}.accuracy"] == zero.metrics["corruptions.clean_accuracy"]
    noisy = m["corruptions.feature_noise.severity=5.accuracy"]
    assert noisy < m["corruptions.clean_accuracy"]


def test_model_imputation_is_detected_and_used(cancer_mlp: Any, cancer_test: Any, make_context: Any) -> None:
    """A black box that fills NaN with the column means itself: ``auto`` hands it NaN, and its numbers equal the
    declared mean imputation on the white box (same draws, same fill)."""
    from audit.model import PredictFunctionAdapter, SelectOutput

    means = cancer_test.x.mean(axis=0)

    def predict(x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), means, x).astype(np.float32)
        with torch.no_grad():
            return cancer_mlp(torch.as_tensor(filled)).numpy()

    black = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=2, output_kind="logits",
                                   bounds=None, device=torch.device("cpu"), batch_size=64, source="fn", sha256="2" * 64)
    own = run(make_context(black, cancer_test), corruptions=["missing_values"])
    settings = {r[0]: r[1] for r in next(t for t in own.tables if t.name == "settings").rows}
    assert settings["missing values"] == "NaN to the model (its own imputation)"
    declared = run(make_context(cancer_mlp, cancer_test), corruptions=["missing_values"],
                   tabular={"imputation": "mean"})
    for s in range(1, 6):
        key = f"corruptions.missing_values.severity={s}.accuracy"
        assert own.metrics[key] == declared.metrics[key]


def test_tabular_shift_functions(cancer_test: Any, resume_test: Any) -> None:
    from scipy import stats

    from audit.shift.sampling import TorchSampleRng
    from audit.shift.tabular import feature_noise, feature_shift, make_setup, missing_values

    x = torch.as_tensor(resume_test.x, dtype=torch.float64)
    names = list(resume_test.feature_names)
    mask = np.asarray(resume_test.perturbable, bool)
    assert 0 < mask.sum() < len(mask)  # some features fixed (one-hot columns)
    setup = make_setup(resume_test.x, perturbable=mask, feature_names=names, spreads={}, imputation="median")
    rng = TorchSampleRng(range(len(x)), dtype=torch.float64)
    noisy = feature_noise(x, 4, rng, setup)
    delta = (noisy - x).numpy()
    assert (delta[:, ~mask] == 0).all()
    moving = mask & (setup.spread > 0)
    z = delta[:, moving] / (setup.noise[3] * setup.spread[moving])
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-4  # N(0, (level * spread)^2) per feature
    as_nan = make_setup(resume_test.x, perturbable=mask, feature_names=names, spreads={}, imputation="model")
    gone = missing_values(x, 3, TorchSampleRng(range(len(x)), dtype=torch.float64), as_nan).numpy()
    missing = np.isnan(gone)
    assert not missing[:, ~mask].any()
    count, trials = int(missing[:, mask].sum()), int(mask.sum()) * len(x)
    assert stats.binomtest(count, trials, setup.missing[2]).pvalue > 1e-4
    filled = missing_values(x, 3, TorchSampleRng(range(len(x)), dtype=torch.float64), setup).numpy()  # same draws
    np.testing.assert_array_equal(filled[missing], np.broadcast_to(np.median(resume_test.x, axis=0), x.shape)[missing])
    np.testing.assert_array_equal(filled[~missing], x.numpy()[~missing])
    j = int(np.flatnonzero(mask)[0])
    shifted = feature_shift(x, 5, j, setup).numpy()
    np.testing.assert_allclose(shifted[:, j] - x.numpy()[:, j], setup.shift[4] * setup.spread[j])
    assert np.array_equal(np.delete(shifted, j, axis=1), np.delete(x.numpy(), j, axis=1))
    scaled = feature_shift(x, 2, j, make_setup(resume_test.x, perturbable=mask, feature_names=names, spreads={},
                                                imputation="mean", mode="scale")).numpy()
    col = x.numpy()[:, j]
    np.testing.assert_allclose(scaled[:, j] - col.mean(), 1.5 * (col - col.mean()), atol=1e-12)
    assert math.isclose(float(scaled[:, j].std()), 1.5 * float(col.std()), rel_tol=1e-9)


def test_comparison_with_the_robustness_section(digits_result: tuple[Any, Any], make_context: Any) -> None:
    """Robust accuracy from an earlier robustness section against the mean corrupted accuracy: a finding when the
    model holds up better under its strongest attack than under common corruptions, a note otherwise."""
    from audit.results import SectionResult

    ctx, _ = digits_result
    for robust, fragile in ((0.95, True), (0.05, False)):
        fresh = make_context(ctx.model, ctx.data, seed=ctx.seed, batch_size=64)
        earlier = SectionResult(name="robustness", plugin="robustness")
        earlier.metric("worst_case.linf.eps=0.01.robust_accuracy", min(1.0, robust + 0.02))
        earlier.metric("worst_case.linf.eps=0.1.robust_accuracy", robust)
        earlier.metric("fgsm.linf.eps=0.1.robust_accuracy", 1.0)  # not a worst case: ignored
        fresh.results["robustness"] = earlier
        result = run(fresh, corruptions=["fog", "contrast"], severities=[3, 5])
        table = next(t for t in result.tables if t.name == "robustness_comparison")
        assert [row[0] for row in table.rows] == ["robustness: worst case linf eps=0.01",
                                                  "robustness: worst case linf eps=0.1"]
        mean = result.metrics["corruptions.mean_accuracy"]
        assert all(row[2] == mean for row in table.rows)
        flagged = [f for f in result.findings if f.code == "fragile_to_corruptions"]
        assert bool(flagged) == fragile == (mean < robust)
        if fragile:
            assert "eps=0.1" in flagged[0].message
        else:
            assert any("vs worst-case robust accuracy 0.050" in n for n in result.notes)


def test_onnx_model(digits_result: tuple[Any, Any], digits_cnn: Any, tmp_path: Path) -> None:
    """An ONNX file run by onnxruntime: the section needs predictions only. Its float32 kernels differ from
    torch's by ulps, which may flip a near-tie: the accuracies agree within one sample in a hundred."""
    pytest.importorskip("onnxruntime")
    import warnings

    from audit.config import ModelConfig
    from audit.context import AuditContext
    from audit.model import Bounds, load_model

    ctx, white = digits_result
    path = tmp_path / "digits.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns about its own deprecation
        torch.onnx.export(digits_cnn.eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    adapter = load_model(ModelConfig(onnx=path, onnx_conversion="off"), num_classes=10, sample=ctx.data.x,
                         device=torch.device("cpu"), batch_size=64, default_bounds=Bounds(0.0, 1.0))
    assert adapter.kind == "onnx" and not adapter.has_gradients
    box = AuditContext(model=adapter, data=ctx.data, run_dir=tmp_path / "run", seed=ctx.seed, batch_size=64)
    result = run(box, chunk_size=40, corruptions=["gaussian_noise", "zoom_blur", "spatter"])
    for key, value in result.metrics.items():
        if ".severity=" in key:
            assert abs(value - white.metrics[key]) <= 1 / LIMIT + 1e-12, key
