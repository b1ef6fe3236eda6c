"""Bad-input corpus, fairness cases: each bad input gets its exact outcome, a named error whose
message says what to change (config key included) or a correct finding / note."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fairness_helpers import SignalModel, context, planted, signal_data

from audit.config import DataConfig
from audit.context import AdversarialOutcome, AttributionSet
from audit.data import AuditData, load_data
from audit.errors import ConfigError, DataError
from audit.fairness import NO_SENSITIVE, FairnessSection
from audit.fairness.params import LABEL_TYPE
from audit.results import SectionResult


def _run(data: AuditData, tmp_path: Path, **params: Any) -> SectionResult:
    return FairnessSection(**params)(context(SignalModel(), data, tmp_path))


def _error(result: SectionResult, kind: type[Exception], *parts: str) -> None:
    assert result.status == "error" and result.error is not None, result.status
    assert result.error["type"] == kind.__name__
    for part in parts:
        assert part in result.error["message"], (part, result.error["message"])


def _param_error(key: str, *parts: str, **params: Any) -> None:
    with pytest.raises(ConfigError) as info:
        FairnessSection(**params)
    assert info.value.key == key
    for part in parts:
        assert part in info.value.message, (part, info.value.message)


def _two_groups(n: int = 400, **sensitive: np.ndarray) -> AuditData:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    return planted(y, pred, sensitive or {"g": np.where(np.arange(n) % 2 == 0, "a", "b")})


# --- the cases --------------------------------------------------------------------------------------


def csv_missing_sensitive_column(tmp_path: Path) -> None:
    file = tmp_path / "people.csv"
    file.write_text("x,label\n1,0\n2,1\n3,0\n")
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig.model_validate({"source": "csv", "path": file, "target": "label",
                                             "sensitive": ["gender"]}))
    assert info.value.key == "data" and "columns ['gender'] not in" in info.value.message


def builtin_dataset_unknown_sensitive_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig.model_validate({"source": "resume_names", "sensitive": ["religion"]}))
    assert info.value.key == "data.sensitive"
    assert info.value.message == ("dataset 'resume_names' has no sensitive columns ['religion']; it provides "
                                  "['ethnicity', 'gender']")


def dataset_without_sensitive_columns(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig.model_validate({"source": "digits", "sensitive": ["sex"]}))
    assert info.value.key == "data.sensitive" and "it provides none" in info.value.message


def npz_without_the_sensitive_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "images.npz", x=np.zeros((4, 1, 2, 2)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig.model_validate({"source": "npz", "path": tmp_path / "images.npz", "sensitive": ["site"]}))
    assert info.value.key == "data.sensitive"
    assert info.value.message.startswith("['site'] not in ") and "which holds ['x', 'y']" in info.value.message


def idx_files_with_sensitive(tmp_path: Path) -> None:
    for name, header, body in (("img.idx", b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3, bytes(8)),
                               ("lab.idx", b"\x00\x00\x08\x01" + (2).to_bytes(4, "big"), bytes([0, 1]))):
        (tmp_path / name).write_bytes(header + body)
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig.model_validate({"source": "idx", "path": tmp_path / "img.idx",
                                             "labels_path": tmp_path / "lab.idx", "sensitive": ["site"]}))
    assert info.value.key == "data.sensitive" and "which holds only x and y" in info.value.message


def no_sensitive_columns_skips(tmp_path: Path) -> None:
    data = _two_groups()
    data.sensitive = {}
    result = _run(data, tmp_path)
    assert result.status == "skipped" and result.notes == [NO_SENSITIVE]


def sensitive_column_of_wrong_length(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="sensitive column 'g' has 5 rows, expected 400"):
        _two_groups(g=np.array(["a", "b", "a", "b", "a"]))


def sensitive_attribute_with_one_group_only(tmp_path: Path) -> None:
    result = _run(_two_groups(sex=np.array(["Male"] * 400)), tmp_path)
    _error(result, DataError, "every sensitive column audited holds one group only in the 400 rows",
           "'sex' (all 'Male')", "data.sensitive, data.split and data.limit")


def one_of_two_attributes_with_one_group(tmp_path: Path) -> None:
    data = _two_groups(sex=np.array(["Male"] * 400), site=np.where(np.arange(400) < 200, "n", "s"))
    result = _run(data, tmp_path, n_resamples=0)
    assert result.status == "ok", result.error
    single = [f for f in result.findings if f.code == "fairness.single_group"]
    assert len(single) == 1 and single[0].severity == "low"
    assert single[0].message.startswith("sex: every one of the 400 rows is in group 'Male'")
    assert "fairness.site.demographic_parity_difference" in result.metrics
    assert not [k for k in result.metrics if k.startswith("fairness.sex.")]


def positive_label_not_among_the_classes(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, positive_label="approved")
    _error(result, ConfigError, "config error at 'sections.fairness.positive_label'",
           "'approved' is not a class of the data; its classes are ['no', 'yes']")


def positive_label_index_out_of_range(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, positive_label=2)
    _error(result, ConfigError, "config error at 'sections.fairness.positive_label'",
           "2 is not a class index of the data; its classes are ['no', 'yes'] (indices 0..1)")


def positive_label_negative_index(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, positive_label=-1)
    _error(result, ConfigError, "sections.fairness.positive_label", "-1 is not a class index")


def positive_label_yaml_boolean(tmp_path: Path) -> None:
    _param_error("sections.fairness.positive_label", LABEL_TYPE.format(kind="a bool (True)"), positive_label=True)


def positive_label_a_list(tmp_path: Path) -> None:
    _param_error("sections.fairness.positive_label", LABEL_TYPE.format(kind="a list (['yes'])"),
                 positive_label=["yes"])


def features_not_sensitive(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, features=["age"])
    _error(result, ConfigError, "config error at 'sections.fairness.features'",
           "['age'] are not sensitive columns of the data; it has ['g']")


def features_empty(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, features=[])
    _error(result, ConfigError, "sections.fairness.features", "is empty; name at least one sensitive column")


def negative_resamples(tmp_path: Path) -> None:
    _param_error("sections.fairness.n_resamples", "greater than or equal to 0", n_resamples=-1)


def confidence_of_one(tmp_path: Path) -> None:
    _param_error("sections.fairness.confidence", "less than 1", confidence=1.0)


def min_rate_count_zero(tmp_path: Path) -> None:
    _param_error("sections.fairness.min_rate_count", "greater than or equal to 1", min_rate_count=0)


def misspelt_parameter(tmp_path: Path) -> None:
    _param_error("sections.fairness.intersection", "unknown parameter; remove it or check its spelling",
                 intersection=True)


def intersections_with_one_column(tmp_path: Path) -> None:
    result = _run(_two_groups(), tmp_path, intersections=True, n_resamples=0)
    assert "intersections asked for but only one sensitive column is audited" in result.notes


def group_names_colliding_after_sanitizing(tmp_path: Path) -> None:
    data = _two_groups(age=np.where(np.arange(400) % 2 == 0, "<25", "25+"),
                       name=np.array(["a b", "a.b", "a_b", "a=b"])[np.arange(400) % 4])
    result = _run(data, tmp_path, n_resamples=0)
    for key in ("group=<25", "group=25+"):
        assert result.metrics[f"fairness.age.{key}.selection_rate"] is not None
    keys = [row[1] for row in next(t for t in result.tables if t.name == "groups_name").rows]
    assert len(set(keys)) == 4 and "a_b" in keys


def equalized_odds_from_groups_of_5_and_3_rows(tmp_path: Path) -> None:
    y = np.array([1, 1, 1, 0, 0, 1, 1, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    result = _run(planted(y, pred, {"g": np.array(["t1"] * 5 + ["t2"] * 3)}), tmp_path, n_resamples=100)
    eo = next(f for f in result.findings if f.code == "fairness.equalized_odds_difference")
    assert eo.value == 1.0 and eo.severity == "low"
    assert "'t2' has 2 positives for the true positive rate" in eo.message
    assert "'t2' has 1 negative for the false positive rate" in eo.message


def zero_width_interval(tmp_path: Path) -> None:
    y = np.array([1, 1, 1, 0, 0, 1, 1, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    result = _run(planted(y, pred, {"g": np.array(["t1"] * 5 + ["t2"] * 3)}), tmp_path, n_resamples=100,
                  min_rate_count=1)
    acc = next(f for f in result.findings if f.code == "fairness.accuracy_difference")
    assert acc.severity == "medium" and "CI of zero width at 1.000" in acc.message
    assert "whole interval" not in acc.message


def labels_of_one_class_only(tmp_path: Path) -> None:
    """No row has the favourable label: every true-positive rate is undefined, never 0."""
    data = _two_groups()
    data.y[:] = 0
    result = _run(data, tmp_path, n_resamples=0)
    assert result.metrics["fairness.g.group=a.true_positive_rate"] is None
    assert result.metrics["fairness.g.equalized_odds_difference"] is None
    assert any("true positive rate undefined (null) for ['a', 'b']" in n for n in result.notes)
    assert not [f for f in result.findings if f.code == "fairness.equalized_odds_difference"]


def adversarial_outcome_of_other_length(tmp_path: Path) -> None:
    data = _two_groups()
    ctx = context(SignalModel(), data, tmp_path)
    half = np.ones(100, bool)
    ctx.adversarial = {"linf:0.1": AdversarialOutcome("linf", 0.1, "test", data.x[:100], half, half)}
    result = FairnessSection(n_resamples=0)(ctx)
    assert result.status == "ok"
    assert "robustness disparity for linf:0.1 skipped: the outcome covers 100 rows but the data has 400" in result.notes


def attributions_with_rows_outside_the_data(tmp_path: Path) -> None:
    data = signal_data(100, 0)
    ctx = context(SignalModel(), data, tmp_path)
    index = np.array([0, 5, 500])
    ctx.attributions = {"ig": AttributionSet("ig", index, np.zeros(3, int), np.ones((3, 3)))}
    result = FairnessSection(n_resamples=0, features=["group"])(ctx)
    assert "explanation disparity for 'ig' skipped: its row index does not fit the 100 rows of the data" in result.notes


CASES: dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    csv_missing_sensitive_column, builtin_dataset_unknown_sensitive_column, dataset_without_sensitive_columns,
    npz_without_the_sensitive_array, idx_files_with_sensitive, no_sensitive_columns_skips,
    sensitive_column_of_wrong_length, sensitive_attribute_with_one_group_only,
    one_of_two_attributes_with_one_group, positive_label_not_among_the_classes, positive_label_index_out_of_range,
    positive_label_negative_index, positive_label_yaml_boolean, positive_label_a_list, features_not_sensitive,
    features_empty, negative_resamples, confidence_of_one, min_rate_count_zero, misspelt_parameter,
    intersections_with_one_column, group_names_colliding_after_sanitizing, equalized_odds_from_groups_of_5_and_3_rows,
    zero_width_interval, labels_of_one_class_only, adversarial_outcome_of_other_length,
    attributions_with_rows_outside_the_data,
)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fairness_bad_input(case: str, tmp_path: Path) -> None:
    CASES[case](tmp_path)
