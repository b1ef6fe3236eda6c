"""Model adapters: loading, safe pickles, output handling, normalization inside, frozen parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audit.config import ModelConfig
from audit.errors import ConfigError, ModelError
from audit.model import Bounds, load_model

X = np.random.default_rng(0).random((20, 4)).astype(np.float32)


def _load(num_classes: int = 3, sample: np.ndarray = X, **config: object):
    return load_model(ModelConfig(**config), num_classes=num_classes, sample=sample, device=torch.device("cpu"),
                      batch_size=7, default_bounds=None)


def test_factory_with_weights_loads_safely(tmp_path: Path) -> None:
    reference = nn.Linear(4, 3)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    adapter = _load(factory="toy_models:linear", weights=tmp_path / "w.pt")
    expected = reference(torch.from_numpy(X))
    assert torch.allclose(adapter.logits(X), expected, atol=1e-6)
    assert adapter.output_kind == "logits" and adapter.has_gradients
    assert len(adapter.sha256) == 64 and adapter.describe()["num_parameters"] == 15


def test_pickled_module_is_refused_unless_trusted(tmp_path: Path) -> None:
    torch.save(nn.Linear(4, 3), tmp_path / "full.pt")  # a pickled module: safe loading must refuse it
    with pytest.raises(ConfigError, match="trust_pickle") as info:
        _load(factory="toy_models:linear", weights=tmp_path / "full.pt")
    assert info.value.key == "model.weights"
    adapter = _load(factory="toy_models:linear", weights=tmp_path / "full.pt", trust_pickle=True)
    assert adapter.logits(X).shape == (20, 3)


def test_wrong_state_dict_and_bad_import_paths(tmp_path: Path) -> None:
    torch.save(nn.Linear(5, 3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="do not fit") as info:
        _load(factory="toy_models:linear", weights=tmp_path / "w.pt")
    assert info.value.key == "model.weights"
    for path, text in (("no_such_module:f", "cannot import"), ("toy_models:nope", "no attribute"),
                       ("toy_models", "not an import path"), ("toy_models:not_a_module", "not a torch nn.Module")):
        with pytest.raises(ConfigError, match=text) as info:
            _load(factory=path)
        assert info.value.key == "model.factory"


def test_output_width_must_match_classes() -> None:
    with pytest.raises(ModelError, match="outputs 3 scores per sample but the data has 5 classes"):
        _load(num_classes=5, factory="toy_models:linear")


def test_probabilities_detected_and_turned_into_log_probabilities() -> None:
    adapter = _load(factory="toy_models:softmax_model")
    assert adapter.output_kind == "probabilities"
    probs = nn.Sequential(*list(adapter.module.children()))(torch.from_numpy(X))
    assert torch.allclose(adapter.logits(X), probs.log(), atol=1e-6)
    assert torch.allclose(adapter.probabilities(X), probs, atol=1e-6)
    forced = _load(factory="toy_models:softmax_model", output="logits")
    assert forced.output_kind == "logits"


def test_single_binary_logit_becomes_two_columns() -> None:
    adapter = _load(num_classes=2, factory="toy_models:single_logit")
    logits = adapter.logits(X)
    z = adapter.module(torch.from_numpy(X))
    assert logits.shape == (20, 2)
    assert torch.allclose(logits[:, 1] - logits[:, 0], z[:, 0], atol=1e-6)
    assert torch.allclose(adapter.probabilities(X)[:, 1], torch.sigmoid(z[:, 0]), atol=1e-6)


def test_tuple_and_dict_outputs_need_a_selector() -> None:
    with pytest.raises(ModelError, match="output_key to the index"):
        _load(factory="toy_models:tuple_model")
    assert _load(factory="toy_models:tuple_model", output_key=0).logits(X).shape == (20, 3)
    with pytest.raises(ModelError, match=r"keys \['features', 'scores'\]"):
        _load(factory="toy_models:dict_model")
    assert _load(factory="toy_models:dict_model", output_key="scores").logits(X).shape == (20, 3)


def test_normalization_inside_and_parameters_frozen() -> None:
    images = np.random.default_rng(1).random((6, 2, 3, 3)).astype(np.float32)
    mean, std = [0.5, 0.25], [0.2, 0.4]
    adapter = load_model(ModelConfig(factory="toy_models:image_linear", normalization={"mean": mean, "std": std}),
                         num_classes=3, sample=images, device=torch.device("cpu"), batch_size=4,
                         default_bounds=Bounds(0.0, 1.0))
    x = torch.from_numpy(images)
    normalized = (x - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    assert torch.allclose(adapter.logits(images), adapter.module(normalized), atol=1e-6)
    assert adapter.bounds == Bounds(0.0, 1.0)
    x_in = x.clone().requires_grad_(True)
    adapter.forward(x_in).sum().backward()
    assert x_in.grad is not None and x_in.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in adapter.network.parameters())
    with pytest.raises(ConfigError, match="give 1 or 2") as info:
        load_model(ModelConfig(factory="toy_models:image_linear", normalization={"mean": [0, 0, 0], "std": [1]}),
                   num_classes=3, sample=images, device=torch.device("cpu"), batch_size=4, default_bounds=None)
    assert info.value.key == "model.normalization.mean"


def test_eval_mode_is_enforced() -> None:
    from audit.config import ModelConfig as MC

    torch.manual_seed(0)
    adapter = load_model(MC(factory="audit.zoo:tabular_mlp", kwargs={"in_features": 4, "num_classes": 3,
                                                                       "dropout": 0.9}),
                         num_classes=3, sample=X, device=torch.device("cpu"), batch_size=8, default_bounds=None)
    assert not adapter.module.training
    assert torch.equal(adapter.logits(X), adapter.logits(X))  # dropout 0.9 would change outputs in train mode


def test_torchscript(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    adapter = _load(torchscript=tmp_path / "m.ts", input_bounds=(0.0, 1.0))
    assert torch.allclose(adapter.logits(X), net(torch.from_numpy(X)), atol=1e-6)
    assert adapter.bounds == Bounds(0.0, 1.0)


def test_black_box_predict_function() -> None:
    adapter = _load(predict_fn="toy_models:predict_proba")
    assert not adapter.has_gradients and adapter.output_kind == "probabilities"
    from toy_models import predict_proba

    assert np.allclose(adapter.probabilities(X).numpy(), predict_proba(X), atol=1e-5)
    with pytest.raises(ModelError, match="no gradients"):
        adapter.forward(torch.from_numpy(X))


def test_model_that_fails_on_the_data_shape() -> None:
    with pytest.raises(ModelError, match=r"inputs of shape \[20, 4\]"):
        _load(factory="toy_models:linear", kwargs={"in_features": 7})


def test_from_module_equals_the_adapter_a_config_builds() -> None:
    """``TorchModelAdapter.from_module`` (a network in memory) gives what ``load_model`` builds from a config:
    the same logits, gradients, hash, frozen eval-mode network and normalization inside."""
    from toy_models import image_linear

    from audit.model import Normalize, TorchModelAdapter

    images = np.random.default_rng(1).random((6, 2, 3, 3)).astype(np.float32)
    mean, std = [0.5, 0.25], [0.2, 0.4]
    loaded = load_model(ModelConfig(factory="toy_models:image_linear", normalization={"mean": mean, "std": std}),
                        num_classes=3, sample=images, device=torch.device("cpu"), batch_size=4,
                        default_bounds=Bounds(0.0, 1.0))
    module = image_linear().train()
    wrapped = TorchModelAdapter.from_module(module, num_classes=3, bounds=(0.0, 1.0), batch_size=4,
                                            normalize=Normalize(mean, std, images.ndim))
    assert not module.training and all(not p.requires_grad for p in module.parameters())
    assert wrapped.bounds == Bounds(0.0, 1.0) and wrapped.device == torch.device("cpu") and wrapped.batch_size == 4
    assert wrapped.sha256 == loaded.sha256 and wrapped.source == "Sequential"
    assert torch.equal(wrapped.logits(images), loaded.logits(images))
    grads = []
    for adapter in (wrapped, loaded):
        x = torch.from_numpy(images).requires_grad_(True)
        (grad,) = torch.autograd.grad(adapter.forward(x).sum(), x)
        grads.append(grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_from_module_output_kinds_and_selection() -> None:
    from toy_models import dict_model, softmax_model

    from audit.model import TorchModelAdapter

    probs = softmax_model()
    adapter = TorchModelAdapter.from_module(probs, num_classes=3, output_kind="probabilities")
    assert adapter.bounds is None and adapter.output_kind == "probabilities"
    assert torch.allclose(adapter.probabilities(X), probs(torch.from_numpy(X)), atol=1e-6)
    scores = TorchModelAdapter.from_module(dict_model(), num_classes=3, output_key="scores")
    assert scores.logits(X).shape == (20, 3)
    with pytest.raises(ValueError, match="output_kind must be one of"):
        TorchModelAdapter.from_module(probs, num_classes=3, output_kind="probs")
    with pytest.raises(ConfigError, match=r"CUDA is not available|GPU\(s\) are visible") as info:
        TorchModelAdapter.from_module(probs, num_classes=3, device="cuda:99")  # device names resolve as in configs
    assert info.value.key == "device"
