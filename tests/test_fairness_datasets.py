"""Loaders for Adult, COMPAS and German credit, on small synthetic files in the original formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.data.fairness import (
    ADULT_COLUMNS,
    GERMAN_COLUMNS,
    load_adult,
    load_compas,
    load_fairness_dataset,
    load_german,
)
from audit.errors import DataError

WORKCLASS = ("Private", "Self-emp-not-inc", "State-gov", "?")
RACES = ("White", "Black", "Asian-Pac-Islander")


def _adult_line(rng: np.random.Generator, i: int, test: bool) -> str:
    sex = "Female" if i % 3 == 0 else "Male"
    income = ">50K" if i % 4 == 0 else "<=50K"
    fields = [str(rng.integers(17, 80)), WORKCLASS[i % 4], str(rng.integers(20000, 400000)), "Bachelors",
              str(rng.integers(1, 16)), "Never-married", "Sales", "Not-in-family", RACES[i % 3], sex,
              str(rng.choice([0, 0, 5000])), "0", str(rng.integers(10, 60)), "United-States",
              income + ("." if test else "")]
    return ", ".join(fields)


@pytest.fixture
def adult_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "adult.data").write_text("\n".join(_adult_line(rng, i, False) for i in range(40)) + "\n\n")
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n"
                                         + "\n".join(_adult_line(rng, i, True) for i in range(20)) + "\n")
    return tmp_path


def test_adult_parses_original_format(adult_dir: Path) -> None:
    train, test = load_adult(adult_dir, "train"), load_adult(adult_dir / "adult.data", "test")
    # every 4th row has workclass '?' (missing): dropped
    assert train.n_samples == 30 and test.n_samples == 15
    assert train.class_names == ["<=50K", ">50K"]
    assert set(train.sensitive) == {"sex", "race"}
    assert set(test.sensitive["sex"]) == {"Female", "Male"}
    assert train.y.sum() == 10  # rows i % 4 == 0 earn '>50K'; rows i % 4 == 3 ('?') were dropped
    names = train.feature_names or []
    assert not any(n.startswith(("sex=", "race=")) for n in names)
    assert "age" in names and "workclass=Private" in names and len(names) == test.x.shape[1]
    assert train.perturbable is not None and train.perturbable.sum() == 6
    assert abs(float(train.x[:, names.index("age")].mean())) < 1e-6  # standardized on adult.data
    both = load_adult(adult_dir, "all", sensitive_as_features=True)
    assert both.n_samples == 45 and "sex=Female" in (both.feature_names or [])


def test_adult_labels_with_dot_and_bad_file(adult_dir: Path, tmp_path: Path) -> None:
    text = (adult_dir / "adult.test").read_text().replace("<=50K.", ">50K.", 2)
    (adult_dir / "adult.test").write_text(text)
    assert load_adult(adult_dir, "test").y.sum() >= 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adult.data").write_text("1, 2, 3\n")
    (bad / "adult.test").write_text("1, 2, 3\n")
    with pytest.raises(DataError, match="adult"):
        load_adult(bad)
    with pytest.raises(DataError, match=r"Download adult\.data from https://archive\.ics\.uci\.edu"):
        load_adult(tmp_path / "missing")


def _compas_csv(path: Path, n: int = 60) -> Path:
    import pandas as pd

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "id": np.arange(n), "sex": np.where(np.arange(n) % 2 == 0, "Male", "Female"),
        "age": rng.integers(18, 70, n),
        "race": np.array(["African-American", "Caucasian", "Hispanic"])[np.arange(n) % 3],
        "juv_fel_count": rng.integers(0, 2, n), "decile_score": rng.integers(1, 11, n),
        "juv_misd_count": rng.integers(0, 2, n), "juv_other_count": rng.integers(0, 2, n),
        "priors_count": rng.integers(0, 10, n), "days_b_screening_arrest": np.where(np.arange(n) % 10 == 0, 45, -1),
        "c_charge_degree": np.where(np.arange(n) % 7 == 0, "O", np.where(np.arange(n) % 2 == 0, "F", "M")),
        "is_recid": np.where(np.arange(n) % 13 == 0, -1, 1), "score_text": "Low",
        "two_year_recid": np.arange(n) % 2,
    })
    frame.insert(10, "priors_count.1", frame["priors_count"])  # the real file repeats columns
    frame.to_csv(path / "compas-scores-two-years.csv", index=False)
    return path


def test_compas_filters_like_propublica(tmp_path: Path) -> None:
    folder = _compas_csv(tmp_path)
    everything = load_compas(folder, "all")
    idx = np.arange(60)
    kept = (idx % 10 != 0) & (idx % 7 != 0) & (idx % 13 != 0)
    assert everything.n_samples == kept.sum()
    assert set(everything.sensitive) == {"race", "sex"}
    assert "c_charge_degree=O" not in (everything.feature_names or [])
    assert not any(n.startswith(("race=", "sex=")) for n in everything.feature_names or [])
    test, train = load_compas(folder / "compas-scores-two-years.csv", "test"), load_compas(folder, "train")
    assert test.n_samples + train.n_samples == everything.n_samples
    assert load_compas(folder, "all", sensitive_as_features=True).x.shape[1] == everything.x.shape[1] + 5
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="lacks columns"):
        load_compas(tmp_path / "other.csv")


def _german_line(i: int) -> str:
    codes = ["A11", str(6 + i), "A32", "A43", str(1000 + 37 * i), "A61", "A73", str(1 + i % 4),
             ("A91", "A92", "A93", "A94", "A95")[i % 5], "A101", str(1 + i % 4), "A121", str(20 + i),
             "A143", "A152", str(1 + i % 2), "A173", "1", ("A191", "A192")[i % 2], "A201", str(1 + (i % 3 == 0))]
    assert len(codes) == len(GERMAN_COLUMNS)
    return " ".join(codes)


def test_german_statlog_coding(tmp_path: Path) -> None:
    (tmp_path / "german.data").write_text("\n".join(_german_line(i) for i in range(40)) + "\n")
    data = load_german(tmp_path, "all")
    assert data.n_samples == 40 and data.class_names == ["bad", "good"]
    assert data.y.tolist() == [0 if i % 3 == 0 else 1 for i in range(40)]
    sex = data.sensitive["sex"].tolist()
    assert sex[:5] == ["male", "female", "male", "male", "female"]
    assert data.sensitive["age_group"].tolist() == ["<25"] * 5 + ["25+"] * 35
    names = data.feature_names or []
    assert "age" not in names and not any(n.startswith("personal_status") for n in names)
    assert "duration" in names and "purpose=A43" in names
    with_sensitive = load_fairness_dataset("german", tmp_path / "german.data", "test", sensitive_as_features=True)
    assert "age" in (with_sensitive.feature_names or []) and with_sensitive.n_samples == 10
    (tmp_path / "german.data").write_text(_german_line(0).replace("A91", "A99") + "\n")
    with pytest.raises(DataError, match=r"A91\.\.A95"):
        load_german(tmp_path)


def test_dispatch_refuses_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="choose one of"):
        load_fairness_dataset("titanic", tmp_path)
    assert len(ADULT_COLUMNS) == 15


def test_adult_through_the_config_path(adult_dir: Path) -> None:
    from audit.config import DataConfig
    from audit.data import load_data
    from audit.errors import ConfigError

    data = load_data(DataConfig.model_validate({"source": "adult", "path": adult_dir, "split": "test",
                                                "sensitive": ["sex", "race"]}))
    assert list(data.sensitive) == ["sex", "race"] and data.modality == "tabular"
    with pytest.raises(ConfigError, match="no sensitive columns") as info:
        load_data(DataConfig.model_validate({"source": "adult", "path": adult_dir, "sensitive": ["religion"]}))
    assert info.value.key == "data.sensitive"


# --- data.sensitive and the favourable label -----------------------------------------------------------


def test_builtin_loaders_set_the_favourable_label(adult_dir: Path, tmp_path: Path) -> None:
    adult = load_adult(adult_dir, "test")
    assert adult.positive_class == 1 and adult.class_names[1] == ">50K"
    compas = load_compas(_compas_csv(tmp_path), "all")
    assert compas.positive_class == 0 and compas.class_names[0] == "no recidivism"
    (tmp_path / "german.data").write_text("\n".join(_german_line(i) for i in range(40)) + "\n")
    german = load_german(tmp_path, "all")
    assert german.positive_class == 1 and german.class_names[1] == "good"
    assert german.subset(np.arange(5)).positive_class == 1


@pytest.mark.parametrize(("source", "wanted"), [("adult", ["race"]), ("compas", ["sex"]), ("german", ["age_group"]),
                                                ("german", ["age_group", "sex"]), ("resume_names", ["ethnicity"])])
def test_data_sensitive_is_honoured(source: str, wanted: list[str], adult_dir: Path, tmp_path: Path) -> None:
    """data.sensitive keeps exactly the named columns, in that order; the model's features do not change."""
    from audit.config import DataConfig
    from audit.data import load_data

    if source == "compas":
        path: Path | None = _compas_csv(tmp_path)
    elif source == "german":
        (tmp_path / "german.data").write_text("\n".join(_german_line(i) for i in range(40)) + "\n")
        path = tmp_path
    else:
        path = adult_dir if source == "adult" else None
    default = load_data(DataConfig.model_validate({"source": source, "path": path}))
    chosen = load_data(DataConfig.model_validate({"source": source, "path": path, "sensitive": wanted}))
    assert list(chosen.sensitive) == wanted and len(default.sensitive) == 2
    for name in wanted:
        assert np.array_equal(chosen.sensitive[name], default.sensitive[name])
    assert chosen.feature_names == default.feature_names and np.array_equal(chosen.x, default.x)
    assert chosen.positive_class == default.positive_class is not None


