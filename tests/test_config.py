"""Config validation: a wrong config stops before any work with one message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audit.config import load_config, parse_config
from audit.errors import ConfigError

BASE = {"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits"}, "sections": {"performance": {}}}


def _with(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = data
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def test_valid_config_fills_defaults() -> None:
    config = parse_config(BASE)
    assert config.device == "auto" and config.batch_size == 256 and config.seed == 0
    assert config.sections["performance"].plugin == "performance"
    assert config.sections["performance"].params == {}


def test_section_shorthand_params_and_list_form() -> None:
    config = parse_config(_with(sections={"imbalance": {"n_bins": 5}, "perf2": {"plugin": "performance"}}))
    assert config.sections["imbalance"].params == {"n_bins": 5}
    assert config.sections["perf2"].plugin == "performance"
    assert list(parse_config(_with(sections=["performance", "imbalance"])).sections) == ["performance", "imbalance"]


@pytest.mark.parametrize(
    ("config", "key", "text"),
    [
        (_with(modle={"factory": "x:y"}), "modle", "unknown key"),
        (_with(model__factroy="x:y"), "model.factroy", "unknown key"),
        (_with(batch_size="many"), "batch_size", "integer"),
        (_with(batch_size=0), "batch_size", "greater than 0"),
        (_with(device="gpu"), "device", "auto, cpu, cuda"),
        (_with(data__source="imagenet"), "data.source", "digits"),
        (_with(model__torchscript="m.pt"), "model", "exactly one of"),
        (_with(data__source="csv"), "data", "needs 'path'"),
        (_with(model__input_bounds=[1, 0]), "model", "low < high"),
        ({"data": {"source": "digits"}}, "model", "missing"),
    ],
)
def test_config_errors_name_the_key(config: dict, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert info.value.key == key
    assert text in info.value.message


def test_missing_file_is_reported_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(_with(model__weights="nowhere.pt")))
    with pytest.raises(ConfigError, match="file not found") as info:
        load_config(path)
    assert info.value.key == "model.weights"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(_with(model__weights="w.pt")))
    assert load_config(path).model.weights == (tmp_path / "w.pt").resolve()


def test_missing_config_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
