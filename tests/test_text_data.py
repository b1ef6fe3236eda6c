"""Text data (audit.data.text): a text column from csv, parquet, jsonl and a datasets directory, token ids from NPZ,
tokenized by the model's tokenizer; errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from text_helpers import MAX_LENGTH, text_problem

from audit.config import DataConfig, ModelConfig
from audit.data import load_data
from audit.errors import ConfigError, DataError
from audit.model.text import TextTokenizer
from audit.model.text_load import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return text_problem().adapter.tokenizer


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = text_problem().data
    assert data.texts is not None
    return pd.DataFrame({"review": data.texts, "score": [data.class_names[i] for i in data.y],
                         "mentions_coffee": ["yes" if "coffee" in t.lower() else "no" for t in data.texts]})


def _config(source: str, path: Path, **extra: Any) -> DataConfig:
    return DataConfig(source=source, path=path, **{"text": "review", "target": "score", **extra})  # type: ignore


def _write(frame: pd.DataFrame, folder: Path, source: str) -> Path:
    if source == "csv":
        frame.to_csv(path := folder / "reviews.csv", index=False)
    elif source == "parquet":
        frame.to_parquet(path := folder / "reviews.parquet")
    elif source == "jsonl":
        frame.to_json(path := folder / "reviews.jsonl", orient="records", lines=True)
    else:
        import datasets

        datasets.DatasetDict({"test": datasets.Dataset.from_pandas(frame),
                              "train": datasets.Dataset.from_pandas(frame.iloc[:10])}).save_to_disk(
            path := folder / "reviews-ds")
    return path


@pytest.mark.parametrize("source", ["csv", "parquet", "jsonl", "hf_dataset"])
def test_every_text_source_gives_the_same_token_ids(source: str, frame: pd.DataFrame, tokenizer: TextTokenizer,
                                                     tmp_path: Path) -> None:
    data = load_data(_config(source, _write(frame, tmp_path, source), sensitive=["mentions_coffee"]),
                     tokenizer=tokenizer)
    reference = text_problem().data
    assert data.modality == "text" and data.input_kind == "tokens"
    assert data.texts == reference.texts
    np.testing.assert_array_equal(data.x, tokenizer.encode(frame["review"].tolist()).astype(np.float32))
    np.testing.assert_array_equal(data.x, reference.x)
    np.testing.assert_array_equal(data.y, reference.y)
    assert data.class_names == reference.class_names and data.x.shape == (len(frame), MAX_LENGTH)
    np.testing.assert_array_equal(data.sensitive["mentions_coffee"], frame["mentions_coffee"].to_numpy())
    assert data.describe()["input_kind"] == "tokens"


def test_hf_dataset_split_and_limit(frame: pd.DataFrame, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    path = _write(frame, tmp_path, "hf_dataset")
    assert load_data(_config("hf_dataset", path, split="train"), tokenizer=tokenizer).n_samples == 10
    assert load_data(_config("hf_dataset", path, split="all"), tokenizer=tokenizer).n_samples == len(frame) + 10
    limited = load_data(_config("hf_dataset", path, limit=50), tokenizer=tokenizer, seed=3)
    assert limited.n_samples == 50 and limited.texts is not None
    # the subset keeps the class shares and each row's text with its ids
    shares = np.bincount(frame["score"].map({"great": 0, "other": 1}), minlength=2) / len(frame)
    np.testing.assert_allclose(np.bincount(limited.y, minlength=2) / 50, shares, atol=1 / 50)
    np.testing.assert_array_equal(limited.x, tokenizer.encode(limited.texts).astype(np.float32))


def test_token_ids_from_npz(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    reference = text_problem().data
    ids = reference.x.astype(np.int64)[:, :40]  # shorter rows are padded to model.max_length
    np.savez(path := tmp_path / "ids.npz", x=ids, y=reference.y)
    data = load_data(DataConfig(source="npz", path=path, class_names=reference.class_names), tokenizer=tokenizer)
    assert data.input_kind == "tokens" and data.x.shape == (reference.n_samples, MAX_LENGTH)
    np.testing.assert_array_equal(data.x[:, :40], ids)
    assert (data.x[:, 40:] == tokenizer.pad_id).all()
    assert data.texts is not None and data.texts[0].split()[:3] == tokenizer.tokens(ids[:1])[0][:3]
    np.savez(bad := tmp_path / "bad.npz", x=np.where(ids == 5, tokenizer.vocab_size + 7, ids), y=reference.y)
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(source="npz", path=bad), tokenizer=tokenizer)
    assert err.value.key == "data.path" and "out of range" in str(err.value)
    np.savez(floats := tmp_path / "floats.npz", x=ids + 0.5, y=reference.y)
    with pytest.raises(DataError, match="not whole numbers"):
        load_data(DataConfig(source="npz", path=floats), tokenizer=tokenizer)


def _error(frame: pd.DataFrame, tmp_path: Path, tokenizer: TextTokenizer | None, **extra: Any) -> Exception:
    path = _write(frame, tmp_path, "csv")
    with pytest.raises((ConfigError, DataError)) as err:
        load_data(_config("csv", path, **extra), tokenizer=tokenizer)
    return err.value


def test_bad_text_columns_name_the_key(frame: pd.DataFrame, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    empty = frame.copy()
    empty.loc[3, "review"] = "   "
    err = _error(empty, tmp_path, tokenizer)
    assert isinstance(err, DataError) and "data.text" in str(err) and "empty" in str(err) and "[3]" in str(err)
    missing = frame.copy()
    missing.loc[7, "review"] = None
    err = _error(missing, tmp_path, tokenizer)
    assert isinstance(err, DataError) and "no text" in str(err) and "[7]" in str(err)
    numbers = frame.assign(review=np.arange(len(frame)))
    err = _error(numbers, tmp_path, tokenizer)
    assert isinstance(err, ConfigError) and err.key == "data.text" and "not text" in str(err)
    err = _error(frame, tmp_path, tokenizer, text="body")
    assert isinstance(err, ConfigError) and err.key == "data.text" and "body" in str(err)
    err = _error(frame, tmp_path, tokenizer, sensitive=["gender"])
    assert isinstance(err, ConfigError) and err.key == "data.sensitive"
    err = _error(frame, tmp_path, tokenizer, categorical=["mentions_coffee"])
    assert isinstance(err, ConfigError) and err.key == "data.categorical"
    err = _error(frame, tmp_path, None)  # text data without a text model's tokenizer
    assert isinstance(err, ConfigError) and err.key == "model.tokenizer"
    err = _error(frame, tmp_path, tokenizer, text=None)  # a text model on a table without data.text
    assert isinstance(err, ConfigError) and err.key == "data.text"
    with pytest.raises(ConfigError) as cerr:
        load_data(DataConfig(source="digits"), tokenizer=tokenizer)
    assert cerr.value.key == "data.source"


def test_tokenizer_from_the_model_config(tmp_path: Path) -> None:
    problem = text_problem()
    tokenizer = load_tokenizer(ModelConfig(factory="audit.zoo:text_classifier", tokenizer=problem.tokenizer_file,
                                           max_length=16))
    assert tokenizer is not None and tokenizer.max_length == 16
    assert tokenizer.vocab_size == problem.adapter.tokenizer.vocab_size
    assert load_tokenizer(ModelConfig(factory="audit.zoo:digits_cnn")) is None
    (script := tmp_path / "model.pt").write_bytes(b"PK")
    with pytest.raises(ConfigError) as err:
        load_tokenizer(ModelConfig(torchscript=script, tokenizer=problem.tokenizer_file))
    assert err.value.key == "model.tokenizer" and "TorchScript" in str(err.value)
    (broken := tmp_path / "tok.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        load_tokenizer(ModelConfig(factory="audit.zoo:text_classifier", tokenizer=broken))
    assert err.value.key == "model.tokenizer"
