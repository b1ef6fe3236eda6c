"""LRP through element-wise pre-processing: the same attributions whether the normalization is in the config or in
the user's model, and hints in valid Python for layers without a rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from audit.model import Normalize, TorchModelAdapter
from explain.lrp import LRPExplainer, LRPRuleError, plan_rules, python_path

MEAN, STD = 0.3, 0.4
DIGITS: dict[str, Any] = {"num_classes": 10, "bounds": (0.0, 1.0)}  # TorchModelAdapter.from_module


class MeanStd(nn.Module):
    """A user's own normalization module (not nnaudit's)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([MEAN]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([STD]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def batchnorm_as_normalization() -> nn.Module:
    bn = nn.BatchNorm2d(1, affine=False).eval()
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.running_mean.fill_(MEAN)
        bn.running_var.fill_(STD**2 - bn.eps)
    return bn


PREPROCESSING: dict[str, Callable[[], nn.Module]] = {
    "mean/std module": MeanStd,
    "lambda affine": lambda: Lambda(lambda x: x * (1 / STD) - MEAN / STD),
    "eval-mode BatchNorm2d": batchnorm_as_normalization,
}


@pytest.mark.parametrize("kind", list(PREPROCESSING))
def test_lrp_equal_with_normalization_in_the_model_or_in_the_config(kind: str, digits_cnn: Any,
                                                                     digits_test: Any) -> None:
    x = digits_test.x[:24]
    in_config = TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), **DIGITS,
                                              normalize=Normalize([MEAN], [STD], 4))
    in_model = TorchModelAdapter.from_module(nn.Sequential(PREPROCESSING[kind](), *copy.deepcopy(digits_cnn)), **DIGITS)
    np.testing.assert_allclose(in_model.logits(x).numpy(), in_config.logits(x).numpy(), rtol=1e-5, atol=1e-5)
    target = in_config.predict(x)
    background = digits_test.x[-8:]
    expected = LRPExplainer(in_config, background=background).explain(x, target)
    explainer = LRPExplainer(in_model, background=background)
    assert explainer.plan is not None and explainer.plan.preprocessing == ["normalize", "network.0"]
    got = explainer.explain(x, target)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    # zero pixels carry relevance here: the conv sees (0 - mean) / std, not 0
    assert np.abs(expected[x == 0]).max() > 1e-3 * scale


def test_epsilon_rule_on_the_normalization_would_change_the_relevance(digits_cnn: Any, digits_test: Any) -> None:
    """What the old hint suggested (the epsilon rule on the user's normalization) gives other attributions: the
    pass-through treatment is what makes the two placements agree."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    x = digits_test.x[:24]
    model = nn.Sequential(MeanStd(), *copy.deepcopy(digits_cnn))
    passed = LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=x[:4])
    target = passed.adapter.predict(x)
    plain = passed.explain(x, target)
    model[0].rule = EpsilonRule()  # a user's own rule wins
    epsilon = LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=x[:4]).explain(x, target)
    change = np.abs(epsilon - plain).sum(axis=(1, 2, 3)) / np.abs(plain).sum(axis=(1, 2, 3))
    assert change.mean() > 0.3  # 0.88 on 100 digits


def test_only_the_input_chain_is_preprocessing(digits_test: Any) -> None:
    """An element-wise affine module further in is a linear layer (epsilon rule), an unknown element-wise
    non-linearity an activation (pass-through); a layer that mixes values has no rule."""
    torch.manual_seed(0)
    scale = Lambda(lambda x: 2.0 * x + 0.1)
    swish = Lambda(lambda x: x * torch.sigmoid(x))
    model = nn.Sequential(MeanStd(), nn.Conv2d(1, 4, 3, padding=1), scale, swish, nn.Flatten(),
                          nn.Linear(256, 10)).eval()
    network = TorchModelAdapter.from_module(model, **DIGITS).network
    plan = plan_rules(copy.deepcopy(network), torch.as_tensor(digits_test.x[:1]))
    assert plan.preprocessing == ["normalize", "network.0"]
    assert plan.kinds["network.2"] == "epsilon" and plan.kinds["network.3"] == "identity"
    assert plan.kinds["network.4"] == "pass" and plan.kinds["network.1"] == "epsilon"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.heads = nn.ModuleDict({"out-layer": nn.Linear(16, 10)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads["out-layer"](self.norm(x))


@pytest.mark.parametrize(("shape_changing", "expected"), [
    (False, "model.encoder[2].norm.rule = IdentityRule()"),
    (True, "model.encoder[2].rule = EpsilonRule()"),
])
def test_rule_hint_is_valid_python_on_the_users_module_path(shape_changing: bool, expected: str,
                                                            digits_test: Any) -> None:
    class Pick(nn.Module):  # drops half of the features: no known rule, shape changes
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :8]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 16)]
            layers += [Pick(), nn.Linear(8, 16), Block()] if shape_changing else [Block()]
            self.encoder = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.encoder(x)
            return out

    torch.manual_seed(0)
    model = Net().eval()
    with pytest.raises(LRPRuleError) as failed:
        LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=digits_test.x[:4])
    hint = failed.value.hint
    assert hint.splitlines()[-1] == expected
    assert hint in str(failed.value).replace("\n    ", "\n") and "sections.explanations.methods" in str(failed.value)
    exec(hint, {"model": model})
    if shape_changing:  # the next layer without a rule is named the same way
        with pytest.raises(LRPRuleError, match=r"'encoder\.4\.norm' \(LayerNorm\)") as again:
            LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=digits_test.x[:4])
        exec(again.value.hint, {"model": model})
    x = digits_test.x[:4]
    attr = LRPExplainer(TorchModelAdapter.from_module(model, **DIGITS), background=x).explain(x, np.zeros(4, np.int64))
    assert np.isfinite(attr).all() and np.abs(attr).sum() > 0


def test_python_path_forms() -> None:
    root = nn.Module()
    root.features = nn.Sequential(nn.Identity(), nn.ModuleDict({"a-b": nn.ModuleList([nn.ReLU()])}))
    assert python_path(root, "features.1.a-b.0") == "model.features[1]['a-b'][0]"
    for path in ("features.1.a-b.0", "features.0"):
        assert eval(python_path(root, path), {"model": root}) is root.get_submodule(path)
