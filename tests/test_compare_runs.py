"""`nnaudit compare` end to end on real audits: the same model audited with two seeds is no significant change
(exit 0); the model against a copy with noisy weights is a regression (exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from audit.cli import main
from audit.decide.compare import compare_run_dirs

SECTIONS = {"performance": {},
            "robustness": {"eps": [0.05, 0.1], "attacks": ["pgd"], "steps": 5, "minimal_norm": [],
                           "red_flags": False, "gallery_size": 0}}


def _config(path: Path, weights: Path) -> Path:
    # the whole test split, no data.limit: a limit draws its subset with the seed, so two seeds would audit
    # different data and nothing could be paired
    path.write_text(yaml.safe_dump({
        "title": "digits CNN", "model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8},
                                         "weights": weights.name, "input_bounds": [0.0, 1.0]},
        "data": {"source": "digits", "split": "test"}, "device": "cpu", "report": False, "sections": SECTIONS}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare_runs")
    state = digits_cnn.state_dict()
    torch.save(state, root / "cnn.pt")
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1
             else v for k, v in state.items()}
    torch.save(noisy, root / "noisy.pt")
    config, degraded = _config(root / "audit.yaml", root / "cnn.pt"), _config(root / "noisy.yaml", root / "noisy.pt")
    out = {"seed0": root / "seed0", "seed1": root / "seed1", "noisy": root / "noisy"}
    assert main(["run", str(config), "--out", str(out["seed0"]), "--seed", "0"]) == 0
    assert main(["run", str(config), "--out", str(out["seed1"]), "--seed", "1"]) == 0
    assert main(["run", str(degraded), "--out", str(out["noisy"]), "--seed", "0"]) == 0
    return out


def test_two_seeds_of_the_same_model_are_no_significant_change(runs: dict[str, Path]) -> None:
    comparison = compare_run_dirs(runs["seed0"], runs["seed1"])
    assert comparison.pairing.available and comparison.pairing.n_samples == 450
    assert set(comparison.pairing.sections) == {"performance", "robustness"}
    accuracy = comparison.delta("performance.accuracy")
    assert accuracy is not None and accuracy.delta == 0.0  # clean predictions do not depend on the seed
    assert accuracy.significance is not None and accuracy.significance.p_value == 1.0
    robust = comparison.delta("robustness.worst_case.linf.eps=0.1.robust_accuracy")
    assert robust is not None and robust.significance is not None  # the random starts differ, and are paired
    assert comparison.regressions == [] and comparison.exit_code == 0
    assert comparison.differences == ("seed 0 -> 1",)


def test_noisy_weights_are_a_regression(runs: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    comparison = compare_run_dirs(runs["seed0"], runs["noisy"])
    assert len(comparison.differences) == 1 and comparison.differences[0].startswith("model sha256 ")
    regressed = {d.metric for d in comparison.regressions}
    assert {"performance.accuracy", "performance.error_rate", "performance.loss"} <= regressed
    accuracy = comparison.delta("performance.accuracy")
    assert accuracy is not None and accuracy.delta is not None and accuracy.delta < 0
    summary = tmp_path / "summary.md"
    assert main(["compare", str(runs["seed0"]), str(runs["noisy"]), "--summary", str(summary)]) == 1
    assert "compare REGRESSION (exit 1)" in capsys.readouterr().out
    assert summary.read_text().startswith("## ❌ nnaudit compare: regression")
