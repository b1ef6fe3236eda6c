"""Data loaders: built-in real datasets and user files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from system import FASHION_MNIST, fashion_mnist_missing, need

from audit.config import DataConfig
from audit.data import AuditData, load_data, read_idx, stratified_subset
from audit.errors import ConfigError, DataError


def test_digits_split_is_disjoint_and_stratified() -> None:
    test = load_data(DataConfig(source="digits", split="test"))
    train = load_data(DataConfig(source="digits", split="train"))
    assert test.n_samples + train.n_samples == 1797
    assert test.input_shape == (1, 8, 8) and test.modality == "image"
    assert test.x.min() >= 0.0 and test.x.max() <= 1.0
    assert set(map(tuple, test.x.reshape(len(test.x), -1)[:50])).isdisjoint(
        set(map(tuple, train.x.reshape(len(train.x), -1))))


def test_resume_names_encoding_and_sensitive_columns() -> None:
    data = load_data(DataConfig(source="resume_names", split="all"))
    assert data.n_samples == 4870
    assert abs(data.y.mean() - 392 / 4870) < 1e-12  # 8% callbacks
    assert set(data.sensitive) == {"gender", "ethnicity"}
    assert set(np.unique(data.sensitive["gender"])) == {"female", "male"}
    names = data.feature_names or []
    assert not any(n.startswith(("gender", "ethnicity", "name")) for n in names)  # kept aside
    onehot = data.x[:, [i for i, n in enumerate(names) if n.startswith("city=")]]
    assert np.allclose(onehot.sum(axis=1), 1.0)
    assert data.perturbable is not None and data.perturbable.sum() == 2  # jobs, experience


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=5, max_size=200), st.integers(1, 200), st.integers(0, 5))
def test_stratified_subset_properties(labels: list[int], limit: int, seed: int) -> None:
    y = np.array(labels)
    idx = stratified_subset(y, limit, seed)
    assert len(idx) == min(limit, len(y)) and len(set(idx.tolist())) == len(idx)
    if limit >= len(np.unique(y)):
        assert set(y[idx]) == set(y)  # every class kept
    assert np.array_equal(idx, stratified_subset(y, limit, seed))  # seeded


def test_limit_keeps_class_proportions() -> None:
    data = load_data(DataConfig(source="resume_names", limit=400))
    assert data.n_samples == 400
    assert abs(data.y.mean() - 0.08) < 0.01


def test_csv_loader_with_categoricals_and_sensitive(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [30, 40, 50, 60], "city": ["a", "b", "a", "c"], "sex": ["f", "m", "f", "m"],
                          "label": ["yes", "no", "yes", "no"]})
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    data = load_data(DataConfig(source="csv", path=path, target="label", categorical=["city"], sensitive=["sex"]))
    assert data.feature_names == ["age", "city=a", "city=b", "city=c"]
    assert data.class_names == ["no", "yes"] and data.y.tolist() == [1, 0, 1, 0]
    assert data.sensitive["sex"].tolist() == ["f", "m", "f", "m"]
    assert data.perturbable is not None and data.perturbable.tolist() == [True, False, False, False]
    with pytest.raises(ConfigError, match="not numeric"):
        load_data(DataConfig(source="csv", path=path, target="label"))
    with pytest.raises(ConfigError, match="not in"):
        load_data(DataConfig(source="csv", path=path, target="nope"))


def test_idx_reader_round_trip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 2, 3, 4)
    path = tmp_path / "img.idx.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.tobytes())
    assert np.array_equal(read_idx(path), images)
    labels = tmp_path / "lab.idx"
    labels.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 2) + bytes([1, 0]))
    data = load_data(DataConfig(source="idx", path=path, labels_path=labels))
    assert data.input_shape == (1, 3, 4) and data.x.max() <= 1.0 and data.y.tolist() == [1, 0]
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad.idx")


def test_fashion_mnist_from_debian_package_if_installed() -> None:
    need(fashion_mnist_missing())
    root = FASHION_MNIST
    files = sorted(root.glob("t10k-images*"))
    labels = sorted(root.glob("t10k-labels*"))[0]
    data = load_data(DataConfig(source="idx", path=files[0], labels_path=labels, limit=100))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.n_samples == 100


def test_npz_and_nan_rejected(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(10) % 2)
    data = load_data(DataConfig(source="npz", path=tmp_path / "a.npz", input_shape=[3]))
    assert data.n_samples == 10 and data.modality == "tabular"
    with pytest.raises(ConfigError, match="holds 5 values"):
        load_data(DataConfig(source="npz", path=tmp_path / "a.npz", input_shape=[5]))
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        AuditData(name="n", x=x, y=np.zeros(10, int), class_names=["a"], modality="tabular")
