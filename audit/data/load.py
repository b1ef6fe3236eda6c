"""``load_data``: the ``AuditData`` a config's ``data:`` block describes, reshaped and subset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from audit.config import DataConfig
from audit.data.arrays import load_arrays
from audit.data.base import AuditData, image_or_tabular, select_sensitive
from audit.data.builtin import load_breast_cancer_data, load_digits_data, load_resume_names_data
from audit.data.fairness import load_fairness_dataset
from audit.data.imagefolder import load_image_folder
from audit.data.tabular import load_table
from audit.data.targets import subset_rows
from audit.errors import ConfigError

if TYPE_CHECKING:
    from audit.model.text import TextTokenizer

PRESET_SOURCES = ("digits", "breast_cancer", "resume_names", "adult", "compas", "german")


def load_data(config: DataConfig, *, seed: int = 0, limit: int | None = None,
              tokenizer: TextTokenizer | None = None, task: str = "auto") -> AuditData:
    """Load the data a config describes, then reshape and subset it. ``tokenizer`` (a text model's): text columns
    are tokenized with it, token ids of array files checked against it (``audit.data.text``). ``task``:
    ``model.task`` (user files read their targets for it, ``audit.data.targets``; the built-in datasets and text
    data are classification)."""
    from audit.data.text import as_token_data, load_text_data

    if config.source in (*PRESET_SOURCES, "imagefolder", "idx") and task not in ("auto", "classification"):
        raise ConfigError("model.task", f"data source '{config.source}' holds class labels; model.task {task} needs "
                          "a csv, parquet or npz file with its targets (docs/tasks.md)")
    text_data = load_text_data(config, tokenizer)  # None: not a text table
    if text_data is not None and task not in ("auto", "classification"):
        raise ConfigError("model.task", f"text data (data.text) is read as class labels; model.task {task} on text "
                          "is not supported yet: audit a text classifier (docs/text.md)")
    if text_data is not None:
        data = text_data
    elif config.source == "digits":
        data = load_digits_data(config.split)
    elif config.source == "breast_cancer":
        data = load_breast_cancer_data(config.split)
    elif config.source == "resume_names":
        data = load_resume_names_data(config.split, sensitive_as_features=config.sensitive_as_features,
                                      sensitive=config.sensitive)
    elif config.source in ("adult", "compas", "german"):
        assert config.path is not None  # DataConfig requires it
        data = load_fairness_dataset(config.source, config.path, config.split,
                                     sensitive_as_features=config.sensitive_as_features, sensitive=config.sensitive)
    elif config.source in ("csv", "parquet"):
        data = load_table(config, task=task)
    elif config.source == "imagefolder":
        data = load_image_folder(config, seed=seed, limit=limit if limit is not None else config.limit)
    else:
        data = load_arrays(config, task=task)
        if tokenizer is not None:
            data = as_token_data(data, tokenizer)
    if data.task_reason is None:
        data.task_reason = "set by model.task" if task == "classification" else (
            f"model.task auto: data source '{config.source}' holds class labels")
    if config.class_names is not None and config.source in PRESET_SOURCES:
        if len(config.class_names) != data.num_classes:
            raise ConfigError("data.class_names", f"{data.name} has {data.num_classes} classes, "
                              f"got {len(config.class_names)} names")
        data.class_names = list(config.class_names)
    if config.input_shape is not None:
        size = int(np.prod(config.input_shape))
        if size != int(np.prod(data.input_shape)):
            raise ConfigError("data.input_shape", f"{config.input_shape} holds {size} values but each sample "
                              f"has {int(np.prod(data.input_shape))} (shape {list(data.input_shape)})")
        data.x = data.x.reshape(data.n_samples, *config.input_shape)
        data.modality = image_or_tabular(data.x)
    if config.source in PRESET_SOURCES:  # digits and breast_cancer provide none
        data.sensitive = select_sensitive(config.source, data.sensitive, config.sensitive)
    effective = limit if limit is not None else config.limit
    if effective is not None and effective < data.n_samples:
        data = data.subset(subset_rows(data, effective, seed))
    return data
