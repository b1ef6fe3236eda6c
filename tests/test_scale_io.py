"""Data sources and model formats at scale: image folders, safetensors weights, ONNX models as black boxes."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from system import fashion_mnist_missing, need
from torch import nn

from audit.config import DataConfig, ModelConfig, parse_config
from audit.data import load_data, read_idx, stratified_subset
from audit.errors import ConfigError, DataError
from audit.model import load_model
from audit.results import load_results
from audit.runner import run_audit

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fashion() -> None:
    need(fashion_mnist_missing())


needs_fashion = pytest.mark.usefixtures("fashion")
PER_CLASS = 6


def _fashion(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    return read_idx(FASHION / f"{split}-images-idx3-ubyte.gz"), read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """PER_CLASS real Fashion-MNIST test images per class written as PNGs: root/<class>/<index>.png.
    Returns (root, images (N, 28, 28) uint8, labels, class names) in the loader's order (folder, then file)."""
    from PIL import Image

    images, labels = _fashion()
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    root = tmp_path_factory.mktemp("fashion")
    order = sorted(range(10), key=lambda c: names[c])  # the loader sorts class folders by name
    xs, ys = [], []
    for new_label, c in enumerate(order):
        folder = root / names[c]
        folder.mkdir()
        for i in np.flatnonzero(labels == c)[:PER_CLASS]:
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
            xs.append(images[i])
            ys.append(new_label)
    (root / "README.txt").write_text("not a class folder, not an image")
    return root, np.stack(xs), np.array(ys), sorted(names)


# --- imagefolder ---------------------------------------------------------------------------------


@needs_fashion
def test_imagefolder_reads_real_images_exactly(fashion_folder: Any) -> None:
    root, images, labels, names = fashion_folder
    data = load_data(DataConfig(source="imagefolder", path=root))
    assert data.class_names == names and data.modality == "image"
    assert data.x.shape == (10 * PER_CLASS, 1, 28, 28)  # grey PNGs: one channel
    np.testing.assert_array_equal(data.y, labels)
    np.testing.assert_array_equal(data.x[:, 0], images.astype(np.float32) / 255.0)  # PNG is lossless
    assert float(data.lower.min()) == 0.0 and float(data.upper.max()) == 1.0


@needs_fashion
def test_imagefolder_limit_is_the_stratified_subset_of_the_whole_folder(fashion_folder: Any) -> None:
    root, images, labels, _ = fashion_folder
    limited = load_data(DataConfig(source="imagefolder", path=root, limit=20), seed=3)
    picked = stratified_subset(labels, 20, 3)
    np.testing.assert_array_equal(limited.y, labels[picked])
    np.testing.assert_array_equal(limited.x[:, 0], images[picked].astype(np.float32) / 255.0)
    assert np.bincount(limited.y).tolist() == [2] * 10


@needs_fashion
def test_imagefolder_resize_crop_color_and_workers(fashion_folder: Any) -> None:
    from PIL import Image

    root, images, _, _ = fashion_folder
    data = load_data(DataConfig(source="imagefolder", path=root, resize=32, crop=[24, 20], color="RGB", workers=1,
                                limit=10))
    assert data.x.shape == (10, 3, 24, 20)
    np.testing.assert_array_equal(data.x[:, 0], data.x[:, 2])  # grey images in RGB: equal channels
    first = Image.fromarray(images[0]).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    expected = np.asarray(first, np.float32)[4:28, 6:26, 0] / 255.0  # centre crop by hand
    full = load_data(DataConfig(source="imagefolder", path=root, resize=32, crop=[24, 20], color="RGB"))
    np.testing.assert_array_equal(full.x[0, 0], expected)