def test_loaders_take_sensitive_directly(adult_dir: Path) -> None:
    from audit.errors import ConfigError

    assert list(load_adult(adult_dir, "test", sensitive=["sex"]).sensitive) == ["sex"]
    with pytest.raises(ConfigError, match=r"dataset 'adult' has no sensitive columns \['age'\]; it provides "
                                          r"\['race', 'sex'\]") as info:
        load_adult(adult_dir, "test", sensitive=["age"])
    assert info.value.key == "data.sensitive"


def test_german_age_groups_keep_both_metrics(tmp_path: Path) -> None:
    """'<25' and '25+' used to sanitize to the same key; each now has its own, equal to fairlearn's."""
    import torch
    from fairness_helpers import context, fairlearn_frame
    from plugin_helpers import validate_section
    from torch import nn

    from audit.fairness import FairnessSection

    (tmp_path / "german.data").write_text("\n".join(_german_line(i) for i in range(200)) + "\n")
    data = load_german(tmp_path, "all")
    torch.manual_seed(0)
    model = nn.Linear(data.x.shape[1], 2)
    ctx = context(model, data, tmp_path)
    result = FairnessSection(n_resamples=100, min_rate_count=3)(ctx)
    assert result.status == "ok", result.error
    frame = fairlearn_frame(data.y, ctx.clean_predictions(), data.sensitive["age_group"], 1)
    for group in ("<25", "25+"):
        for m in ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
            assert result.metrics[f"fairness.age_group.group={group}.{m}"] == pytest.approx(
                frame.by_group.loc[group, m], abs=1e-9)
    assert any("favourable outcome: 'good' (class 1), the default of german[all]" in n for n in result.notes)
    validate_section(result, ctx)


