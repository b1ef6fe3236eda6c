"""Per-sample outcomes: what each audited sample scored, saved so that two runs can be paired.

A section that reports a metric which is a mean over samples (accuracy: correct or not; robust
accuracy: robust or not at a norm and eps) saves the per-sample values behind it with
``save_outcomes``, to ``artifacts/<section>/outcomes.npz``. ``nnaudit compare`` pairs two runs'
files sample by sample (same data hash, same sample ids) for a paired bootstrap; the dashboard's
sample explorer (``reports/dashboard/samples.py``) reads the same file. This is the one per-sample store:
each section computes a per-sample value once and saves it here. Numpy only: no torch here.

The file holds (``np.load(..., allow_pickle=False)`` reads it):

- ``sample_id``: (n,) int64, rows of the audited data (after ``data.limit``) the values describe;
- ``data_sha256``: the audited data's hash (the run manifest's ``data.sha256``); rows pair only when equal;
- one (n,) array per metric, named by the metric's full name: the per-sample values whose mean is the
  metric (``save_outcomes`` checks that it is);
- ``extra/<name>``: (n, ...) per-sample arrays that are not metrics, for viewers. The built-in sections write
  (``EXTRA_*`` names below): ``label``, ``prediction``, ``confidence``, ``proba`` (n, classes: the full
  probability vectors), ``x`` (the clean inputs, performance section), ``group/<column>`` (sensitive columns),
  and per worst-case ``<norm>/eps=<eps>`` (robustness section): ``adv_proba/...`` (n, classes: the model's
  probabilities on the adversarial input, NaN rows where its outputs were not finite), ``adv_prediction/...``
  (-1 where not finite), ``adv_confidence/...``, ``fooled_by/...`` (first attack to fool), and ``min_eps/<norm>``;
- ``meta``: JSON: for each metric array what it is (``kind``: correct, robust, loss ...; ``norm``,
  ``eps``, ``attack`` where they apply), and the format version.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.results import ARTIFACTS_DIR, atomic_write_bytes

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import SectionResult

OUTCOMES_FILE = "outcomes.npz"
OUTCOMES_ARTIFACT = "outcomes"  # the key in the section's artifacts
FORMAT_VERSION = 1
_RESERVED = ("sample_id", "data_sha256", "meta")
EXTRA_PREFIX = "extra/"
EXTRA_INPUTS = "x"
EXTRA_PROBA = "proba"
EXTRA_LABEL = "label"
EXTRA_GROUP = "group/"
EXTRA_ADV_PROBA = "adv_proba/"


def adversarial_tag(norm: str, eps: float) -> str:
    """How the per-(norm, eps) extras are named: ``<norm>/eps=<eps>`` (``adv_proba/linf/eps=0.1``)."""
    return f"{norm}/eps={eps:g}"


@dataclass(frozen=True)
class SampleOutcomes:
    """One section's per-sample values (see the module docstring)."""

    section: str
    data_sha256: str
    sample_id: np.ndarray  # (n,) int64
    values: dict[str, np.ndarray]  # full metric name -> (n,) float64 (0/1 for correct / robust)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> kind, norm, eps, attack
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n,) per-sample array

    @property
    def n(self) -> int:
        return len(self.sample_id)


def _full(section: str, name: str) -> str:
    return name if name.startswith(section + ".") else f"{section}.{name}"


