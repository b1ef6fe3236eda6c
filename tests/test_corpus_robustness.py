"""Bad-input corpus, robustness and input validation: one case per bad input, each with its exact outcome.

Errors are raised before any section runs and before anything is written (no results.json in the output
folder); the message names the config key to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from audit.config import parse_config
from audit.errors import ConfigError, DataError
from audit.results import RESULTS_FILE
from audit.runner import run_audit

LINEAR = {"factory": "toy_models:image_linear", "kwargs": {"channels": 1, "size": 8, "classes": 10},
          "input_bounds": [0.0, 1.0]}
ROBUSTNESS = {"robustness": {"eps": [0.1], "steps": 2, "minimal_samples": 0, "red_flags": False}}


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data[:60].reshape(-1, 1, 8, 8), bunch.target[:60]  # raw pixels 0..16


def npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


def run(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    return run_audit(parse_config({"device": "cpu", "report": False, **config}), tmp_path / "out")


# -- data outside the model's input bounds, eps beyond the input range: ConfigError before any work ------------

def uint8_pixels(tmp_path: Path) -> dict[str, Any]:
    x, y = digits_arrays()
    data = npz(tmp_path, (x * 255 / 16).round().astype(np.uint8), y)  # 0..255 read without data.scale
    return {"model": LINEAR, "data": {"source": "npz", "path": str(data)}, "sections": ROBUSTNESS}


def digits_0_16(tmp_path: Path) -> dict[str, Any]:
    x, y = digits_arrays()
    return {"model": LINEAR, "data": {"source": "npz", "path": str(npz(tmp_path, x, y))}, "sections": ROBUSTNESS}


def negative_pixels(tmp_path: Path) -> dict[str, Any]:
    x, y = digits_arrays()
    data = npz(tmp_path, x / 8.0 - 1.0, y)  # standardized-looking data in [-1, 1] with bounds [0, 1]
    return {"model": LINEAR, "data": {"source": "npz", "path": str(data)}, "sections": {"performance": {}}}


def digits_run(sections: dict[str, Any]) -> Any:
    def build(tmp_path: Path) -> dict[str, Any]:
        return {"model": {"factory": "audit.zoo:digits_cnn", "kwargs": {"width": 8}},
                "data": {"source": "digits", "limit": 40}, "sections": sections}
    return build


ERROR_CASES = {
    "uint8 data, bounds [0, 1], no data.scale": (
        uint8_pixels, ConfigError, "model.input_bounds",
        ["lie outside the model's input bounds [0, 1]", "the data spans [0, 255]", "data.scale: 255"]),
    "0..16 data, bounds [0, 1]": (
        digits_0_16, ConfigError, "model.input_bounds", ["the data spans [0, 16]", "data.scale: 16"]),
    "data below the lower bound": (
        negative_pixels, ConfigError, "model.input_bounds", ["the data spans [-1, 1]", "data.scale"]),
    "linf eps beyond the input range": (
        digits_run({"robustness": {"eps": [0.1, 1.5]}}), ConfigError, "sections.robustness.eps",
        ["linf eps 1.5 exceeds the largest input range (upper - lower), 1", "linf eps <= 1"]),
    "l2 eps beyond the box diameter": (
        digits_run({"robustness": {"norm": "l2", "eps": [9.0]}}), ConfigError, "sections.robustness.eps",
        ["l2 eps 9 exceeds the diameter of the input box, 8"]),
    "per-norm eps, only l2 too large": (
        digits_run({"robustness": {"norm": ["linf", "l2"], "eps": {"linf": [0.1], "l2": [0.5, 20]}}}), ConfigError,
        "sections.robustness.eps", ["l2 eps 20 exceeds"]),
    "eps too large in a renamed section": (
        digits_run({"adv": {"plugin": "robustness", "params": {"eps": [2.0]}}}), ConfigError, "sections.adv.eps",
        ["linf eps 2 exceeds"]),
    "red-flag thresholds out of order": (
        digits_run({"robustness": {"red_flag_params": {"blackbox_suspicious": 0.2, "blackbox_masked": 0.1}}}),
        ConfigError, "sections.robustness.red_flag_params",
        ["blackbox_suspicious (0.2) must not exceed blackbox_masked (0.1)"]),
    "red-flag threshold misspelt": (
        digits_run({"robustness": {"red_flag_params": {"unbounded_mask": 0.2}}}), ConfigError,
        "sections.robustness.red_flag_params.unbounded_mask", ["unknown parameter"]),
    "red-flag threshold above 1": (
        digits_run({"robustness": {"red_flag_params": {"unbounded_masked": 2}}}), ConfigError,
        "sections.robustness.red_flag_params.unbounded_masked", ["less than or equal to 1"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_run_config_is_refused_before_any_work(case: str, tmp_path: Path) -> None:
    build, error, key, words = ERROR_CASES[case]
    with pytest.raises(error) as raised:
        run(tmp_path, build(tmp_path))
    assert raised.value.key == key
    for word in words:
        assert word in raised.value.message, (word, raised.value.message)
    assert not (tmp_path / "out" / RESULTS_FILE).exists()  # nothing written


# -- labels that are not class indices 0..K-1: DataError naming the key -----------------------------------------

def labels_case(y: Any, source: str = "npz") -> Any:
    def build(tmp_path: Path) -> dict[str, Any]:
        labels = np.asarray(y)
        if source == "csv":
            path = tmp_path / "table.csv"
            pd.DataFrame({"a": np.arange(len(labels), dtype=float), "label": labels}).to_csv(path, index=False)
            return {"model": {"factory": "toy_models:linear", "kwargs": {"in_features": 1, "classes": 2}},
                    "data": {"source": "csv", "path": str(path), "target": "label"}, "sections": {"performance": {}}}
        x = np.random.default_rng(0).random((len(labels), 1, 8, 8)).astype(np.float32)
        return {"model": LINEAR, "data": {"source": "npz", "path": str(npz(tmp_path, x, labels))},
                "sections": {"performance": {}}}
    return build


LABEL_CASES = {
    "labels -1/+1": (labels_case([-1, 1] * 20), ["labels (data.y_key 'y' in data.npz) must be class indices",
                                                  "20 negative (-1)", "-1/+1 to 0/1"]),
    "NaN labels": (labels_case([0.0, 1.0, np.nan, 2.0] * 10), ["10 NaN/infinite"]),
    "csv target -1/+1": (labels_case([-1, 1] * 20, "csv"), ["labels (data.target column 'label') must be class "
                                                           "indices", "20 negative (-1)"]),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_labels_that_are_not_class_indices_are_refused(case: str, tmp_path: Path) -> None:
    build, words = LABEL_CASES[case]
    with pytest.raises(DataError) as raised:
        run(tmp_path, build(tmp_path))
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))
    assert "np.str_" not in str(raised.value)
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


def test_fractional_labels_are_a_continuous_target_naming_model_task(tmp_path: Path) -> None:
    """Labels 0.5 with model.task auto: a continuous target, refused naming model.task (docs/tasks.md)."""
    with pytest.raises(ConfigError) as raised:
        run(tmp_path, labels_case([0.0, 1.0, 0.5, 2.0] * 10)(tmp_path))
    assert raised.value.key == "model.task"
    assert "10 values that are not whole numbers (0.5)" in str(raised.value) and "regression" in str(raised.value)
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


def test_whole_float_labels_and_scaled_data_run(tmp_path: Path) -> None:
    """The fixes of the cases above go through: float labels 0.0..9.0 are class indices, data.scale puts 0..16
    pixels into the bounds."""
    x, y = digits_arrays()
    config = {"model": LINEAR, "data": {"source": "npz", "path": str(npz(tmp_path, x, y.astype(np.float64))),
                                        "scale": 16}, "sections": ROBUSTNESS}
    results = run(tmp_path, config)
    assert results["manifest"]["status"] == "complete"
    assert results["manifest"]["data"]["class_names"] == [str(i) for i in range(10)]
    assert results["sections"]["robustness"]["status"] == "ok"
