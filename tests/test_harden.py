"""Training-time defenses and ``nnaudit harden``: real robustness gains, distillation exposed, the CLI's
outputs and its errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from attacks import APGD, PGD, Domain
from attacks.defenses.hardening import harden, training_data_config
from attacks.section import RobustnessSection
from attacks.training import TrainingParams, train_defense
from audit.cli import main
from audit.config import parse_config
from audit.data import stratified_subset
from audit.errors import ConfigError
from audit.model import TorchModelAdapter
from reports.hardening import markdown_table

DIGITS = Domain.build(input_shape=(1, 8, 8), lower=0.0, upper=1.0)


def worst_case(module: torch.nn.Module, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, float]:
    """(clean accuracy, robust accuracy under APGD-CE and APGD-DLR at L-inf eps, per-sample worst case)."""
    model = TorchModelAdapter.from_module(module, num_classes=10, bounds=(0.0, 1.0))
    clean = model.predict(x) == y
    robust = clean.copy()
    for loss in ("ce", "dlr"):
        robust &= ~APGD(norm="linf", steps=20, loss=loss)(model, x, y, eps=eps, domain=DIGITS).success
    return float(clean.mean()), float(robust.mean())


@pytest.mark.parametrize(("method", "steps", "gain"), [("pgd_at", 5, 0.15), ("trades", 5, 0.10), ("fast_at", 1, 0.10)])
def test_adversarial_training_raises_robust_accuracy(method: str, steps: int, gain: float, digits_cnn: Any,
                                                     digits_train: Any, digits_test: Any) -> None:
    """Three epochs on the digits CNN; 200 test images: the binomial standard error of a difference of two
    accuracies there is at most 0.05, and the gains asked for are well above noise for a fixed seed."""
    index = stratified_subset(digits_test.y, 200, 0)
    x, y = digits_test.x[index], digits_test.y[index]
    before = worst_case(digits_cnn, x, y, 0.1)
    model = copy.deepcopy(digits_cnn)
    seen: list[int] = []

    def progress(items: Any, **kwargs: Any) -> Any:
        for item in items:
            seen.append(item)
            yield item

    history = train_defense(model, digits_train.x, digits_train.y, domain=DIGITS, progress=progress,
                            params=TrainingParams(method=method, epochs=3, eps=0.1, steps=steps, lr=2e-3))
    after = worst_case(model, x, y, 0.1)
    assert seen == [1, 2, 3] and len(history.epochs) == 3
    assert after[1] >= before[1] + gain, (before, after)
    assert after[0] >= before[0] - 0.05, (before, after)
    assert not any(p.requires_grad for p in model.parameters())  # frozen again, like an adapter's model


def test_distillation_is_exposed_by_margin_attacks_and_red_flags(digits_train: Any, digits_test: Any,
                                                                  make_context: Any) -> None:
    from audit.demo import _train
    from audit.zoo import digits_cnn

    torch.manual_seed(0)
    model = digits_cnn(width=8)
    _train(model, digits_train.x, digits_train.y, epochs=10, lr=3e-3, seed=0)
    train_defense(model, digits_train.x, digits_train.y, domain=DIGITS,
                  params=TrainingParams(method="distillation", epochs=20, temperature=100, lr=3e-3))
    index = stratified_subset(digits_test.y, 200, 0)
    x, y = digits_test.x[index], digits_test.y[index]
    net = TorchModelAdapter.from_module(model, num_classes=10, bounds=(0.0, 1.0))
    clean = net.predict(x) == y
    ce = float((clean & ~PGD(norm="linf", steps=20)(net, x, y, eps=0.1, domain=DIGITS).success).mean())
    dlr = float((clean & ~APGD(norm="linf", steps=20, loss="dlr")(net, x, y, eps=0.1, domain=DIGITS).success).mean())
    assert ce >= dlr + 0.2, (ce, dlr)  # the cross-entropy attack reports false robustness
    # a CE-only audit of it is flagged and marked unreliable
    ctx = make_context(model, digits_test, limit=100)
    result = RobustnessSection(attacks=["pgd"], eps=[0.1], minimal_samples=0, check_samples=16, steps=10,
                               check_queries=20, gallery_size=0)(ctx)
    metrics = result.metrics
    assert metrics["robustness.red_flags.count"] >= 1
    assert metrics["robustness.reliable"] == 0
    assert any("saturate" in f.message for f in result.findings)
    # the default headline (APGD-CE + APGD-DLR) is not fooled by it
    honest = RobustnessSection(eps=[0.1], minimal_samples=0, red_flags=False, steps=20, gallery_size=0)(
        make_context(model, digits_test, limit=200))
    assert honest.metrics["robustness.worst_case.linf.eps=0.1.robust_accuracy"] <= ce - 0.2


# -- the command -------------------------------------------------------------------------------------


def write_config(tmp_path: Path, model: torch.nn.Module, **overrides: Any) -> Path:
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    config: dict[str, Any] = {
        "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}, "weights": "model.pt",
                  "input_bounds": [0.0, 1.0]},
        "data": {"source": "digits", "split": "test", "limit": 60},
        "sections": {"performance": {}, "robustness": {"eps": [0.05, 0.1], "steps": 5, "minimal_samples": 0,
                                                       "check_samples": 8, "gallery_size": 0}},
        "report": False,
    }
    config.update(overrides)
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_harden_command_writes_weights_config_and_comparison(tmp_path: Path, digits_cnn: Any,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, digits_cnn)
    out = tmp_path / "hardened"
    monkeypatch.setenv("NNAUDIT_PROGRESS", "log")  # progress lines through the one reporter
    code = main(["harden", str(config), "--method", "fast_at", "--epochs", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "worst_case.linf.eps=0.1.robust_accuracy" in printed.out
    assert "harden (fast_at) > fast_at epochs 2/2" in printed.err
    state = torch.load(out / "hardened.pt", map_location="cpu", weights_only=True)
    from audit.zoo import digits_cnn as build

    rebuilt = build(width=8)
    rebuilt.load_state_dict(state)
    assert not torch.equal(state["0.weight"], digits_cnn.state_dict()["0.weight"])  # it did train
    # the written config audits the hardened weights
    written = yaml.safe_load((out / "audit.yaml").read_text())
    assert written["model"]["weights"] == "hardened.pt"
    assert parse_config(written, base_dir=out).model.weights == (out / "hardened.pt").resolve()
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {r[0]: r[1:] for r in comparison["comparison"]["rows"]}
    assert {"clean_accuracy", "worst_case.linf.eps=0.05.robust_accuracy", "worst_case.linf.eps=0.1.robust_accuracy",
            "red_flags.count", "reliable"} <= set(rows)
    assert comparison["params"]["eps"] == 0.1  # the robustness section's middle eps
    before = json.loads((out / "before" / "results.json").read_text())
    assert before["sections"]["robustness"]["metrics"]["robustness.clean_accuracy"] == rows["clean_accuracy"][0]
    assert set(before["sections"]) == {"robustness"}  # the audits run the robustness section only by default
    markdown = (out / "comparison.md").read_text()  # rendered by reports.hardening from the same rows
    assert markdown.startswith("# nnaudit harden: fast_at\n") and markdown_table(comparison["comparison"]["rows"]) \
        in markdown and markdown_table(comparison["comparison"]["rows"]) in printed.out
    assert not (out / "before" / "report.html").exists()  # the config says report: false
    # a second run into the same directory needs --overwrite
    assert main(["harden", str(config), "--method", "fast_at", "--epochs", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_comparison_table_formats_numbers_as_it_always_has() -> None:
    """3 decimals for fractions, whole numbers as integers, the sign of every change, n/a for a missing side."""
    rows = [["clean_accuracy", 0.95, 0.9125, -0.0375], ["red_flags.count", 3.0, 0.0, -3.0], ["reliable", 0.0, 1.0, 1.0],
            ["pgd.linf.eps=0.1.robust_accuracy", None, 0.5, None], ["worst_case.l2.eps=0.5.robust_accuracy", 0.25,
                                                                    0.25, 0.0]]
    assert markdown_table(rows).splitlines() == [
        "| measure (robustness section) | before | after | change |", "|---|---:|---:|---:|",
        "| clean_accuracy | 0.950 | 0.912 | -0.037 |", "| red_flags.count | 3 | 0 | -3 |", "| reliable | 0 | 1 | +1 |",
        "| pgd.linf.eps=0.1.robust_accuracy | n/a | 0.500 | n/a |",
        "| worst_case.l2.eps=0.5.robust_accuracy | 0.250 | 0.250 | +0 |"]


def test_harden_errors_name_what_to_change(tmp_path: Path, digits_cnn: Any) -> None:
    config = write_config(tmp_path, digits_cnn)
    with pytest.raises(ConfigError) as err:
        harden(config, out=tmp_path / "o", method="magic", epochs=1)
    assert err.value.key == "--method" and "pgd_at" in err.value.message
    on_train = write_config(tmp_path, digits_cnn, data={"source": "digits", "split": "train"})
    with pytest.raises(ConfigError) as err:
        harden(on_train, out=tmp_path / "o", method="pgd_at", epochs=1)
    assert err.value.key == "train_data"
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.arange(4))
    no_split = write_config(tmp_path, digits_cnn, data={"source": "npz", "path": "d.npz"})
    with pytest.raises(ConfigError) as err:
        harden(no_split, out=tmp_path / "o", method="pgd_at", epochs=1)
    assert err.value.key == "train_data" and "no training data" in err.value.message
    with pytest.raises(ConfigError) as err:
        harden(config, out=tmp_path / "o", method="pgd_at", epochs=0)
    assert err.value.key == "--epochs"
    assert not (tmp_path / "o").exists()  # nothing written for a refused command


def test_train_data_block_is_used_and_resolved(tmp_path: Path, digits_cnn: Any) -> None:
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.arange(4))
    path = write_config(tmp_path, digits_cnn, train_data={"source": "npz", "path": "train.npz"})
    from audit.config import load_config

    block, origin = training_data_config(load_config(path))
    assert origin == "train_data" and block.path == (tmp_path / "train.npz").resolve()
    missing = write_config(tmp_path, digits_cnn, train_data={"source": "npz", "path": "nope.npz"})
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert err.value.key == "train_data.path"
