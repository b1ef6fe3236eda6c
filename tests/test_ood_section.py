"""The ood section end to end on the digits CNN: metric keys and their means, metrics recomputed by hand from the
model, calibration with temperature scaling, a black box, the config errors, and a gate rule on a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from plugin_helpers import validate_section

from audit.errors import ConfigError
from audit.shift.calibration import softmax, summarize
from audit.shift.ood_metrics import detection_metrics
from audit.shift.ood_section import OODSection
from audit.shift.ood_setup import split_rows

LIMIT = 150
DETECTORS = ["msp", "max_logit", "energy", "odin", "mahalanobis", "knn", "autoencoder"]


def _params(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"fit_data": {"source": "digits", "split": "train"}, "max_fit_samples": 400,
            "ood_data": [{"name": "inverted", "data": {"source": "npz", "path": str(tmp / "inverted.npz")}}],
            "near_ood": ["gaussian_noise", "contrast"], "calibration_corruptions": ["gaussian_noise", "fog"],
            "severities": [1, 5], "knn_k": 10, "chunk_size": 40,
            "autoencoder": {"hidden": [32, 8], "epochs": 5}, **extra}


def _run(ctx: Any, **params: Any) -> Any:
    section = OODSection(**params)
    section.validate(ctx)
    result = section(ctx)
    assert result.status == "ok", result.error
    return result


@pytest.fixture(scope="module")
def inverted(digits_train: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user OOD set: digits with black and white swapped (real images, off the training distribution)."""
    folder = tmp_path_factory.mktemp("oodsets")
    x = 1.0 - digits_train.x[:120]
    np.savez(folder / "inverted.npz", x=x.astype(np.float32), y=np.zeros(len(x), np.int64))
    return folder


@pytest.fixture(scope="module")
def ood_result(digits_cnn: Any, digits_test: Any, inverted: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, dict[str, Any]]:
    from audit.context import AuditContext
    from audit.data import stratified_subset
    from audit.model import TorchModelAdapter

    data = digits_test.subset(stratified_subset(digits_test.y, LIMIT, 0))
    adapter = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0), batch_size=64)
    ctx = AuditContext(model=adapter, data=data, run_dir=tmp_path_factory.mktemp("ood") / "run", seed=3,
                       batch_size=64)
    params = _params(inverted)
    return ctx, _run(ctx, **params), params


def test_keys_summaries_and_schema(ood_result: tuple[Any, Any, dict[str, Any]]) -> None:
    ctx, result, _ = ood_result
    m = result.metrics
    sets = ["inverted", "uniform", "gaussian", "permuted", "near_gaussian_noise", "near_contrast"]
    for det in DETECTORS:
        for key in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"):
            per_set = [m[f"ood.{s}.{det}.{key}"] for s in sets]
            assert all(0.0 <= v <= 1.0 for v in per_set)
            assert m[f"ood.{det}.{key}"] == pytest.approx(np.mean(per_set), abs=1e-12)
    best = max(DETECTORS, key=lambda d: m[f"ood.{d}.auroc"])
    assert m["ood.best_auroc"] == m[f"ood.{best}.auroc"]
    assert m["ood.uniform.n_samples"] == m["ood.n_in_distribution"] == LIMIT - round(0.3 * LIMIT)
    assert m["ood.inverted.n_samples"] == 120
    assert result.directions["ood.energy.fpr_at_95_tpr"] == "lower"
    assert result.directions["ood.best_auroc"] == "higher"
    names = {f["name"] for f in result.figures}
    assert {"ood_roc", "ood_histograms", "ood_reliability", "ood_ece_vs_severity"} <= names
    hist = next(f for f in result.figures if f["name"] == "ood_histograms")
    assert [p["kind"] for p in hist["panels"]] == ["histogram"] * len(sets)
    validate_section(result, ctx)


