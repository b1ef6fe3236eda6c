"""Per-sample data for the sample explorer, read from a run's artifacts (numpy only: no torch, no streamlit).

Sources, each optional (an older run, or a run without a section, shows what it has):

- the performance section's ``samples`` artifact (``audit.samples``): clean inputs ``x``, labels
  ``y``, clean probabilities ``proba``, sensitive columns ``group:<name>``;
- the robustness section's ``samples`` artifact: ``keys`` (``norm:eps``), the rows attacked
  (``index``) and the probabilities on each adversarial input (``proba_adv``);
- the ``context.npz`` checkpoints (``audit.engine.checkpoint``): adversarial inputs and per-sample
  outcomes (``adversarial`` store), attributions per method (``attributions`` store). Their JSON
  index is read directly, so this module needs neither torch nor the context classes.

Every path comes from results.json and is checked to stay inside the run directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES_ARTIFACT = "samples"
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


def _section_by_plugin(results: Mapping[str, Any], plugin: str) -> Mapping[str, Any] | None:
    for name, section in results.get("sections", {}).items():
        if section.get("plugin") in (plugin, f"builtin.{plugin}") or name == plugin:
            return dict(section)
    return None


def _context_store(run: Path, section: Mapping[str, Any] | None,
                   store: str) -> tuple[dict[str, Any], Any, Path] | None:
    """(the store's index entries, the open NPZ, its folder) of a section's context checkpoint, or None."""
    if not section or not section.get("context"):
        return None
    path = _inside(run, section["context"])
    if not path.is_file():
        return None
    npz = np.load(path, allow_pickle=False)
    meta = json.loads(str(npz["__index__"]))
    if meta.get("format") != CONTEXT_FORMAT:
        return None
    return meta.get("stores", {}).get(store, {}), npz, path.parent


def _field(entry: Mapping[str, Any], name: str, npz: Any, run: Path, base: Path) -> Any:
    value = entry.get("fields", {}).get(name)
    if value is None:
        return None
    if value.get("kind") == "array":
        return npz[value["array"]]
    if value.get("kind") == "npy":  # an array kept in its own .npy (the adversarial examples), read memory-mapped
        path = (base / value["path"]).resolve()
        if not path.is_relative_to(run.resolve()):
            raise SamplesUnavailable(f"artifact {value['path']} points outside the run directory")
        if not path.is_file():
            raise SamplesUnavailable(f"artifact {value['path']} is missing from the run directory")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return value.get("value")


def load_samples(run: str | Path, results: Mapping[str, Any]) -> Samples:
    """Everything the explorer shows for a run. Raises ``SamplesUnavailable`` when the clean samples are absent."""
    run = Path(run)
    data = results.get("manifest", {}).get("data", {})
    performance = _section_by_plugin(results, "performance")
    rel = (performance or {}).get("artifacts", {}).get(SAMPLES_ARTIFACT)
    if not rel:
        raise SamplesUnavailable("this run saved no per-sample records (the performance section's samples "
                                 "artifact): rerun the audit with this version of nnaudit to explore its samples")
    path = _inside(run, rel)
    if not path.is_file():
        raise SamplesUnavailable(f"artifact {rel} is missing from the run directory")
    with np.load(path, allow_pickle=False) as npz:
        samples = Samples(modality=str(data.get("modality", "tabular")),
                          class_names=[str(c) for c in data.get("class_names", [])],
                          feature_names=[str(f) for f in data["feature_names"]] if data.get("feature_names") else None,
                          x=npz["x"], y=npz["y"], proba=npz["proba"],
                          groups={k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("group:")})
    _add_adversarial(run, results, samples)
    _add_attributions(run, results, samples)
    return samples


def _add_adversarial(run: Path, results: Mapping[str, Any], samples: Samples) -> None:
    section = _section_by_plugin(results, "robustness")
    found = _context_store(run, section, "adversarial")
    if found is None:
        return
    entries, npz, base = found
    proba: dict[str, np.ndarray] = {}
    rel = (section or {}).get("artifacts", {}).get(SAMPLES_ARTIFACT)
    if rel and _inside(run, rel).is_file():
        with np.load(_inside(run, rel), allow_pickle=False) as saved:
            proba = {str(k): saved["proba_adv"][i] for i, k in enumerate(saved["keys"])}
    with npz:
        for key, entry in entries.items():
            index = _field(entry, "index", npz, run, base)
            x_adv = _field(entry, "x_adv", npz, run, base)
            rows = np.arange(len(x_adv)) if index is None else np.asarray(index)
            samples.adversarial[key] = Adversarial(
                key=key, norm=str(_field(entry, "norm", npz, run, base)),
                eps=float(_field(entry, "eps", npz, run, base)), attack=str(_field(entry, "attack", npz, run, base)),
                rows=rows, x_adv=x_adv, robust=np.asarray(_field(entry, "robust_correct", npz, run, base), dtype=bool),
                proba=proba.get(key))


def _add_attributions(run: Path, results: Mapping[str, Any], samples: Samples) -> None:
    found = _context_store(run, _section_by_plugin(results, "explanations"), "attributions")
    if found is None:
        return
    entries, npz, base = found
    with npz:
        for method, entry in entries.items():
            samples.attributions[method] = Attribution(
                method=method, rows=np.asarray(_field(entry, "index", npz, run, base)),
                target=np.asarray(_field(entry, "target", npz, run, base)),
                values=_field(entry, "values", npz, run, base))


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
