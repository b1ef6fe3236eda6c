"""Per-sample data for the sample explorer, read from a run's artifacts (numpy only: no torch, no streamlit).

Sources, each optional (an older run, or a run without a section, shows what it has):

- the performance section's per-sample outcomes (``audit.outcomes``, ``outcomes.npz``, the file
  ``nnaudit compare`` pairs): clean inputs ``extra/x``, labels ``extra/label``, clean probabilities
  ``extra/proba``, sensitive columns ``extra/group/<name>``;
- the robustness section's outcomes: the attacked rows (``sample_id``) and the probabilities on each
  worst-case adversarial input (``extra/adv_proba/<norm>/eps=<eps>``);
- the ``context.npz`` checkpoints (``audit.engine.checkpoint``): adversarial inputs and per-sample
  outcomes (``adversarial`` store), attributions per method (``attributions`` store). Their JSON
  index is read directly, so this module needs neither torch nor the context classes.

Every path comes from results.json and is checked to stay inside the run directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.outcomes import (
    EXTRA_ADV_PROBA,
    EXTRA_GROUP,
    EXTRA_INPUTS,
    EXTRA_LABEL,
    EXTRA_PROBA,
    OUTCOMES_FILE,
    adversarial_tag,
    load_outcomes,
)

CONTEXT_FORMAT = "nnaudit.context/1"


class SamplesUnavailable(ValueError):
    """The run saved nothing the explorer can show; the message says what is missing."""


@dataclass
class Adversarial:
    """The worst-case adversarial inputs at one (norm, eps), for the rows in ``rows``."""

    key: str
    norm: str
    eps: float
    attack: str
    rows: np.ndarray  # (n,) rows of the data
    x_adv: np.ndarray  # (n, *input_shape)
    robust: np.ndarray  # (n,) bool
    proba: np.ndarray | None  # (n, C) the model's probabilities on x_adv, where the run saved them

    def position(self, row: int) -> int | None:
        hits = np.flatnonzero(self.rows == row)
        return int(hits[0]) if len(hits) else None


@dataclass
class Attribution:
    method: str
    rows: np.ndarray  # (n,) rows explained
    target: np.ndarray  # (n,) class explained
    values: np.ndarray  # (n, *input_shape)

    def position(self, row: int) -> int | None:
        hits = np.flatnonzero(self.rows == row)
        return int(hits[0]) if len(hits) else None


@dataclass
class Samples:
    modality: str
    class_names: list[str]
    feature_names: list[str] | None
    x: np.ndarray
    y: np.ndarray
    proba: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    adversarial: dict[str, Adversarial] = field(default_factory=dict)
    attributions: dict[str, Attribution] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def pred(self) -> np.ndarray:
        return np.asarray(self.proba.argmax(axis=1))

    def fooled(self, key: str) -> np.ndarray:
        """(N,) 1 fooled (clean correct, wrong under attack), 0 not fooled, -1 not attacked or clean wrong."""
        out = np.full(self.n, -1, dtype=np.int8)
        adv = self.adversarial[key]
        clean_ok = self.pred[adv.rows] == self.y[adv.rows]
        out[adv.rows[clean_ok]] = (~adv.robust[clean_ok]).astype(np.int8)
        return out


def _inside(run: Path, rel: str) -> Path:
    path = (run / rel).resolve()
    if not path.is_relative_to(run.resolve()):
        raise SamplesUnavailable(f"artifact {rel} points outside the run directory")
    return path


def _section_name(results: Mapping[str, Any], plugin: str) -> str | None:
    for name, section in results.get("sections", {}).items():
        if section.get("plugin") in (plugin, f"builtin.{plugin}") or name == plugin:
            if Path(str(name)).name != name or name in (".", ".."):
                raise SamplesUnavailable(f"section name {name!r} is not a plain name")
            return str(name)
    return None


def _section_by_plugin(results: Mapping[str, Any], plugin: str) -> Mapping[str, Any] | None:
    name = _section_name(results, plugin)
    return None if name is None else dict(results["sections"][name])


class _Checkpoint:
    """An open context checkpoint: arrays inside the NPZ, or ``.npy`` files beside it (memory-mapped adversarial
    inputs, ``audit.engine.checkpoint``'s ``npy`` entries), each checked to stay inside the run directory."""

    def __init__(self, run: Path, path: Path) -> None:
        self.run, self.base = run, path.parent
        self.npz = np.load(path, allow_pickle=False)

    def __enter__(self) -> _Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.npz.close()

    def field(self, entry: Mapping[str, Any], name: str) -> Any:
        value = entry.get("fields", {}).get(name)
        if value is None:
            return None
        if value.get("kind") == "array":
            return self.npz[value["array"]]
        if value.get("kind") == "npy":
            file = _inside(self.run, os.path.relpath(self.base / str(value["path"]), self.run))
            return np.load(file, mmap_mode="r", allow_pickle=False)
        return value.get("value")


def _context_store(run: Path, section: Mapping[str, Any] | None,
                   store: str) -> tuple[dict[str, Any], _Checkpoint] | None:
    """(the store's index entries, the open checkpoint) of a section's context checkpoint, or None."""
    if not section or not section.get("context"):
        return None
    path = _inside(run, section["context"])
    if not path.is_file():
        return None
    checkpoint = _Checkpoint(run, path)
    meta = json.loads(str(checkpoint.npz["__index__"]))
    if meta.get("format") != CONTEXT_FORMAT:
        checkpoint.npz.close()
        return None
    return meta.get("stores", {}).get(store, {}), checkpoint


def load_samples(run: str | Path, results: Mapping[str, Any]) -> Samples:
    """Everything the explorer shows for a run. Raises ``SamplesUnavailable`` when the clean samples are absent."""
    run = Path(run)
    data = results.get("manifest", {}).get("data", {})
    if data.get("task", "classification") != "classification":  # its views are per class (a softmax)
        raise SamplesUnavailable(f"the sample explorer shows a classifier's class probabilities; this is a "
                                 f"{data['task']} model (its per-sample errors are in the performance section's "
                                 f"{OUTCOMES_FILE})")
    name = _section_name(results, "performance")
    saved = load_outcomes(run, name) if name else None
    needed = (EXTRA_INPUTS, EXTRA_LABEL, EXTRA_PROBA)
    if saved is None or any(key not in saved.extra for key in needed):
        raise SamplesUnavailable("this run saved no per-sample inputs and probabilities (the performance "
                                 f"section's {OUTCOMES_FILE}): rerun the audit with this version of nnaudit to "
                                 "explore its samples")
    if not np.array_equal(saved.sample_id, np.arange(saved.n)):
        raise SamplesUnavailable(f"the performance section's {OUTCOMES_FILE} does not cover every row in order")
    samples = Samples(modality=str(data.get("modality", "tabular")),
                      class_names=[str(c) for c in data.get("class_names", [])],
                      feature_names=[str(f) for f in data["feature_names"]] if data.get("feature_names") else None,
                      x=saved.extra[EXTRA_INPUTS], y=np.asarray(saved.extra[EXTRA_LABEL]),
                      proba=saved.extra[EXTRA_PROBA],
                      groups={k.removeprefix(EXTRA_GROUP): v for k, v in saved.extra.items()
                              if k.startswith(EXTRA_GROUP)})
    _add_adversarial(run, results, samples)
    _add_attributions(run, results, samples)
    return samples


def _adversarial_proba(run: Path, results: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(rows attacked, ``<norm>/eps=<eps>`` -> probabilities on the adversarial inputs) from the robustness
    section's outcomes, or None where it saved none."""
    name = _section_name(results, "robustness")
    saved = load_outcomes(run, name) if name else None
    if saved is None:
        return None
    return saved.sample_id, {k.removeprefix(EXTRA_ADV_PROBA): v for k, v in saved.extra.items()
                             if k.startswith(EXTRA_ADV_PROBA)}


def _add_adversarial(run: Path, results: Mapping[str, Any], samples: Samples) -> None:
    section = _section_by_plugin(results, "robustness")
    found = _context_store(run, section, "adversarial")
    if found is None:
        return
    entries, checkpoint = found
    saved = _adversarial_proba(run, results)
    with checkpoint:
        for key, entry in entries.items():
            index = checkpoint.field(entry, "index")
            x_adv = checkpoint.field(entry, "x_adv")
            rows = np.arange(len(x_adv)) if index is None else np.asarray(index)
            norm, eps = str(checkpoint.field(entry, "norm")), float(checkpoint.field(entry, "eps"))
            proba = None
            if saved is not None and adversarial_tag(norm, eps) in saved[1]:
                proba = _aligned(rows, saved[0], saved[1][adversarial_tag(norm, eps)])
            samples.adversarial[key] = Adversarial(
                key=key, norm=norm, eps=eps, attack=str(checkpoint.field(entry, "attack")), rows=rows, x_adv=x_adv,
                robust=np.asarray(checkpoint.field(entry, "robust_correct"), dtype=bool), proba=proba)


def _aligned(rows: np.ndarray, sample_id: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """``values`` (one per ``sample_id``) reordered to ``rows``; None where some row has no value."""
    order = np.argsort(sample_id)
    at = np.searchsorted(sample_id, rows, sorter=order)
    at = np.clip(at, 0, max(len(sample_id) - 1, 0))
    if not len(sample_id) or not np.array_equal(sample_id[order[at]], rows):
        return None
    return np.asarray(values[order[at]])


def _add_attributions(run: Path, results: Mapping[str, Any], samples: Samples) -> None:
    found = _context_store(run, _section_by_plugin(results, "explanations"), "attributions")
    if found is None:
        return
    entries, checkpoint = found
    with checkpoint:
        for method, entry in entries.items():
            samples.attributions[method] = Attribution(
                method=method, rows=np.asarray(checkpoint.field(entry, "index")),
                target=np.asarray(checkpoint.field(entry, "target")), values=checkpoint.field(entry, "values"))


def to_image(x: np.ndarray) -> np.ndarray:
    """An input as an (H, W) or (H, W, 3) float image in [0, 1], min-max scaled (inputs need not be in [0, 1])."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    elif a.ndim == 1:
        side = int(np.sqrt(a.size) + 0.5)
        a = a.reshape(side, side) if side * side == a.size else a.reshape(1, -1)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)


def upscale(image: np.ndarray, min_side: int = 192) -> np.ndarray:
    """Nearest-neighbour upscaling so that small inputs (8x8 digits) are visible pixel by pixel."""
    factor = max(1, int(np.ceil(min_side / max(image.shape[:2]))))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def attribution_image(values: np.ndarray) -> np.ndarray:
    """Signed attributions as RGB: red positive, blue negative, white zero, scaled by the largest magnitude."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=0)
    scale = float(np.nanmax(np.abs(a))) if a.size and np.isfinite(a).any() else 0.0
    v = np.nan_to_num(a / scale if scale > 0 else np.zeros_like(a))
    rgb = np.ones((*v.shape, 3))
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb[..., 1] -= pos + neg
    rgb[..., 2] -= pos
    rgb[..., 0] -= neg
    return np.clip(rgb, 0.0, 1.0)