def test_metrics_equal_the_model_scored_by_hand(ood_result: tuple[Any, Any, dict[str, Any]],
                                                digits_cnn: Any) -> None:
    ctx, result, _ = ood_result
    _hold, evaluate = split_rows(ctx.data.y, 2000, 0.3, ctx.seed)
    inverted = np.load(Path(result.params["ood_data"][0]["data"]["path"]))["x"]
    with torch.no_grad():
        z_in = digits_cnn(torch.as_tensor(ctx.data.x[evaluate], dtype=torch.float32)).double()
        z_out = digits_cnn(torch.as_tensor(inverted, dtype=torch.float32)).double()
    for det, s_in, s_out in (("energy", -torch.logsumexp(z_in, 1), -torch.logsumexp(z_out, 1)),
                             ("max_logit", -z_in.max(1).values, -z_out.max(1).values)):
        expected = detection_metrics(s_in.numpy(), s_out.numpy())
        for key, value in expected.as_dict().items():
            assert result.metrics[f"ood.inverted.{det}.{key}"] == pytest.approx(value, abs=1e-9), (det, key)
    conf_in, conf_out = softmax(z_in.numpy()).max(1), softmax(z_out.numpy()).max(1)
    assert result.metrics["ood.inverted.confident_share"] == pytest.approx(np.mean(conf_out > np.median(conf_in)))


def test_temperature_scaling_changes_no_prediction(ood_result: tuple[Any, Any, dict[str, Any]],
                                                   digits_cnn: Any) -> None:
    ctx, result, _ = ood_result
    m = result.metrics
    t = m["ood.calibration.temperature"]
    assert t > 0 and m["ood.calibration.predictions_changed"] == 0
    hold, evaluate = split_rows(ctx.data.y, 2000, 0.3, ctx.seed)
    logits = ctx.clean_logits()[evaluate].numpy()
    by_hand = summarize(logits, ctx.data.y[evaluate], t, 15)
    assert m["ood.calibration.ece"] == pytest.approx(by_hand.ece, abs=1e-7)
    assert m["ood.calibration.ece_scaled"] == pytest.approx(by_hand.ece_scaled, abs=1e-7)
    assert np.array_equal(softmax(logits).argmax(1), softmax(logits, t).argmax(1))
    # temperature scaling minimizes the held-out NLL: no other T does better there
    held = ctx.clean_logits()[hold].numpy()
    from audit.shift.calibration import nll

    best = nll(held, ctx.data.y[hold], t)
    assert all(best <= nll(held, ctx.data.y[hold], t * f) + 1e-9 for f in (0.8, 0.95, 1.05, 1.25))
    # accuracy falls with severity on the pooled corrupted rows
    assert m["ood.calibration.severity=5.accuracy"] < m["ood.calibration.severity=1.accuracy"]


def test_black_box_skips_gradient_and_feature_detectors(ood_result: tuple[Any, Any, dict[str, Any]],
                                                        digits_cnn: Any, make_context: Any) -> None:
    from audit.model import Bounds, PredictFunctionAdapter, SelectOutput

    ctx, white, params = ood_result

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return digits_cnn(torch.as_tensor(x, dtype=torch.float32)).numpy()

    black = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                   bounds=Bounds(0.0, 1.0), device=torch.device("cpu"), batch_size=64,
                                   source="fn", sha256="1" * 64)
    bctx = make_context(black, ctx.data, seed=ctx.seed, batch_size=64)
    result = _run(bctx, **params)
    assert any("odin (needs input gradients" in n for n in result.notes)
    assert not any(k.startswith(("ood.odin.", "ood.knn.", "ood.mahalanobis.")) for k in result.metrics)
    for key in ("ood.energy.auroc", "ood.msp.fpr_at_95_tpr", "ood.calibration.ece_scaled"):
        assert result.metrics[key] == pytest.approx(white.metrics[key], abs=1e-6), key
    with pytest.raises(ConfigError, match=r"sections\.ood\.detectors.*odin does not apply"):
        OODSection(**{**params, "detectors": ["energy", "odin"]}).validate(bctx)


def test_config_errors_name_the_key(ood_result: tuple[Any, Any, dict[str, Any]], tmp_path: Path) -> None:
    ctx, _, params = ood_result
    with pytest.raises(ConfigError, match=r"sections\.ood\.feature_layer.*no layer named 'fc9'.*valid names"):
        OODSection(**{**params, "feature_layer": "fc9"}).validate(ctx)
    big = tmp_path / "big.npz"
    np.savez(big, x=np.zeros((5, 1, 28, 28), np.float32), y=np.zeros(5, np.int64))
    bad = [{"name": "big", "data": {"source": "npz", "path": str(big)}}]
    with pytest.raises(ConfigError, match=r"sections\.ood\.ood_data\.0\.data.*\[1, 28, 28\].*\[1, 8, 8\].*resize"):
        OODSection(**{**params, "ood_data": bad}).validate(ctx)
    resized = OODSection(**{**params, "ood_data": [{**bad[0], "resize": [8, 8]}]})
    resized.validate(ctx)
    with pytest.raises(ConfigError, match=r"sections\.ood\.detectors.*unknown detector 'enrgy'.*'energy'"):
        OODSection(detectors=["enrgy"])
    with pytest.raises(ConfigError, match=r"sections\.ood\.ood_data\.0\.name"):
        OODSection(ood_data=[{"name": "in", "data": {"source": "digits"}}])


