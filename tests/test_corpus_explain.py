"""Bad input to the explanations section and the explainers: each case asserts the exact outcome (error type and
the config key or words its message must contain, or the finding)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audit.errors import ConfigError
from audit.model import TorchModelAdapter
from explain.base import ExplainerError
from explain.captum_methods import OcclusionExplainer, SaliencyExplainer
from explain.section import ExplanationsSection
from explain.shap_methods import ShapKernelExplainer

SMALL = {"n_samples": 6, "check_samples": 3, "background_size": 8, "stability": False, "bootstrap_resamples": 100}


@pytest.mark.parametrize(("params", "key", "words"), [
    ({"memory_mb": 0}, "sections.explanations.memory_mb", "greater than 0"),
    ({"check_samples": 0}, "sections.explanations.check_samples", "greater than or equal to 1"),
    ({"deletion_baseline": "zeros"}, "sections.explanations.deletion_baseline", "'mean', 'blur' or 'lower'"),
    ({"confidence": 1.5}, "sections.explanations.confidence", "less than 1"),
    ({"bootstrap_resamples": 10}, "sections.explanations.bootstrap_resamples", "greater than or equal to 100"),
    ({"randomization_steps": 0}, "sections.explanations.randomization_steps", "greater than or equal to 1"),
    ({"blur_sigma": -1}, "sections.explanations.blur_sigma", "greater than or equal to 0"),
])
def test_bad_parameters_are_config_errors_naming_the_key(params: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as failed:
        ExplanationsSection(**params)
    assert failed.value.key == key and words in failed.value.message


def test_blur_baseline_on_tabular_data_is_a_section_error_naming_the_key(make_context: Any, cancer_mlp: Any,
                                                                         cancer_test: Any) -> None:
    ctx = make_context(cancer_mlp, cancer_test, limit=40)
    result = ExplanationsSection(methods=["saliency"], quality=["deletion"], deletion_baseline="blur", **SMALL)(ctx)
    assert result.status == "error" and result.error is not None and result.error["type"] == "ConfigError"
    assert "sections.explanations.deletion_baseline" in result.error["message"]
    assert "use 'mean' for tabular" in result.error["message"]


def test_too_few_kernel_shap_coalitions_is_a_finding_naming_the_key(make_context: Any, digits_cnn: Any,
                                                                     digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=40)
    result = ExplanationsSection(methods=["shap_kernel", "saliency"], quality=["deletion"],
                                 method_params={"shap_kernel": {"n_samples": 64}},
                                 **SMALL)(ctx)
    assert result.status == "ok", result.error
    finding = next(f for f in result.findings if f.code == "explanations.method_unavailable")
    assert "shap_kernel" in finding.message and "method_params.shap_kernel.n_samples to at least 128" in finding.message
    assert "shap_kernel" not in ctx.attributions and "saliency" in ctx.attributions


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def test_layer_without_lrp_rule_is_a_finding_with_a_hint_even_when_lrp_was_not_asked(make_context: Any,
                                                                                      digits_test: Any) -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    ctx = make_context(model, digits_test, limit=40)
    result = ExplanationsSection(methods=["lrp", "saliency"], quality=["deletion"], **SMALL)(ctx)
    default = ExplanationsSection(quality=["deletion"], **{**SMALL, "n_samples": 4})(make_context(model, digits_test,
                                                                                                  limit=40))
    for res in (result, default):
        finding = next(f for f in res.findings if f.code == "explanations.lrp_no_rule")
        assert "layer 'body.2' of the model has no LRP rule" in finding.message
        assert finding.message.endswith("from captum.attr._utils.lrp_rules import IdentityRule\n"
                                        "model.body[2].rule = IdentityRule()")
    assert "lrp" not in ctx.attributions and "saliency" in ctx.attributions


def test_model_with_its_own_normalization_runs_lrp_without_a_note(make_context: Any, digits_cnn: Any,
                                                                  digits_test: Any) -> None:
    class MeanStd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - 0.3) / 0.4

    ctx = make_context(nn.Sequential(MeanStd(), *digits_cnn), digits_test, limit=40)
    result = ExplanationsSection(methods=["lrp"], quality=["deletion"], **SMALL)(ctx)
    assert result.status == "ok" and "lrp" in ctx.attributions
    assert not any(note.startswith("lrp: not run") for note in result.notes) and not result.findings


def test_explainer_bad_arguments_are_explainer_errors(digits_cnn: Any, digits_test: Any) -> None:
    ad = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0))
    x = digits_test.x[:3]
    with pytest.raises(ExplainerError, match=r"memory_mb must be positive .*sections\.explanations\.memory_mb"):
        OcclusionExplainer(ad, memory_mb=0)
    with pytest.raises(ExplainerError, match="3 inputs but 2 sample ids; give one id per input"):
        SaliencyExplainer(ad).explain(x, ad.predict(x), np.arange(2))
    with pytest.raises(ExplainerError, match=r"method_params\.shap_kernel\.n_samples to at least 128"):
        ShapKernelExplainer(ad, n_samples=100, background=digits_test.x[:8]).explain(x, ad.predict(x))


@pytest.mark.parametrize(("key", "value", "where"), [
    ("ig_steps", 32, "{ig: {n_steps: 32}}"),
    ("gradient_shap_samples", 16, "{gradient_shap: {n_samples: 16}}"),
    ("shap_samples", 8, "{shap_gradient: {n_samples: 8}, shap_deep: {n_samples: 8}}"),
    ("kernel_shap_samples", 256, "{shap_kernel: {n_samples: 256}}"),
    ("kernel_shap_background", 4, "{shap_kernel: {n_background: 4}}"),
    ("lime_samples", 40, "{lime: {n_samples: 40}}"),
    ("lime_segmentation", "quickshift", '{lime: {segmentation: "quickshift"}}'),
    ("lime_cell", 2, "{lime: {cell: 2}}"),
    ("occlusion_window", 3, "{occlusion: {window: 3}}"),
])
def test_a_flat_per_method_key_names_the_method_params_key_to_write(key: str, value: Any, where: str) -> None:
    with pytest.raises(ConfigError) as failed:
        ExplanationsSection(**{key: value})
    assert failed.value.key == f"sections.explanations.{key}"
    assert failed.value.message == f"moved: write it as method_params: {where}"


def test_an_old_config_with_a_flat_key_stops_the_cli_before_any_work(tmp_path: Any,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    (tmp_path / "audit.yaml").write_text("model: {factory: 'audit.zoo:digits_cnn'}\ndata: {source: digits}\n"
                                         "sections: {explanations: {ig_steps: 32}}\n")
    assert main(["run", str(tmp_path / "audit.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert ("config error at 'sections.explanations.ig_steps': moved: write it as method_params: "
            "{ig: {n_steps: 32}}") in capsys.readouterr().err
    assert not (tmp_path / "run" / "artifacts").exists()


def test_method_params_for_an_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as failed:
        ExplanationsSection(method_params={"gradcam": {"steps": 3}})
    assert failed.value.key == "sections.explanations.method_params"
    assert "unknown explanation methods ['gradcam']" in failed.value.message


@pytest.mark.parametrize(("method", "params", "words"), [
    ("ig", {"n_steps": 1}, "n_steps must be at least 2, got 1"),
    ("lime", {"segmentation": "slic"}, "segmentation must be 'grid' or 'quickshift', got 'slic'"),
    ("occlusion", {"window": 0}, "window must be at least 1, got 0"),
])
def test_an_explainer_parameter_out_of_range_is_a_section_error_naming_its_key(
        make_context: Any, digits_cnn: Any, digits_test: Any, method: str, params: dict[str, Any],
        words: str) -> None:
    ctx = make_context(digits_cnn, digits_test, limit=40)
    result = ExplanationsSection(methods=[method], quality=[], method_params={method: params}, **SMALL)(ctx)
    assert result.status == "error" and result.error is not None and result.error["type"] == "ConfigError"
    assert f"sections.explanations.method_params.{method}" in result.error["message"]
    assert words in result.error["message"]