def test_imagefolder_errors_name_the_key(tmp_path: Path) -> None:
    from PIL import Image

    for name, size in (("a", (8, 8)), ("b", (10, 6))):
        (tmp_path / name).mkdir()
        Image.new("L", size, 128).save(tmp_path / name / "x.png")
    with pytest.raises(DataError, match=r"set data\.resize"):
        load_data(DataConfig(source="imagefolder", path=tmp_path))
    assert load_data(DataConfig(source="imagefolder", path=tmp_path, resize=[8, 8])).x.shape == (2, 1, 8, 8)
    with pytest.raises(DataError, match="larger than the image"):
        load_data(DataConfig(source="imagefolder", path=tmp_path, resize=[8, 8], crop=9))
    with pytest.raises(ConfigError, match="not among class_names") as info:
        load_data(DataConfig(source="imagefolder", path=tmp_path, resize=[8, 8], class_names=["a"]))
    assert info.value.key == "data.class_names"
    with pytest.raises(ConfigError, match="not a folder") as info:
        parse_config({"model": {"factory": "audit.zoo:digits_cnn"},
                      "data": {"source": "imagefolder", "path": str(tmp_path / "a" / "x.png")}})
    assert info.value.key == "data.path"
    with pytest.raises(ConfigError, match=r"imagefolder' only$"):
        parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits", "resize": 8}})
    (tmp_path / "b" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_data(DataConfig(source="imagefolder", path=tmp_path, resize=[8, 8], color="L"))


# --- safetensors ---------------------------------------------------------------------------------


def test_safetensors_weights_equal_torch_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    reference = nn.Linear(4, 3)
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    x = np.random.default_rng(0).random((9, 4)).astype(np.float32)
    common: dict[str, Any] = {"num_classes": 3, "sample": x, "device": torch.device("cpu"), "batch_size": 4,
                              "default_bounds": None}
    from_st = load_model(ModelConfig(factory="toy_models:linear", weights=tmp_path / "w.safetensors"), **common)
    from_pt = load_model(ModelConfig(factory="toy_models:linear", weights=tmp_path / "w.pt"), **common)
    assert torch.equal(from_st.logits(x), from_pt.logits(x))
    # batched (4 rows) vs one call: float32 sums of 4 terms of size ~1 differ by a few ulps at most
    assert torch.allclose(from_st.logits(x), reference(torch.from_numpy(x)).detach(), rtol=0, atol=1e-6)
    save_file({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match="do not fit") as info:
        load_model(ModelConfig(factory="toy_models:linear", weights=tmp_path / "bad.safetensors"), **common)
    assert info.value.key == "model.weights"
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # the extra not installed
    with pytest.raises(ConfigError, match=r"nnaudit\[safetensors\]"):
        load_model(ModelConfig(factory="toy_models:linear", weights=tmp_path / "w.safetensors"), **common)


@needs_fashion
def test_imagefolder_run_end_to_end_with_safetensors_weights(fashion_folder: Any, tmp_path: Path,
                                                             make_context: Any) -> None:
    """A model trained on real Fashion-MNIST training images, saved as .safetensors, audited on the PNG folder;
    its clean accuracy in the results equals the accuracy computed directly on the IDX test images, and its robust
    accuracy the same PGD run directly on those images with the run's seed."""
    from safetensors.torch import save_file

    from audit.demo import _train

    root, images, labels, _ = fashion_folder
    train_x, train_y = _fashion("train")
    pick = stratified_subset(train_y, 2000, 0)
    order = sorted(range(10), key=lambda c: ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                             "sneaker", "bag", "boot"][c])
    relabel = np.argsort(order)  # original label -> folder index
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    _train(model, train_x[pick, None].astype(np.float32) / 255.0, relabel[train_y[pick]], epochs=8, lr=1e-2, seed=0)
    save_file(model.state_dict(), str(tmp_path / "fashion.safetensors"))
    (tmp_path / "fashion_model.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    config = parse_config({
        "model": {"factory": "fashion_model:build", "weights": "fashion.safetensors"},
        "data": {"source": "imagefolder", "path": str(root)},
        "device": "cpu",
        "sections": {"performance": {},
                     "robustness": {"eps": [0.02], "attacks": ["pgd"], "steps": 5, "minimal_samples": 0,
                                    "red_flags": False, "gallery_size": 2}},
        "report": False,
    }, base_dir=tmp_path)
    results = run_audit(config, tmp_path / "run", config_dir=tmp_path)
    on_disk = load_results(tmp_path / "run")
    assert on_disk["manifest"]["status"] == "complete"
    assert on_disk["manifest"]["data"]["n_samples"] == 10 * PER_CLASS
    expected = float((model(torch.from_numpy(images[:, None].astype(np.float32) / 255.0)).argmax(1).numpy()
                      == labels).mean())
    performance = results["sections"]["performance"]["metrics"]
    assert performance["performance.accuracy"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.5  # the model learned something from real images
    robust = results["sections"]["robustness"]["metrics"]["robustness.worst_case.linf.eps=0.02.robust_accuracy"]
    # the same attack, called directly on the same images: the section's settings (pgd, 5 steps, 1 restart) and the
    # random draws of its one chunk (60 samples: chunk_seed(run seed 0, section, norm, chunk 0))
    from attacks.base import Domain
    from attacks.evaluate import make_attack
    from audit.engine.chunks import chunk_seed, seed_all

    data = load_data(DataConfig(source="imagefolder", path=root))
    adapter = make_context(model, data).model
    x, y = data.x, data.y
    ok = adapter.predict(x) == y
    seed_all(chunk_seed(0, "robustness", "linf", 0))
    out = make_attack("pgd", norm="linf", steps=5, restarts=1)(adapter, x[ok], y[ok], eps=0.02,
                                                                domain=Domain.from_model_data(adapter, data))
    assert np.abs(out.x_adv - x[ok]).max() <= 0.02 + 1e-6
    assert robust == pytest.approx((ok.sum() - out.success.sum()) / len(y), abs=1e-12)
    # and no attack can beat the exact answer of a linear model: a sample whose every margin stays positive over the
    # whole eps box (clipped to [0, 1]; the minimum of a linear function over a box, per coordinate) is robust
    w, b = (t.detach().double().numpy() for t in (model[1].weight, model[1].bias))
    flat = x.reshape(len(x), -1).astype(np.float64)
    lo, hi = np.clip(flat - 0.02, 0, 1), np.clip(flat + 0.02, 0, 1)
    diff = w[y][:, None, :] - w[None, :, :]  # (n, classes, features): true class minus each class
    worst = (b[y][:, None] - b[None, :]) + np.minimum(diff * lo[:, None, :], diff * hi[:, None, :]).sum(axis=2)
    worst[np.arange(len(y)), y] = np.inf
    provably_robust = ok & (worst.min(axis=1) > 1e-4)  # float32 logits: a margin this small could round either way
    assert provably_robust.any() and robust >= provably_robust.mean()


# --- ONNX ----------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> Path:
    """The TorchScript-based exporter (fast, no onnxscript); a dynamic batch axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own deprecation
        torch.onnx.export(model.eval(), (sample,), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def digits_onnx(digits_cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'nnaudit[onnx]')")
    return export_onnx(digits_cnn, torch.zeros(2, 1, 8, 8), tmp_path_factory.mktemp("onnx") / "digits.onnx")


def test_onnx_adapter_matches_the_torch_model(digits_onnx: Path, digits_cnn: nn.Module, digits_test: Any) -> None:
    adapter = load_model(ModelConfig(onnx=digits_onnx, onnx_conversion="off"), num_classes=10, sample=digits_test.x,
                         device=torch.device("cpu"), batch_size=37, default_bounds=None)
    assert adapter.kind == "onnx" and not adapter.has_gradients
    logits = adapter.logits(digits_test.x)
    reference = digits_cnn(torch.from_numpy(digits_test.x)).detach()
    scale = float(reference.abs().max())
    assert torch.allclose(logits, reference, rtol=0, atol=1e-5 * scale)  # float32 kernels differ by ulps
    assert adapter.describe()["execution_providers"] == ["CPUExecutionProvider"]
    with pytest.raises(Exception, match="no gradients"):
        adapter.forward(torch.from_numpy(digits_test.x[:2]))


def test_onnx_outputs_and_bad_files(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(x), self.b(x)

    torch.manual_seed(0)
    model = TwoHeads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 4),), str(tmp_path / "two.onnx"), dynamo=False,
                          input_names=["x"], output_names=["scores", "aux"], dynamic_axes={"x": {0: "n"}})
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    common: dict[str, Any] = {"num_classes": 3, "sample": x, "device": torch.device("cpu"), "batch_size": 8,
                              "default_bounds": None}
    with pytest.raises(ConfigError, match=r"outputs \['scores', 'aux'\]") as info:
        load_model(ModelConfig(onnx=tmp_path / "two.onnx"), **common)
    assert info.value.key == "model.output_key"
    for key in ("scores", 0):
        adapter = load_model(ModelConfig(onnx=tmp_path / "two.onnx", output_key=key), **common)
        assert torch.allclose(adapter.logits(x), model.a(torch.from_numpy(x)).detach(), atol=1e-6)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01junk")
    with pytest.raises(ConfigError, match="onnxruntime cannot load") as info:
        load_model(ModelConfig(onnx=tmp_path / "junk.onnx"), **common)
    assert info.value.key == "model.onnx"
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_config({"model": {"onnx": str(tmp_path / "two.onnx"), "factory": "toy_models:linear"},
                      "data": {"source": "digits"}})


def test_onnx_digits_cnn_audited_end_to_end(digits_onnx: Path, digits_cnn: nn.Module, tmp_path: Path,
                                            make_context: Any) -> None:
    """The demo CNN exported to ONNX: score-based (square) and decision-based (HopSkipJump) attacks, KernelSHAP
    and LIME run; gradient methods asked for are refused with the config key to change."""
    config = parse_config({
        "model": {"onnx": str(digits_onnx), "input_bounds": [0.0, 1.0], "onnx_conversion": "off"},
        "data": {"source": "digits", "limit": 60},
        "device": "cpu",
        "sections": {
            "performance": {},
            "robustness": {"eps": [0.1], "square_queries": 40, "minimal_norm": ["hsj"], "minimal_samples": 4,
                           "minimal_steps": 20, "check_samples": 8, "check_queries": 10, "gallery_size": 2},
            "explanations": {"methods": ["shap_kernel", "lime", "ig"], "n_samples": 4, "check_samples": 2,
                             "method_params": {"shap_kernel": {"n_samples": 128, "n_background": 4},
                                               "lime": {"n_samples": 20}}, "background_size": 8,
                             "quality": ["deletion"], "quality_steps": 4,
                             "bootstrap_resamples": 100, "stability": False},
        },
        "report": False,
    })
    results = run_audit(config, tmp_path / "run")
    load_results(tmp_path / "run")  # valid against the schema
    manifest = results["manifest"]
    assert manifest["model"]["kind"] == "onnx" and manifest["model"]["has_gradients"] is False
    robustness = results["sections"]["robustness"]
    assert robustness["status"] == "ok", robustness.get("error")
    metrics = robustness["metrics"]
    clean = metrics["robustness.clean_accuracy"]
    assert clean > 0.8
    # Square's adversarial examples (the worst case names the first attack to fool each sample), replayed through
    # onnxruntime itself: misclassified, within eps and inside the bounds
    import onnxruntime

    from audit.outcomes import load_outcomes

    data = load_data(config.data, seed=config.seed)
    saved = load_outcomes(tmp_path / "run", "robustness")
    assert saved is not None
    x, y = data.x[saved.sample_id], data.y[saved.sample_id]
    x_adv = np.load(tmp_path / "run" / robustness["artifacts"]["x_adv_linf_eps=0.1"])
    square_robust = saved.values["robustness.square.linf.eps=0.1.robust_accuracy"].astype(bool)
    by_square = saved.extra["fooled_by/linf/eps=0.1"] == "square"
    np.testing.assert_array_equal(by_square, saved.values["robustness.clean_accuracy"].astype(bool) & ~square_robust)
    assert metrics["robustness.square.linf.eps=0.1.robust_accuracy"] == pytest.approx(square_robust.mean())
    assert by_square.sum() >= 1, "square fooled no sample"
    session = onnxruntime.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])
    replayed = session.run(None, {"x": x_adv[by_square].astype(np.float32)})[0].argmax(axis=1)
    assert (replayed != y[by_square]).all()
    assert np.abs(x_adv[by_square] - x[by_square]).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # the CNN is breakable at eps 0.1 (white-box APGD on its torch twin, the same samples, fools a third of them or
    # more): Square, on the ONNX scores alone, breaks some of them too
    from attacks.apgd import APGD
    from attacks.base import Domain

    twin = make_context(digits_cnn, data).model
    ok = saved.values["robustness.clean_accuracy"].astype(bool)
    white = APGD(norm="linf", steps=20)(twin, x[ok], y[ok], eps=0.1, domain=Domain.from_model_data(twin, data))
    assert white.success.mean() >= 1 / 3, white.success.mean()
    assert metrics["robustness.square.linf.eps=0.1.robust_accuracy"] < clean
    assert any(k.startswith("robustness.hsj.") for k in metrics)
    assert any("sections.robustness.attacks" in note for note in robustness["notes"])  # apgd skipped, key named
    explanations = results["sections"]["explanations"]
    assert explanations["status"] == "ok", explanations.get("error")
    assert {"explanations.shap_kernel.model_evaluations_per_sample",
            "explanations.lime.model_evaluations_per_sample"} <= set(explanations["metrics"])
    refused = [f["message"] for f in explanations["findings"] if "'ig'" in f["message"]]
    assert refused and "sections.explanations.methods" in refused[0]


def test_onnx_black_box_attributions_equal_the_torch_models(digits_onnx: Path, digits_cnn: nn.Module,
                                                            digits_test: Any, make_context: Any) -> None:
    """KernelSHAP and LIME see only scores: on the ONNX export they give the torch model's attributions (same keyed
    draws; the scores differ by float32 ulps, so the attributions agree to a tolerance from that scale)."""
    from explain.lime_methods import LimeExplainer
    from explain.shap_methods import ShapKernelExplainer

    onnx = load_model(ModelConfig(onnx=digits_onnx, onnx_conversion="off"), num_classes=10, sample=digits_test.x,
                      device=torch.device("cpu"), batch_size=256, default_bounds=None)
    torch_adapter = make_context(digits_cnn, digits_test).model
    x, background = digits_test.x[:3], digits_test.x[10:30]
    target = torch_adapter.predict(x)
    for cls, extra in ((ShapKernelExplainer, {"n_samples": 128, "n_background": 4}), (LimeExplainer,
                                                                                       {"n_samples": 40})):
        values = [cls(adapter, seed=5, background=background, modality="image", **extra).explain(x, target)
                  for adapter in (onnx, torch_adapter)]
        scale = float(np.abs(values[1]).max())
        assert scale > 0
        np.testing.assert_allclose(values[0], values[1], rtol=0, atol=1e-3 * scale)