def test_data_sensitive_read_from_npz_and_torch_files(tmp_path: Path) -> None:
    """For array files, data.sensitive names per-row arrays stored beside x and y."""
    import torch

    from audit.config import DataConfig
    from audit.data import load_data

    rng = np.random.default_rng(0)
    x, y = rng.random((20, 1, 4, 4)).astype(np.float32), rng.integers(0, 2, 20)
    site = np.array(["north", "south"] * 10)
    np.savez(tmp_path / "images.npz", x=x, y=y, site=site, scanner=np.arange(20) % 3)
    data = load_data(DataConfig.model_validate({"source": "npz", "path": tmp_path / "images.npz",
                                                "sensitive": ["site", "scanner"]}))
    assert list(data.sensitive) == ["site", "scanner"]
    assert data.sensitive["site"].tolist() == site.tolist()
    assert data.sensitive["scanner"].tolist() == [str(i % 3) for i in range(20)]
    assert load_data(DataConfig.model_validate({"source": "npz", "path": tmp_path / "images.npz"})).sensitive == {}
    torch.save({"x": torch.as_tensor(x), "y": torch.as_tensor(y), "site": torch.as_tensor(np.arange(20) % 2)},
               tmp_path / "images.pt")
    from_torch = load_data(DataConfig.model_validate({"source": "torch", "path": tmp_path / "images.pt",
                                                      "sensitive": ["site"]}))
    assert from_torch.sensitive["site"].tolist() == [str(i % 2) for i in range(20)]
