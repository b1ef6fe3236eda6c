"""ONNX models with gradients: the graph converted to torch (onnx2torch), checked against onnxruntime, audited as a
white box while onnxruntime decides every prediction; refusals fall back to the black box with the reason."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audit.config import ModelConfig, parse_config
from audit.errors import ConfigError
from audit.model import load_model
from audit.runner import run_audit

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'nnaudit[onnx]')")
pytest.importorskip("onnx2torch", reason="onnx2torch not installed (pip install 'nnaudit[onnx]')")


def export(model: nn.Module, sample: torch.Tensor, path: Path, *, dynamic: bool = True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own deprecation
        torch.onnx.export(model.eval(), (sample,), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}} if dynamic else None)
    return path


@pytest.fixture(scope="module")
def digits_onnx(digits_cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(digits_cnn, torch.zeros(2, 1, 8, 8), tmp_path_factory.mktemp("onnx") / "digits.onnx")


def _load(path: Path, x: np.ndarray, **kwargs: Any) -> Any:
    return load_model(ModelConfig(onnx=path, **kwargs), num_classes=10, sample=x, device=torch.device("cpu"),
                      batch_size=64, default_bounds=None)


def test_converted_graph_gives_gradients_and_onnxruntime_decides(digits_onnx: Path, digits_cnn: nn.Module,
                                                                  digits_test: Any) -> None:
    import onnxruntime

    x = digits_test.x[:100]
    adapter = _load(digits_onnx, x)
    assert adapter.kind == "onnx" and adapter.has_gradients
    record = adapter.describe()["onnx_conversion"]
    assert record["converted"] is True and record["checked_inputs"] == 100
    assert 0 <= record["max_abs_diff"] <= record["tolerance"] == 1e-3
    # the gradient is the torch model's (the converted graph computes the same function)
    xt = torch.from_numpy(x[:8]).requires_grad_(True)
    (grad,) = torch.autograd.grad(adapter.forward(xt).sum(), xt)
    xr = torch.from_numpy(x[:8]).requires_grad_(True)
    (ref,) = torch.autograd.grad(digits_cnn(xr).sum(), xr)
    torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)
    # predictions and the verification of adversarial examples: onnxruntime's own outputs, bit for bit
    session = onnxruntime.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(None, {"x": x[:8]})[0])
    assert torch.equal(adapter.decision_logits(torch.from_numpy(x[:8])), theirs)
    assert torch.equal(adapter.logits(x[:8]), theirs)
    off = _load(digits_onnx, x, onnx_conversion="off")
    assert not off.has_gradients and off.describe()["onnx_conversion"]["reason"] == "model.onnx_conversion is off"


def test_disagreeing_or_unconvertible_graph_falls_back_with_the_reason(digits_onnx: Path, digits_test: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx2torch

    x = digits_test.x[:50]
    real = onnx2torch.convert

    class Off(nn.Module):  # a converter bug: outputs 0.01 away from onnxruntime's
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t) + 0.01

    monkeypatch.setattr(onnx2torch, "convert", lambda model: Off(real(model)))
    adapter = _load(digits_onnx, x)
    assert not adapter.has_gradients
    record = adapter.describe()["onnx_conversion"]
    assert record["converted"] is False and record["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)
    assert "model.onnx_tolerance 0.001" in record["reason"]
    assert _load(digits_onnx, x, onnx_tolerance=0.02).has_gradients  # within a looser tolerance: used

    def unsupported(model: Any) -> nn.Module:
        raise NotImplementedError("Converter is not implemented (OperationDescription(domain='', "
                                  "operation_type='Foo', version=1))")

    monkeypatch.setattr(onnx2torch, "convert", unsupported)
    adapter = _load(digits_onnx, x)
    assert not adapter.has_gradients
    assert "does not convert" in adapter.describe()["onnx_conversion"]["reason"]


def test_bad_onnx_settings_name_the_key(digits_cnn: nn.Module, digits_test: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"onnx": "m.onnx", "onnx_conversion": "yes"}, "data": {"source": "digits"}})
    assert info.value.key == "model.onnx_conversion"
    # a graph exported for 1x8x8 images does not take 64 flat features: the key to change is named
    fixed = export(digits_cnn, torch.zeros(3, 1, 8, 8), tmp_path / "fixed.onnx", dynamic=False)
    with pytest.raises(ConfigError, match=r"shape \[3, 1, 8, 8\].*\[64\]") as info:
        _load(fixed, digits_test.x.reshape(len(digits_test.x), -1))
    assert info.value.key == "model.onnx"
    # a fixed batch size of 3 runs in pieces of 3 (the last padded): every row's scores are onnxruntime's
    x = digits_test.x[:10]
    adapter = _load(fixed, x, onnx_conversion="off")
    torch.testing.assert_close(adapter.logits(x), digits_cnn(torch.from_numpy(x)).detach(), rtol=0, atol=1e-4)


def _config(model: dict[str, Any], **sections: Any) -> Any:
    return parse_config({
        "model": {**model, "input_bounds": [0.0, 1.0]}, "data": {"source": "digits", "limit": 120}, "device": "cpu",
        "sections": {"robustness": {"eps": [0.1], "steps": 20, "minimal_samples": 0, "check_samples": 16,
                                    "check_queries": 20, "gallery_size": 0}, **sections},
        "report": False})


def test_digits_onnx_gets_the_torch_models_white_box_headline(digits_onnx: Path, digits_cnn: nn.Module,
                                                             tmp_path: Path) -> None:
    """The issue's demand: the exported CNN through the converted graph gets the torch model's headline (within
    0.01), with red flags run on the converted graph."""
    weights = tmp_path / "cnn.pt"
    torch.save(digits_cnn.state_dict(), weights)
    torch_run = run_audit(_config({"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8},
                                   "weights": str(weights)}), tmp_path / "torch")
    explain = {"methods": ["ig"], "n_samples": 4, "check_samples": 2, "background_size": 8, "quality": ["deletion"],
               "quality_steps": 4, "bootstrap_resamples": 100, "stability": False}
    onnx_run = run_audit(_config({"onnx": str(digits_onnx)}, explanations=explain), tmp_path / "onnx")
    key = "robustness.worst_case.linf.eps=0.1.robust_accuracy"
    metrics = [r["sections"]["robustness"]["metrics"] for r in (torch_run, onnx_run)]
    assert metrics[0][key] < metrics[0]["robustness.clean_accuracy"] - 0.2  # breakable: the comparison means something
    assert abs(metrics[1][key] - metrics[0][key]) <= 0.01
    assert "robustness.apgd_ce.linf.eps=0.1.robust_accuracy" in metrics[1]
    assert metrics[1]["robustness.red_flags.checks"] >= 3
    manifest = onnx_run["manifest"]["model"]
    assert manifest["kind"] == "onnx" and manifest["has_gradients"] is True
    assert manifest["onnx_conversion"]["converted"] is True
    notes = onnx_run["sections"]["robustness"]["notes"]
    assert any("converted to torch" in n and "onnxruntime decides" in n for n in notes)
    # integrated gradients (a gradient method) ran on the converted graph, and the section says so
    explanations = onnx_run["sections"]["explanations"]
    assert explanations["status"] == "ok", explanations.get("error")
    assert any(k.startswith("explanations.ig.") for k in explanations["metrics"])
    assert any("converted to torch" in n for n in explanations["notes"])
