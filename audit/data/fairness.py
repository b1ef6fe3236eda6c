"""The classic fairness datasets, read from the original files a user downloads (``data.source: adult |
compas | german``).

- UCI Adult: ``adult.data`` and ``adult.test`` (CSV without header; the test file starts with a
  ``|1x3 Cross validator`` line and its labels end with a dot). Sensitive: sex, race.
  Favourable: income >50K.
- ProPublica COMPAS: ``compas-scores-two-years.csv`` (ProPublica's compas-analysis repository),
  filtered the way ProPublica's analysis does. Sensitive: race, sex. Favourable: no recidivism.
- Statlog German credit: ``german.data`` (space-separated, attribute codes A11..A202).
  Sensitive: sex (from personal_status A91..A95) and age group (<25 / 25+). Favourable: good credit.

Each returns an ``AuditData`` (tabular): categorical columns one-hot encoded, numeric ones
standardized with statistics of the training rows, sensitive columns kept aside (unless
``sensitive_as_features``), only numeric features perturbable, ``positive_class`` set to the
favourable outcome. ``sensitive`` (``data.sensitive``) keeps only the named sensitive columns;
the features stay the same. See docs/fairness.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.data.base import AuditData, select_sensitive, split_indices, standardize
from audit.errors import DataError

ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income")
ADULT_NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
ADULT_SENSITIVE = ("sex", "race")

COMPAS_FILE = "compas-scores-two-years.csv"
COMPAS_NUMERIC = ("age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count")
COMPAS_CATEGORICAL = ("c_charge_degree",)
COMPAS_SENSITIVE = ("race", "sex")
COMPAS_NEEDED = ("days_b_screening_arrest", "is_recid", "c_charge_degree", "score_text", "two_year_recid",
                 *COMPAS_NUMERIC, *COMPAS_SENSITIVE)

GERMAN_COLUMNS = ("checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings",
                  "employment_since", "installment_rate", "personal_status", "other_debtors", "residence_since",
                  "property", "age", "other_installment_plans", "housing", "existing_credits", "job",
                  "people_liable", "telephone", "foreign_worker", "credit")
GERMAN_NUMERIC = ("duration", "credit_amount", "installment_rate", "residence_since", "age", "existing_credits",
                  "people_liable")
GERMAN_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}
GERMAN_AGE_THRESHOLD = 25
GERMAN_SENSITIVE_SOURCES = ("personal_status", "age")  # the columns the sensitive attributes come from


def _resolve(path: str | Path, filename: str, source: str, where: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / filename
    if not p.exists():
        raise DataError(f"{source}: no file at {p}. Download {filename} from {where} and set data.path to the file "
                        "or the folder holding it")
    return p


def _encode(frame: Any, numeric: list[str], categorical: list[str], train: np.ndarray,
            ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One-hot categoricals, standardize numerics on the training rows. Returns (x, names, perturbable)."""
    import pandas as pd

    values, _, _ = standardize(frame[numeric].to_numpy(dtype=np.float64), train)
    parts, names = [values], list(numeric)
    if categorical:
        dummies = pd.get_dummies(frame[categorical].astype(str), prefix_sep="=", dtype=np.float64)
        parts.append(dummies.to_numpy())
        names += [str(c) for c in dummies.columns]
    x = np.concatenate(parts, axis=1)
    return x, names, np.array([n in numeric for n in names])


def _audit_data(name: str, x: np.ndarray, y: np.ndarray, idx: np.ndarray, names: list[str], perturbable: np.ndarray,
                class_names: list[str], sensitive: dict[str, np.ndarray], positive_class: int) -> AuditData:
    return AuditData(
        name=name,
        x=x[idx],
        y=y[idx],
        class_names=class_names,
        modality="tabular",
        feature_names=names,
        sensitive={k: np.asarray(v).astype(str)[idx] for k, v in sensitive.items()},
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=perturbable,
        positive_class=positive_class,
    )


