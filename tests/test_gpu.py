"""Device handling: work stays on the model's device, out-of-memory back-off, mixed precision, torch.compile.

The CUDA tests run where a GPU is present and skip with a visible reason where not (``pytest -rs`` lists
them; ``benchmarks/gpu_check.py`` runs them on a GPU machine). Everything else runs on CPU: the
out-of-memory error is injected, the no-host-copy rule is checked by trapping ``Tensor.cpu``/``numpy``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attacks import Domain, make_attack
from attacks.base import Attack
from audit.device import BackoffLog, is_out_of_memory, run_halving
from audit.errors import ConfigError
from audit.model import SelectOutput, TorchModelAdapter

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine (torch.cuda.is_available() is "
                                "False); run benchmarks/gpu_check.py on a GPU machine")
DIGITS: dict[str, Any] = {"num_classes": 10, "bounds": (0.0, 1.0)}  # TorchModelAdapter.from_module
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=needs_cuda)]


class RunsOutOfMemory(nn.Module):
    """The wrapped network, raising torch's out-of-memory error for batches above ``limit`` rows (as a GPU
    would), and counting the batches it refused."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            self.refused += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} rows (injected)")
        out: torch.Tensor = self.inner(x)
        return out


@pytest.fixture(scope="module")
def digits_attack_data(digits_test: Any) -> tuple[np.ndarray, np.ndarray, Domain]:
    x, y = digits_test.x[:48], digits_test.y[:48]
    return x, y, Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)


# --- out-of-memory back-off ----------------------------------------------------------------------


def test_attack_halves_the_batch_on_out_of_memory_and_records_it(digits_cnn: nn.Module,
                                                                   digits_attack_data: Any) -> None:
    x, y, domain = digits_attack_data
    flaky = RunsOutOfMemory(digits_cnn, limit=16)
    attack = make_attack("pgd", norm="linf", steps=5)
    attack.random_start = False  # type: ignore[attr-defined]  # deterministic: the same answer at any batching
    out = attack(TorchModelAdapter.from_module(flaky, **DIGITS), x, y, eps=0.1, domain=domain, batch_size=64)
    # 48 rows > 16: halved to 24, still > 16: halved to 12, which fits; later batches stay at 12
    assert out.settings["out_of_memory_backoff"] == "64 -> 24 -> 12" and out.settings["batch_size"] == 12
    assert flaky.refused == 2
    reference = attack(TorchModelAdapter.from_module(digits_cnn, **DIGITS), x, y, eps=0.1, domain=domain, batch_size=12)
    np.testing.assert_array_equal(out.x_adv, reference.x_adv)  # the same batches, so the same numbers
    np.testing.assert_array_equal(out.success, reference.success)
    assert "out_of_memory_backoff" not in reference.settings and reference.settings["batch_size"] == 12


def test_logits_back_off_and_other_errors_pass_through(digits_cnn: nn.Module, digits_test: Any) -> None:
    flaky = RunsOutOfMemory(digits_cnn, limit=50)
    model = TorchModelAdapter.from_module(flaky, **DIGITS, batch_size=200)
    logits = model.logits(digits_test.x)
    assert torch.allclose(logits, digits_cnn(torch.from_numpy(digits_test.x)), rtol=0,
                          atol=1e-5 * float(logits.abs().max()))
    assert model.backoff.describe() == {"model logits": "200 -> 100 -> 50"}
    assert model.describe()["out_of_memory_backoff"] == {"model logits": "200 -> 100 -> 50"}
    with pytest.raises(ValueError, match="not memory"):  # any other error is not retried
        run_halving(lambda t: (_ for _ in ()).throw(ValueError("not memory")), torch.zeros(8), 4, BackoffLog(), "x")
    with pytest.raises(torch.OutOfMemoryError):  # one row still too many: the error goes on
        run_halving(RunsOutOfMemory(nn.Identity(), limit=0), torch.zeros(8, 2), 4, BackoffLog(), "x")
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(RuntimeError("x"))