def test_gate_rule_on_a_real_run(tmp_path: Path, digits_cnn: Any, inverted: Path) -> None:
    """nnaudit run with the ood section, then nnaudit gate on ood.energy.fpr_at_95_tpr: passes at the measured
    value, fails just below it."""
    torch.save(digits_cnn.state_dict(), tmp_path / "cnn.pt")
    params = _params(inverted, detectors=["msp", "energy"], synthetic=["uniform"], near_ood=[],
                     calibration_corruptions=["contrast"])
    config = {"title": "ood gate", "seed": 0, "device": "cpu", "report": True,
              "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "cnn.pt",
                        "input_bounds": [0.0, 1.0]},
              "data": {"source": "digits", "limit": 120}, "sections": {"ood": params}}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "audit.cli", "run", str(tmp_path / "audit.yaml"), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    value = json.loads((tmp_path / "run" / "results.json").read_text())["sections"]["ood"]["metrics"][
        "ood.energy.fpr_at_95_tpr"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "ood_roc" in html or "ROC curves" in html
    codes = {}
    for name, threshold in (("pass", value), ("fail", value - 0.01)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"rules": [f"ood.energy.fpr_at_95_tpr <= "
                                                                          f"{threshold!r}"]}))
        gate = subprocess.run([sys.executable, "-m", "audit.cli", "gate", str(tmp_path / "run"), "--policy",
                               str(tmp_path / f"{name}.yaml")], capture_output=True, text=True, timeout=300,
                              check=False)
        codes[name] = gate.returncode
    assert codes == {"pass": 0, "fail": 1}


def test_demo_runs_the_ood_section(demo_dir: Path) -> None:
    """The digits demo: Fashion-MNIST among the OOD sets (when installed), the autoencoder's AUROC reported,
    temperature scaling changes no prediction, and the figures are drawn in report.html."""
    from system import fashion_mnist_missing, need

    from audit.results import load_results

    section = load_results(demo_dir / "digits-cnn")["sections"]["ood"]
    assert section["status"] == "ok", section["error"]
    m = section["metrics"]
    assert 0.5 < m["ood.autoencoder.auroc"] <= 1.0
    assert m["ood.calibration.predictions_changed"] == 0  # one T > 0 divides every logit: no argmax moves
    # no direction for the ECE: T minimizes the NLL of the held-out fit rows, which bounds neither the NLL nor the
    # binned ECE of the evaluated rows (on 2026-12-08 the demo's ECE rose for seeds 0, 1 and 2 with T 1.04-1.09)
    assert 0 < m["ood.calibration.temperature"] < 10 and 0 <= m["ood.calibration.ece_scaled"] <= 1
    html = (demo_dir / "digits-cnn" / "report.html").read_text()
    for spec in section["figures"]:
        assert spec["title"] in html.replace("&#39;", "'").replace("&amp;", "&"), spec["name"]
    assert "cannot draw figure" not in html
    assert "Best OOD detector AUROC" in html
    need(fashion_mnist_missing())
    assert m["ood.fashion_mnist.n_samples"] == 500


def test_headline_cards_for_shift() -> None:
    from reports.headline import headline_view

    results = {"sections": {
        "ood": {"status": "ok", "metrics": {"ood.energy.auroc": 0.8, "ood.autoencoder.auroc": 0.97,
                                            "ood.fashion.msp.auroc": 0.99, "ood.calibration.ece": 0.01}},
        "corruptions": {"status": "ok", "metrics": {"corruptions.mean_accuracy": 0.7}}}}
    cards = {c["label"]: (c["value"], c["metric"]) for c in headline_view(results)["cards"]}
    # the best mean over the sets, not one set's AUROC
    assert cards["Best OOD detector AUROC (autoencoder)"] == (0.97, "ood.autoencoder.auroc")
    assert cards["Mean corrupted accuracy"] == (0.7, "corruptions.mean_accuracy")
    assert not [c for c in headline_view({"sections": {}})["cards"] if "OOD" in c["label"]]
