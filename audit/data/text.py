"""Text data: a text column and a label column from CSV, Parquet, JSON Lines or a Hugging Face ``datasets``
directory (``save_to_disk``), tokenized by the model's tokenizer; and token ids already stored in an NPZ/torch
file, read with the tokenizer that made them.

``AuditData`` of text holds the token ids in ``x`` (float32, (N, max_length), padded with the tokenizer's pad id)
and the raw strings in ``texts``; sensitive columns are kept as for tables (``data.sensitive``). The tokenizer
(``audit.model.text.TextTokenizer``) comes from the model config: the runner loads it before the data.

pandas is imported when a table is read; ``datasets`` only for ``hf_dataset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.config import DataConfig
from audit.data.base import AuditData
from audit.data.labels import encode_labels
from audit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from audit.model.text import TextTokenizer

TEXT_SOURCES = ("csv", "parquet", "jsonl", "hf_dataset")
ARRAY_SOURCES = ("npz", "torch")  # token ids stored as arrays


def is_text_config(config: DataConfig) -> bool:
    """The data block describes text: a text column, or a source that only holds text."""
    return config.text is not None or config.source in ("jsonl", "hf_dataset")


def load_text_data(config: DataConfig, tokenizer: TextTokenizer | None) -> AuditData | None:
    """The text table a data block describes, tokenized; None when it describes no text table (token ids of an
    array file are read by its loader, then ``as_token_data``). Errors name the key that pairs text and model."""
    if is_text_config(config) and tokenizer is None:
        raise ConfigError("model.tokenizer", "text data needs the model's tokenizer: set model.huggingface to the "
                          "model's directory, or model.tokenizer with model.factory")
    if config.text is not None and config.source not in TEXT_SOURCES:
        raise ConfigError("data.text", f"applies to {', '.join(TEXT_SOURCES)}; data source '{config.source}' holds "
                          "no text column")
    if tokenizer is not None and config.source not in (*TEXT_SOURCES, *ARRAY_SOURCES):
        raise ConfigError("data.source", f"'{config.source}' holds no text; a text model reads "
                          f"{', '.join(TEXT_SOURCES)} with data.text, or token ids from {', '.join(ARRAY_SOURCES)}")
    if tokenizer is not None and config.source in ("csv", "parquet") and config.text is None:
        raise ConfigError("data.text", "a text model (model.tokenizer / model.huggingface) reads a text column: "
                          "name it with data.text")
    if not is_text_config(config):
        return None
    tabular = [k for k in ("features", "categorical", "standardize", "sensitive_as_features") if getattr(config, k)]
    if tabular:
        raise ConfigError(f"data.{tabular[0]}", "applies to tabular features; text data feeds the model the "
                          "tokenized data.text column only: remove it")
    assert tokenizer is not None
    return load_text_table(config, tokenizer)


def read_frame(config: DataConfig) -> Any:
    """The rows of a csv/parquet/jsonl file or a ``save_to_disk`` directory, as a pandas DataFrame."""
    import pandas as pd

    assert config.path is not None  # DataConfig requires it
    path = Path(config.path)
    if config.source == "hf_dataset":
        return _read_hf_dataset(path, config.split)
    try:
        if config.source == "csv":
            return pd.read_csv(path)
        if config.source == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except Exception as err:  # pandas raises many types for a bad file
        raise DataError(f"cannot read {config.source} file {path}: {type(err).__name__}: {err}") from err


def _read_hf_dataset(path: Path, split: str) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ConfigError("data.source", "hf_dataset needs the datasets package: pip install \"nnaudit[text]\"") \
            from err
    if not path.is_dir():
        raise ConfigError("data.path", f"{path} is not a directory; hf_dataset reads a folder written by "
                          "Dataset.save_to_disk or DatasetDict.save_to_disk")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # FileNotFoundError, ValueError... for a folder save_to_disk did not write
        raise DataError(f"cannot read a datasets directory at {path} (written by save_to_disk?): "
                        f"{type(err).__name__}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split == "all":
            loaded = datasets.concatenate_datasets([loaded[s] for s in splits])
        elif split in loaded:
            loaded = loaded[split]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            raise ConfigError("data.split", f"{path} holds splits {splits} and none is '{split}'; set data.split to "
                              "test, train or all")
    return loaded.to_pandas()


def text_column(frame: Any, column: str, source: str) -> list[str]:
    """The texts of ``column``: every row a non-empty string, or an error naming ``data.text``."""
    import pandas as pd

    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ConfigError("data.text", f"column '{column}' of {source} holds {values.dtype} values, not text; name "
                          "the column that holds the texts")
    missing = values.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise DataError(f"data.text column '{column}' of {source}: {int(missing.sum())} rows have no text (rows "
                        f"{rows}); drop or fill them before the audit")
    not_str = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if not_str:
        raise ConfigError("data.text", f"column '{column}' of {source}: {len(not_str)} values are not strings (rows "
                          f"{not_str[:5]}, e.g. {type(values.iloc[not_str[0]]).__name__}); name the text column")
    texts = [str(v) for v in values]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"data.text column '{column}' of {source}: {len(empty)} texts are empty (rows {empty[:5]}); "
                        "drop them before the audit")
    return texts


def load_text_table(config: DataConfig, tokenizer: TextTokenizer) -> AuditData:
    """Text, label and sensitive columns of a table (csv, parquet, jsonl, hf_dataset), tokenized."""
    assert config.path is not None and config.target is not None  # checked by DataConfig
    if config.text is None:
        raise ConfigError("data.text", f"name the text column of the {config.source} data (data.text: review)")
    if not isinstance(config.target, str):
        raise ConfigError("data.target", "a list of target columns (multi-label) is not read for text data yet; "
                          "name one column")
    frame = read_frame(config)
    source = Path(config.path).name
    wanted = [config.text, config.target, *config.sensitive]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        key = "data.text" if config.text in missing else "data.target" if config.target in missing \
            else "data.sensitive"
        raise ConfigError(key, f"columns {missing} not in {source}; it has {[str(c) for c in frame.columns][:30]}")
    if len(frame) == 0:
        raise DataError(f"{source} holds no rows")
    texts = text_column(frame, config.text, source)
    y, class_names = encode_labels(frame[config.target].to_numpy(), config.class_names,
                                   f"data.target column '{config.target}'")
    return AuditData(name=source, x=tokenizer.encode(texts).astype(np.float32), y=y, class_names=class_names,
                     modality="text", sensitive={c: frame[c].astype(str).to_numpy() for c in config.sensitive},
                     texts=texts)


def as_token_data(data: AuditData, tokenizer: TextTokenizer, key: str = "data.path") -> AuditData:
    """Token ids read from an NPZ/torch/IDX file (``data.x``) as text data: whole numbers within the tokenizer's
    vocabulary, padded or truncated to ``model.max_length``, with the texts the tokenizer decodes them to."""
    ids = data.x.reshape(data.n_samples, -1)
    if not np.array_equal(ids, np.round(ids)):
        raise DataError(f"{data.name}: the inputs are not whole numbers, so not token ids; a text model "
                        f"(model.tokenizer / model.huggingface) takes token ids or a text column (data.text)")
    check_token_range(ids, tokenizer.vocab_size, f"the tokenizer's vocabulary ({tokenizer.source})", key)
    width = tokenizer.max_length
    fixed = np.full((len(ids), width), tokenizer.pad_id, dtype=np.float32)
    fixed[:, : min(width, ids.shape[1])] = ids[:, :width]
    data.x = fixed
    data.texts = decode(tokenizer, fixed)
    data.modality = "text"
    data.feature_names = None
    data.lower = data.upper = data.perturbable = None
    return data


def check_token_range(ids: np.ndarray, size: int, what: str, key: str) -> None:
    """Every id indexes a row of a vocabulary of ``size`` tokens, or a ConfigError naming ``key``."""
    low, high = float(ids.min()), float(ids.max())
    if low < 0 or high >= size:
        bad = int(((ids < 0) | (ids >= size)).any(axis=1).sum())
        raise ConfigError(key, f"token ids range {low:g}..{high:g} but {what} has {size} tokens (ids 0..{size - 1});"
                          f" {bad} samples hold ids out of range. The ids were made by another tokenizer: use the "
                          "tokenizer the model was trained with")


def decode(tokenizer: TextTokenizer, ids: np.ndarray) -> list[str]:
    """The texts of padded token ids (special tokens left out)."""
    rows = [[int(i) for i in row if int(i) != tokenizer.pad_id] for row in np.asarray(ids, dtype=np.int64)]
    backend = tokenizer.backend
    if tokenizer.is_transformers:
        return [str(t) for t in backend.batch_decode(rows, skip_special_tokens=True)]
    return [str(t) for t in backend.decode_batch(rows, skip_special_tokens=True)]