def _sensitive(dataset: str, provided: dict[str, np.ndarray], wanted: Sequence[str] | None) -> dict[str, np.ndarray]:
    return select_sensitive(dataset, provided, list(wanted) if wanted else None)


def _check_split(split: str) -> None:
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")


# --- UCI Adult ------------------------------------------------------------------------------------


def _read_adult(path: Path) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, header=None, names=list(ADULT_COLUMNS), skipinitialspace=True, na_values="?",
                            comment="|", skip_blank_lines=True)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"adult: cannot read {path}: {err}") from err
    if frame.shape[1] != len(ADULT_COLUMNS) or frame["income"].isna().all():
        raise DataError(f"adult: {path} does not have the {len(ADULT_COLUMNS)} comma-separated columns of adult.data")
    frame["income"] = frame["income"].astype(str).str.strip().str.rstrip(".")
    unknown = sorted(set(frame["income"]) - {"<=50K", ">50K"})
    if unknown:
        raise DataError(f"adult: {path} has income labels {unknown[:5]}; expected '<=50K' and '>50K'")
    return frame


def load_adult(path: str | Path, split: str = "test", *, sensitive_as_features: bool = False,
               sensitive: Sequence[str] | None = None) -> AuditData:
    """UCI Adult. ``path``: the folder holding adult.data and adult.test (or the adult.data file; then
    adult.test is looked for beside it). split: 'train' = adult.data, 'test' = adult.test, 'all' = both.
    Rows with missing values ('?') are dropped. Target: income >50K (the favourable outcome)."""
    import pandas as pd

    _check_split(split)
    where = "https://archive.ics.uci.edu/dataset/2/adult"
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    train_file = _resolve(p if not p.is_dir() else folder, "adult.data", "adult", where)
    test_file = _resolve(folder, "adult.test", "adult", where)
    train_frame, test_frame = _read_adult(train_file), _read_adult(test_file)
    frame = pd.concat([train_frame, test_frame], ignore_index=True)
    is_test = np.r_[np.zeros(len(train_frame), bool), np.ones(len(test_frame), bool)]
    complete = frame.notna().all(axis=1).to_numpy()
    frame, is_test = frame[complete].reset_index(drop=True), is_test[complete]
    y = (frame["income"] == ">50K").to_numpy().astype(np.int64)
    features = [c for c in ADULT_COLUMNS[:-1] if sensitive_as_features or c not in ADULT_SENSITIVE]
    numeric = [c for c in features if c in ADULT_NUMERIC]
    categorical = [c for c in features if c not in ADULT_NUMERIC]
    x, names, perturbable = _encode(frame, numeric, categorical, np.flatnonzero(~is_test))
    idx = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test), "all": np.arange(len(y))}[split]
    if len(idx) == 0:
        raise DataError(f"adult: no complete rows in the {split} split")
    return _audit_data(f"adult[{split}]", x, y, idx, names, perturbable, ["<=50K", ">50K"],
                       _sensitive("adult", {c: frame[c].to_numpy() for c in ADULT_SENSITIVE}, sensitive), 1)


# --- ProPublica COMPAS ----------------------------------------------------------------------------


def load_compas(path: str | Path, split: str = "test", *, sensitive_as_features: bool = False,
                sensitive: Sequence[str] | None = None) -> AuditData:
    """ProPublica COMPAS two-year recidivism. Rows filtered as in ProPublica's analysis: charge within
    30 days of screening, is_recid known, no ordinary traffic offences ('O'), a COMPAS score present.
    Target: two_year_recid (1 = reoffended); the favourable outcome is class 0, no recidivism.
    The split is the seeded stratified 75/25 split."""
    import pandas as pd

    _check_split(split)
    file = _resolve(path, COMPAS_FILE, "compas", "https://github.com/propublica/compas-analysis")
    try:
        frame = pd.read_csv(file)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"compas: cannot read {file}: {err}") from err
    missing = [c for c in COMPAS_NEEDED if c not in frame.columns]
    if missing:
        raise DataError(f"compas: {file} lacks columns {missing}; use ProPublica's compas-scores-two-years.csv")
    keep = (frame["days_b_screening_arrest"].between(-30, 30) & (frame["is_recid"] != -1)
            & (frame["c_charge_degree"] != "O") & (frame["score_text"].astype(str) != "N/A")
            & frame["score_text"].notna())
    frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"compas: no rows of {file} pass ProPublica's filters")
    y = frame["two_year_recid"].to_numpy().astype(np.int64)
    numeric = list(COMPAS_NUMERIC)
    categorical = list(COMPAS_CATEGORICAL) + (list(COMPAS_SENSITIVE) if sensitive_as_features else [])
    x, names, perturbable = _encode(frame, numeric, categorical, split_indices(y, "train"))
    return _audit_data(f"compas[{split}]", x, y, split_indices(y, split), names, perturbable,
                       ["no recidivism", "recidivism"],
                       _sensitive("compas", {c: frame[c].to_numpy() for c in COMPAS_SENSITIVE}, sensitive), 0)