def save_outcomes(ctx: AuditContext, result: SectionResult, *, sample_id: np.ndarray,
                  values: Mapping[str, np.ndarray], meta: Mapping[str, Mapping[str, Any]] | None = None,
                  extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``artifacts/<section>/outcomes.npz`` for a section running in ``ctx``; see ``write_outcomes``."""
    return write_outcomes(ctx.run_dir, result, data_sha256=ctx.data.sha256(), sample_id=sample_id, values=values,
                          meta=meta, extra=extra)


def write_outcomes(run_dir: str | os.PathLike[str], result: SectionResult, *, data_sha256: str,
                   sample_id: np.ndarray, values: Mapping[str, np.ndarray],
                   meta: Mapping[str, Mapping[str, Any]] | None = None,
                   extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``run_dir/artifacts/<section>/outcomes.npz`` and record it in the section's artifacts.

    ``values`` maps metric names (relative to the section, as in ``result.metric``, or full) to the
    (n,) per-sample values whose mean is that metric; a metric already recorded must equal the mean
    (a ``ValueError`` otherwise: the file would pair something other than the reported number).
    """
    ids = np.asarray(sample_id, dtype=np.int64).reshape(-1)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("sample_id holds duplicates")
    arrays: dict[str, np.ndarray] = {"sample_id": ids, "data_sha256": np.asarray(str(data_sha256))}
    described: dict[str, dict[str, Any]] = {}
    for name, raw in values.items():
        full = _full(result.name, name)
        array = np.asarray(raw, dtype=np.float64).reshape(-1)
        if array.shape != ids.shape:
            raise ValueError(f"outcomes for {full}: {array.shape[0]} values for {len(ids)} sample ids")
        if not np.isfinite(array).all():
            raise ValueError(f"outcomes for {full} hold NaN or infinite values")
        recorded = result.metrics.get(full)
        if recorded is not None and len(array) and not math.isclose(float(array.mean()), recorded, rel_tol=1e-9,
                                                                    abs_tol=1e-12):
            raise ValueError(f"outcomes for {full} average to {array.mean():.17g}, but the metric is {recorded!r}")
        if full in _RESERVED or full.startswith(EXTRA_PREFIX):
            raise ValueError(f"{full!r} is a reserved name in {OUTCOMES_FILE}")
        arrays[full] = array
        described[full] = dict((meta or {}).get(name, (meta or {}).get(full, {})))
    for name, raw in (extra or {}).items():
        array = np.asarray(raw)
        if array.shape[:1] != ids.shape or array.dtype == object:
            raise ValueError(f"extra outcome {name!r}: need ({len(ids)}, ...) plain values, got {array.shape} "
                             f"{array.dtype}")
        arrays[EXTRA_PREFIX + name] = array
    arrays["meta"] = np.asarray(json.dumps({"format": FORMAT_VERSION, "section": result.name,
                                            "metrics": described}, sort_keys=True))
    path = outcomes_path(run_dir, result.name)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())
    result.artifacts[OUTCOMES_ARTIFACT] = f"{ARTIFACTS_DIR}/{result.name}/{OUTCOMES_FILE}"
    return path


def outcomes_path(run_dir: str | os.PathLike[str], section: str) -> Path:
    return Path(run_dir) / ARTIFACTS_DIR / section / OUTCOMES_FILE


class OutcomesError(ValueError):
    """An outcomes file that exists but cannot be read."""


def load_outcomes(run_dir: str | os.PathLike[str], section: str, *, extra: bool = True) -> SampleOutcomes | None:
    """The per-sample outcomes ``section`` saved in ``run_dir``; None when it saved none.

    ``extra=False`` skips the viewer arrays (inputs, probabilities), which pairing runs does not need.
    Raises ``OutcomesError`` for a file that cannot be read (truncated, not an outcomes file).
    """
    path = outcomes_path(run_dir, section)
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            files = set(npz.files)
            missing = [key for key in _RESERVED if key not in files]
            if missing:
                raise OutcomesError(f"{path} is not an nnaudit outcomes file (no {', '.join(missing)})")
            meta = json.loads(str(npz["meta"]))
            ids = np.asarray(npz["sample_id"], dtype=np.int64)
            values = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files
                      if key not in _RESERVED and not key.startswith(EXTRA_PREFIX)}
            extras = {key.removeprefix(EXTRA_PREFIX): np.asarray(npz[key]) for key in npz.files
                      if extra and key.startswith(EXTRA_PREFIX)}
            data_sha = str(npz["data_sha256"])
    except OutcomesError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise OutcomesError(f"cannot read {path}: {err}") from err
    if any(v.shape != ids.shape for v in values.values()):
        raise OutcomesError(f"{path}: an outcome array does not have one value per sample id")
    return SampleOutcomes(section=section, data_sha256=data_sha, sample_id=ids, values=values,
                          meta={k: dict(v) for k, v in meta.get("metrics", {}).items()}, extra=extras)


def load_all_outcomes(run_dir: str | os.PathLike[str], sections: list[str], *,
                      extra: bool = True) -> dict[str, SampleOutcomes]:
    """``load_outcomes`` for each section that saved some."""
    out: dict[str, SampleOutcomes] = {}
    for section in sections:
        found = load_outcomes(run_dir, section, extra=extra)
        if found is not None:
            out[section] = found
    return out