def test_settings_table_shows_the_back_off(digits_cnn: nn.Module, digits_test: Any, make_context: Any) -> None:
    from attacks.section import RobustnessSection

    flaky = RunsOutOfMemory(digits_cnn, limit=20)
    ctx = make_context(TorchModelAdapter.from_module(flaky, **DIGITS, batch_size=40), digits_test, limit=40,
                       batch_size=40)
    ctx.model.backoff = BackoffLog()
    result = RobustnessSection(eps=[0.1], attacks=["fgsm"], minimal_samples=0, red_flags=False, gallery_size=0)(ctx)
    assert result.status == "ok", result.error
    table = next(t for t in result.tables if t.name == "settings")
    column = table.columns.index("batch size")
    assert [row[column] for row in table.rows] == ["40 -> 20 (out of memory)"]


# --- nothing leaves the device inside the attack and explainer loops -------------------------------


@pytest.fixture
def no_host_copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``Tensor.cpu``, ``Tensor.numpy`` and ``Tensor.tolist`` calls, and ``Tensor.to`` calls that move a tensor
    off an accelerator to the CPU, are recorded."""
    calls: list[str] = []
    for name in ("cpu", "numpy", "tolist"):
        original = getattr(torch.Tensor, name)

        def trap(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, trap)
    original_to = torch.Tensor.to

    def trap_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = original_to(self, *args, **kwargs)
        if self.device.type != "cpu" and out.device.type == "cpu":
            calls.append("to(cpu)")
        return out

    monkeypatch.setattr(torch.Tensor, "to", trap_to)
    yield calls


def test_the_trap_sees_host_copies(no_host_copies: list[str]) -> None:
    torch.zeros(2).cpu().numpy()
    torch.ones(1).tolist()
    assert no_host_copies == ["cpu", "numpy", "tolist"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "apgd_dlr", "square"])
def test_attack_loops_stay_on_the_device(name: str, device: str, digits_cnn: nn.Module, digits_attack_data: Any,
                                         no_host_copies: list[str]) -> None:
    x, y, domain = digits_attack_data
    model = TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), **DIGITS, device=device)
    attack: Attack = make_attack(name, norm="linf", steps=5, queries=30)
    xb, yb = torch.as_tensor(x[:16], device=device), torch.as_tensor(y[:16], device=device)
    forward = attack._forward(model)
    adv = attack._attack_batch(forward, xb, yb, eps=0.1, domain=domain.to(device), target=None)
    assert no_host_copies == [], f"{name} copied to the host inside its loop: {no_host_copies}"
    assert adv.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["ig", "saliency", "gradient_shap"])
def test_gradient_explainers_stay_on_the_device(method: str, device: str, digits_cnn: nn.Module, digits_test: Any,
                                                no_host_copies: list[str]) -> None:
    from explain.section import explainer_classes

    model = TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), **DIGITS, device=device)
    explainer = explainer_classes()[method](model, seed=0, background=digits_test.x[:8], modality="image")
    x = torch.as_tensor(digits_test.x[:4], device=device).requires_grad_(True)
    explainer.batch_ids = np.arange(4)
    no_host_copies.clear()
    attr = explainer._attribute(x, torch.as_tensor(digits_test.y[:4], device=device))
    assert no_host_copies == [], f"{method} copied to the host while attributing: {no_host_copies}"
    assert isinstance(attr, torch.Tensor) and attr.device.type == device


# --- mixed precision -----------------------------------------------------------------------------


class LargeOffset(nn.Module):
    """Adds 1000 to every logit: harmless in float32, ruinous in bfloat16 (its spacing near 1000 is 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1000.0


def _config(**extra: Any) -> Any:
    from audit.config import parse_config

    return parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"}, **extra})


def test_bf16_autocast_is_used_and_kept_when_robust_accuracy_holds(digits_cnn: nn.Module, digits_test: Any,
                                                                    make_context: Any) -> None:
    from audit.engine.execution import prepare_execution

    model = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    x = torch.from_numpy(digits_test.x[:64])
    fp32 = model.forward(x)
    prepare_execution(make_context(model, digits_test, seed=1), _config(precision="bf16", seed=1))
    check = model.precision_check
    assert check is not None and check["requested"] == "bf16" and check["samples"] == min(400, len(digits_test.y))
    assert check["accepted"] == (check["difference_points"] < 0.5)
    assert check["difference_points"] == pytest.approx(
        100 * abs(check["robust_accuracy_bf16"] - check["robust_accuracy_fp32"]))
    assert model.precision == ("bf16" if check["accepted"] else "fp32")
    model.set_precision("bf16")
    low = model.forward(x)
    assert low.dtype == torch.float32  # results come back in float32
    assert not torch.equal(low, fp32)  # bf16 arithmetic really ran
    scale = float(fp32.abs().max())
    assert float((low - fp32).abs().max()) < 0.05 * scale  # bf16 keeps 8 bits: a few percent of the scale
    assert torch.equal(model.logits(x), fp32)  # clean predictions stay float32
    assert model.describe()["precision"] == "bf16" and "precision_check" in model.describe()


def test_bf16_refused_when_it_moves_robust_accuracy(digits_cnn: nn.Module, digits_test: Any, make_context: Any) -> None:
    from audit.engine.execution import prepare_execution

    model = TorchModelAdapter.from_module(nn.Sequential(digits_cnn, LargeOffset()), **DIGITS)
    prepare_execution(make_context(model, digits_test), _config(precision="bf16"))
    check = model.precision_check
    assert check is not None and not check["accepted"] and check["difference_points"] >= 0.5
    assert model.precision == "fp32"
    assert "refused, the run uses fp32" in check["note"]


def test_precision_and_compile_are_refused_for_black_boxes(digits_test: Any, make_context: Any) -> None:
    from audit.engine.execution import prepare_execution
    from audit.model import PredictFunctionAdapter

    box = PredictFunctionAdapter(lambda a: np.zeros((len(a), 10)), SelectOutput(None, "logits", False),
                                 num_classes=10, output_kind="logits", bounds=None, device=torch.device("cpu"),
                                 batch_size=8, source="x", sha256="0" * 64)
    for extra, key in (({"precision": "fp16"}, "precision"), ({"compile": True}, "compile")):
        with pytest.raises(ConfigError, match="applies to torch models") as info:
            prepare_execution(make_context(box, digits_test), _config(**extra))
        assert info.value.key == key


def test_run_records_the_precision_check(tmp_path: Path, digits_cnn: nn.Module) -> None:
    from audit.runner import run_audit

    torch.save(digits_cnn.state_dict(), tmp_path / "w.pt")
    config = _config(precision="bf16", report=False, device="cpu",
                     sections={"robustness": {"eps": [0.05], "attacks": ["fgsm"], "minimal_samples": 0,
                                              "red_flags": False, "gallery_size": 0, "max_samples": 40}})
    config.model.kwargs = {"width": 8}
    config.model.weights = tmp_path / "w.pt"
    results = run_audit(config, tmp_path / "run")
    model = results["manifest"]["model"]
    assert model["precision_check"]["attack"] == "fgsm" and model["precision_check"]["eps"] == 0.05
    assert model["precision_check"]["steps"] == 1 and "fgsm linf eps=0.05, 1 steps" in model["precision_check"]["note"]
    assert model["precision"] == ("bf16" if model["precision_check"]["accepted"] else "fp32")



def test_precision_check_is_a_section_capability(digits_cnn: nn.Module, digits_test: Any, make_context: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine asks the enabled sections (``SectionPlugin.check_precision``) in order, the first record wins;
    without one it borrows the registered robustness plugin, which checks at its default threat (L-inf PGD at
    1/32 of the input range), not at the defaults of a robustness section (APGD-CE at eps 0.1)."""
    import attacks.precision
    from attacks.section import RobustnessSection
    from audit.engine.execution import prepare_execution
    from audit.plugin import SectionPlugin

    asked: list[dict[str, Any]] = []

    def measured(adapter: Any, data: Any, **kwargs: Any) -> dict[str, Any]:  # what the attacks would measure
        asked.append(kwargs)
        return {"requested": kwargs["precision"], "accepted": True, "note": f"checked with {kwargs['attack']}"}

    monkeypatch.setattr(attacks.precision, "check_precision", measured)

    class OwnCheck(SectionPlugin):
        name = "own_check"

        def run(self, ctx: Any, result: Any) -> None:
            raise AssertionError("not run")

        def check_precision(self, ctx: Any, precision: str, *, configured: bool = True) -> dict[str, Any] | None:
            return {"requested": precision, "accepted": False, "note": "refused by own_check"}

    model = TorchModelAdapter.from_module(digits_cnn, **DIGITS)
    ctx = make_context(model, digits_test, seed=4, batch_size=64)
    prepare_execution(ctx, _config(precision="bf16"), [OwnCheck(), RobustnessSection(eps=[0.05, 0.2])])
    assert model.precision_check == {"requested": "bf16", "accepted": False, "note": "refused by own_check"}
    assert model.precision == "fp32" and asked == []
    prepare_execution(ctx, _config(precision="bf16"), [RobustnessSection(eps=[0.3, 0.05, 0.2], attacks=["square",
                                                                                                      "fgsm"])])
    assert asked[-1] == {"precision": "bf16", "norm": "linf", "eps": 0.2, "attack": "fgsm", "seed": 4,
                         "batch_size": 64}
    prepare_execution(ctx, _config(precision="fp16"))  # no section checks it: the registry's robustness plugin
    assert asked[-1] == {"precision": "fp16", "norm": "linf", "eps": 1 / 32, "attack": "pgd", "seed": 4,
                         "batch_size": 64}
    assert model.precision == "fp16" and model.precision_check["note"] == "checked with pgd"


# --- torch.compile -------------------------------------------------------------------------------


def test_compile_matches_eager_or_says_how_to_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(6, 4)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no C++ compiler")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "compile", broken)
        with pytest.raises(ConfigError, match="Set compile: false") as info:
            TorchModelAdapter.from_module(tiny, num_classes=3, bounds=(0.0, 1.0)).compile(x)
        assert info.value.key == "compile"
    if os.environ.get("NNAUDIT_TEST_COMPILE", "0") != "1":
        pytest.skip("a real torch.compile takes minutes on a shared 2-core CPU; NNAUDIT_TEST_COMPILE=1 runs it "
                    "(benchmarks/gpu_check.py sets it)")
    model = TorchModelAdapter.from_module(tiny, num_classes=3, bounds=(0.0, 1.0))
    eager = model.forward(x.clone().requires_grad_(True))
    model.compile(x)
    assert model.compiled and model.describe()["compiled"] is True
    xg = x.clone().requires_grad_(True)
    out = model.forward(xg)
    (grad,) = torch.autograd.grad(out.sum(), xg)
    xe = x.clone().requires_grad_(True)
    (grad_eager,) = torch.autograd.grad(tiny(xe).sum(), xe)
    assert torch.allclose(out, eager, atol=1e-5) and torch.allclose(grad, grad_eager, atol=1e-5)


# --- CUDA end to end ------------------------------------------------------------------------------


@needs_cuda
def test_cuda_robustness_section_matches_cpu_clean_accuracy(digits_cnn: nn.Module, digits_test: Any,
                                                            make_context: Any) -> None:
    from attacks.section import RobustnessSection

    params = {"eps": [0.1], "attacks": ["apgd_ce", "square"], "steps": 10, "square_queries": 50,
              "minimal_samples": 8, "check_samples": 8, "gallery_size": 0}
    cpu = RobustnessSection(**params)(make_context(digits_cnn, digits_test, limit=100))
    cuda_ctx = make_context(TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), **DIGITS, device="cuda"),
                            digits_test, limit=100)
    gpu = RobustnessSection(**params)(cuda_ctx)
    assert gpu.status == "ok", gpu.error
    assert gpu.metrics["robustness.clean_accuracy"] == cpu.metrics["robustness.clean_accuracy"]
    key = "robustness.worst_case.linf.eps=0.1.robust_accuracy"
    # different kernels and random streams: the two estimates of one robust accuracy on 100 samples agree within
    # the binomial spread of their difference (4 standard deviations)
    p = (gpu.metrics[key] + cpu.metrics[key]) / 2
    assert abs(gpu.metrics[key] - cpu.metrics[key]) <= 4 * (2 * p * (1 - p) / 100) ** 0.5 + 1e-9
    assert 0 <= gpu.metrics[key] <= gpu.metrics["robustness.clean_accuracy"]


@needs_cuda
def test_cuda_bf16_check_on_the_demo_cnn(digits_cnn: nn.Module, digits_test: Any, make_context: Any) -> None:
    from audit.engine.execution import prepare_execution

    model = TorchModelAdapter.from_module(copy.deepcopy(digits_cnn), **DIGITS, device="cuda")
    prepare_execution(make_context(model, digits_test), _config(precision="bf16"))
    assert model.precision_check is not None
    assert model.precision_check["accepted"] == (model.precision_check["difference_points"] < 0.5)


def test_explainer_halves_its_batch_on_out_of_memory(digits_cnn: nn.Module, digits_test: Any) -> None:
    """Random draws are keyed per sample, so attributions after a back-off equal those at the smaller batch."""
    from explain.captum_methods import GradientShapExplainer

    x, y = digits_test.x[:12], digits_test.y[:12]
    # GradientShap evaluates 8 noisy copies per row
    flaky = TorchModelAdapter.from_module(RunsOutOfMemory(digits_cnn, limit=4 * 8), **DIGITS)
    common: dict[str, Any] = {"seed": 3, "background": digits_test.x[20:40], "modality": "image", "n_samples": 8}
    explainer = GradientShapExplainer(flaky, batch_size=12, **common)
    values = explainer.explain(x, y, np.arange(12))
    assert explainer.batch_size == 3 and flaky.backoff.chain("explainer gradient_shap") == "12 -> 6 -> 3"
    assert explainer.notes and "out of memory" in explainer.notes[0]
    reference = GradientShapExplainer(TorchModelAdapter.from_module(digits_cnn, **DIGITS), batch_size=3,
                                      **common).explain(x, y, np.arange(12))
    np.testing.assert_array_equal(values, reference)


def test_run_manifest_records_logits_back_off(tmp_path: Path, digits_cnn: nn.Module,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that runs out of memory above 50 rows: the run completes at batch size 256 and the manifest says
    how the logits pass got down to 64."""
    import sys

    from audit.config import parse_config
    from audit.runner import run_audit

    torch.save(digits_cnn.state_dict(), tmp_path / "w.pt")
    (tmp_path / "flaky_model.py").write_text(
        "import torch\nfrom audit.zoo import digits_cnn\n\n"
        "class Flaky(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.inner = digits_cnn(width=8)\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] > 64:\n            raise torch.OutOfMemoryError('CUDA out of memory (injected)')\n"
        "        return self.inner(x)\n\n"
        "def build():\n    return Flaky()\n")
    state = {f"inner.{k}": v for k, v in digits_cnn.state_dict().items()}
    torch.save(state, tmp_path / "flaky.pt")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    config = parse_config({"model": {"factory": "flaky_model:build", "weights": "flaky.pt"},
                           "data": {"source": "digits"}, "device": "cpu", "report": False,
                           "sections": {"performance": {}}}, base_dir=tmp_path)
    results = run_audit(config, tmp_path / "run")
    assert results["manifest"]["status"] == "complete"
    assert results["manifest"]["model"]["out_of_memory_backoff"] == {"model logits": "256 -> 128 -> 64"}
    sys.modules.pop("flaky_model", None)


def test_report_rows_show_precision_compile_and_back_off() -> None:
    from results_factory import make_results

    from reports.views import manifest_rows

    results = make_results()
    results["manifest"]["model"].update({
        "precision": "fp32", "compiled": True, "out_of_memory_backoff": {"model logits": "256 -> 128"},
        "precision_check": {"note": "precision bf16 refused, the run uses fp32: ..."}})
    rows = dict(manifest_rows(results))
    assert rows["Precision"].startswith("precision bf16 refused") and rows["Compiled"] == "torch.compile"
    assert rows["Out-of-memory back-off"] == "model logits: 256 -> 128"
    del results["manifest"]["model"]["precision_check"], results["manifest"]["model"]["compiled"]
    results["manifest"]["model"]["out_of_memory_backoff"] = {}
    rows = dict(manifest_rows(results))
    assert "Precision" not in rows and "Compiled" not in rows and "Out-of-memory back-off" not in rows
