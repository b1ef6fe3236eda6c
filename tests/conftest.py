"""Shared fixtures: tiny models trained in seconds on real shipped data, and audit contexts."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import system
from pg_helpers import postgres_server  # noqa: F401 - the session's PostgreSQL server (results store tests)

os.environ.setdefault("NNAUDIT_PROGRESS", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.pop("NNAUDIT_STORE", None)  # a developer's or CI's results store never receives the tests' runs
# A shell starts a background job (`pytest ... &` in a script) with SIGINT ignored, and children inherit an
# ignored signal: every `nnaudit run` the tests start would then ignore the SIGINT its test sends (the runner keeps
# a signal its parent ignored ignored, as nohup asks) and wait forever. Children inherit a default instead.
if system.required():  # CI: an optional Python package missing fails its tests instead of skipping them
    pytest.importorskip = system.import_or_fail  # type: ignore[assignment]
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def digits_train() -> Any:
    from audit.data import load_digits_data

    return load_digits_data("train")


@pytest.fixture(scope="session")
def digits_test() -> Any:
    from audit.data import load_digits_data

    return load_digits_data("test")


@pytest.fixture(scope="session")
def digits_cnn(digits_train: Any) -> Any:
    """A digits CNN (about 0.95+ test accuracy), trained once per session in ~2 s."""
    import torch

    from audit.demo import _train
    from audit.zoo import digits_cnn as build

    torch.manual_seed(0)
    model = build(width=8)
    _train(model, digits_train.x, digits_train.y, epochs=10, lr=3e-3, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def cancer_test() -> Any:
    from audit.data import load_breast_cancer_data

    return load_breast_cancer_data("test")


@pytest.fixture(scope="session")
def cancer_mlp() -> Any:
    import torch

    from audit.data import load_breast_cancer_data
    from audit.demo import _train
    from audit.zoo import tabular_mlp

    train = load_breast_cancer_data("train")
    torch.manual_seed(0)
    model = tabular_mlp(in_features=train.x.shape[1], hidden=16, dropout=0.0)
    _train(model, train.x, train.y, epochs=30, lr=3e-3, seed=0)
    return model.eval()


@pytest.fixture
def make_context(tmp_path: Path) -> Callable[..., Any]:
    """make_context(module_or_adapter, data, **kwargs) -> AuditContext on CPU, run dir under tmp_path."""
    from audit.context import AuditContext
    from audit.model import ModelAdapter, TorchModelAdapter

    def factory(model: Any, data: Any, *, seed: int = 0, batch_size: int = 256, output_kind: str = "logits",
                bounds: tuple[float, float] | None = None, limit: int | None = None) -> AuditContext:
        if limit is not None:
            from audit.data import stratified_subset

            data = data.subset(stratified_subset(data.y, limit, seed))
        if isinstance(model, ModelAdapter):
            adapter = model
        else:
            if bounds is None and data.modality == "image":
                bounds = (0.0, 1.0)
            adapter = TorchModelAdapter.from_module(model, num_classes=data.num_classes, output_kind=output_kind,
                                                    bounds=bounds, batch_size=batch_size)
        return AuditContext(model=adapter, data=data, run_dir=tmp_path / "run", seed=seed, batch_size=batch_size)

    return factory


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def resume_test() -> Any:
    from audit.data import load_resume_names_data

    return load_resume_names_data("test")


@pytest.fixture(scope="session")
def resume_mlp() -> Any:
    """The demo's ResumeNames MLP recipe (class-weighted), trained once per session."""
    import torch

    from audit.data import load_resume_names_data
    from audit.demo import _train
    from audit.zoo import tabular_mlp

    train = load_resume_names_data("train")
    counts = np.bincount(train.y, minlength=2)
    torch.manual_seed(0)
    model = tabular_mlp(in_features=train.x.shape[1], hidden=32)
    _train(model, train.x, train.y, epochs=10, lr=1e-3, seed=0, class_weight=counts.sum() / (2.0 * counts),
           weight_decay=1e-3)
    return model.eval()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `nnaudit demo` (run once per session, through the real CLI); ``NNAUDIT_DEMO_DIR`` names one made
    before instead."""
    import subprocess
    import sys

    if os.environ.get("NNAUDIT_DEMO_DIR"):
        return Path(os.environ["NNAUDIT_DEMO_DIR"])
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "demo", "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout and "nnaudit dashboard" in proc.stdout
    return out