# --- Statlog German credit ------------------------------------------------------------------------


def load_german(path: str | Path, split: str = "test", *, sensitive_as_features: bool = False,
                sensitive: Sequence[str] | None = None) -> AuditData:
    """Statlog German credit (german.data: 20 attributes + class 1 good / 2 bad, space-separated).
    Target: 1 = good credit (the favourable outcome). Sensitive: sex (personal_status A91/A93/A94
    male, A92/A95 female) and age_group (<25, 25+); personal_status and age are kept aside unless
    ``sensitive_as_features``."""
    import pandas as pd

    _check_split(split)
    file = _resolve(path, "german.data", "german",
                    "https://archive.ics.uci.edu/dataset/144/statlog+german+credit+data")
    try:
        frame = pd.read_csv(file, sep=r"\s+", header=None, names=list(GERMAN_COLUMNS), dtype=str)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"german: cannot read {file}: {err}") from err
    if frame.isna().any().any():
        raise DataError(f"german: {file} does not have {len(GERMAN_COLUMNS)} space-separated columns on every row")
    bad = sorted(set(frame["personal_status"]) - set(GERMAN_SEX))
    if bad:
        raise DataError(f"german: personal_status codes {bad[:5]} are not Statlog codes A91..A95")
    if not set(frame["credit"]) <= {"1", "2"}:
        raise DataError(f"german: the class column holds {sorted(set(frame['credit']))[:5]}; expected 1 and 2")
    for c in GERMAN_NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="raise")
    y = (frame["credit"] == "1").to_numpy().astype(np.int64)
    sex = frame["personal_status"].map(GERMAN_SEX).to_numpy()
    age_group = np.where(frame["age"].to_numpy() < GERMAN_AGE_THRESHOLD, f"<{GERMAN_AGE_THRESHOLD}",
                         f"{GERMAN_AGE_THRESHOLD}+")
    features = [c for c in GERMAN_COLUMNS[:-1] if sensitive_as_features or c not in GERMAN_SENSITIVE_SOURCES]
    numeric = [c for c in features if c in GERMAN_NUMERIC]
    categorical = [c for c in features if c not in GERMAN_NUMERIC]
    x, names, perturbable = _encode(frame, numeric, categorical, split_indices(y, "train"))
    return _audit_data(f"german[{split}]", x, y, split_indices(y, split), names, perturbable, ["bad", "good"],
                       _sensitive("german", {"sex": sex, "age_group": age_group}, sensitive), 1)


LOADERS = {"adult": load_adult, "compas": load_compas, "german": load_german}


def load_fairness_dataset(source: str, path: str | Path, split: str = "test", *, sensitive_as_features: bool = False,
                          sensitive: Sequence[str] | None = None) -> AuditData:
    """Dispatch for ``load_data`` (data.source: adult | compas | german)."""
    if source not in LOADERS:
        raise DataError(f"unknown fairness dataset '{source}'; choose one of {sorted(LOADERS)}")
    return LOADERS[source](path, split, sensitive_as_features=sensitive_as_features, sensitive=sensitive)
