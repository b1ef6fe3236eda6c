"""Two runs side by side: who each is (``RunInfo``), what differs between their setups, and which of their
per-sample outcomes pair for the significance tests (``Pairing``). Pure; never imports torch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.runs import run_state, run_title

if TYPE_CHECKING:
    from audit.outcomes import SampleOutcomes


@dataclass(frozen=True)
class Pairing:
    """Whether per-sample outcomes could be paired, and on what."""

    available: bool
    reason: str
    n_samples: int = 0  # the most samples paired in one section
    sections: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunInfo:
    """One side of a comparison: its title, where it lies, how it stands, what it audited."""

    title: str
    path: str | None
    status: str
    data_sha256: str | None
    model_sha256: str | None
    seed: Any
    nnaudit_version: str | None


def run_info(results: Mapping[str, Any], path: str | os.PathLike[str] | None) -> RunInfo:
    """``RunInfo`` of a results dict; ``path`` (its run directory) tells a live run from a dead one."""
    manifest = results.get("manifest") if isinstance(results.get("manifest"), Mapping) else {}
    assert isinstance(manifest, Mapping)
    data = manifest.get("data") if isinstance(manifest.get("data"), Mapping) else {}
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    state = run_state(dict(results), path)
    return RunInfo(title=run_title(results), path=str(path) if path is not None else None, status=state.status,
                   data_sha256=data.get("sha256") if isinstance(data, Mapping) else None,
                   model_sha256=model.get("sha256") if isinstance(model, Mapping) else None,
                   seed=manifest.get("seed"), nnaudit_version=manifest.get("nnaudit_version"))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def setup_differences(base: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """What differs between two runs' setups, one line each: model and data hashes, seed, nnaudit version, the
    sections run and each section's parameters."""
    out: list[str] = []
    b_man = base.get("manifest") if isinstance(base.get("manifest"), Mapping) else {}
    c_man = candidate.get("manifest") if isinstance(candidate.get("manifest"), Mapping) else {}
    assert isinstance(b_man, Mapping) and isinstance(c_man, Mapping)
    for label, path in (("model", ("model", "sha256")), ("data", ("data", "sha256"))):
        b_val, c_val = b_man.get(path[0], {}).get(path[1]), c_man.get(path[0], {}).get(path[1])
        if b_val != c_val:
            out.append(f"{label} sha256 {str(b_val)[:12]} -> {str(c_val)[:12]}")
    for key in ("seed", "nnaudit_version", "device"):
        if b_man.get(key) != c_man.get(key):
            out.append(f"{key} {b_man.get(key)} -> {c_man.get(key)}")
    b_sec, c_sec = base.get("sections", {}), candidate.get("sections", {})
    only_b, only_c = [n for n in b_sec if n not in c_sec], [n for n in c_sec if n not in b_sec]
    if only_b:
        out.append(f"sections only in the base run: {', '.join(only_b)}")
    if only_c:
        out.append(f"sections only in the candidate run: {', '.join(only_c)}")
    for name in (n for n in b_sec if n in c_sec):
        b_params, c_params = _flatten(b_sec[name].get("params", {})), _flatten(c_sec[name].get("params", {}))
        changed = [f"{k} {b_params.get(k)} -> {c_params.get(k)}" for k in dict.fromkeys([*b_params, *c_params])
                   if b_params.get(k) != c_params.get(k)]
        if changed:
            out.append(f"{name} parameters: {'; '.join(changed)}")
    return out


def pair_outcomes(base: Mapping[str, SampleOutcomes], candidate: Mapping[str, SampleOutcomes],
                   base_info: RunInfo, cand_info: RunInfo) -> tuple[Pairing, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per metric, the paired per-sample values (base, candidate) on the sample ids both runs share."""
    if base_info.data_sha256 is None or base_info.data_sha256 != cand_info.data_sha256:
        return Pairing(False, "the runs audited different data (data sha256 "
                       f"{(base_info.data_sha256 or 'unknown')[:12]} vs {(cand_info.data_sha256 or 'unknown')[:12]}), "
                       "so their samples cannot be paired"), {}
    common = [s for s in base if s in candidate]
    if not common:
        missing = "neither run" if not base and not candidate else "the base run" if not base else \
            "the candidate run" if not candidate else "no section of both runs"
        return Pairing(False, f"{missing} saved per-sample outcomes (artifacts/<section>/outcomes.npz; results "
                       "written before nnaudit saved them have none)"), {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sections: list[str] = []
    most = 0
    reasons: list[str] = []
    for name in common:
        b, c = base[name], candidate[name]
        if b.data_sha256 != base_info.data_sha256 or c.data_sha256 != cand_info.data_sha256:
            reasons.append(f"{name}: its outcomes file describes other data than its run")
            continue
        shared, bi, ci = np.intersect1d(b.sample_id, c.sample_id, assume_unique=True, return_indices=True)
        if len(shared) == 0:
            reasons.append(f"{name}: no sample ids in common")
            continue
        metrics = [m for m in b.values if m in c.values]
        for metric in metrics:
            pairs[metric] = (b.values[metric][bi], c.values[metric][ci])
        if metrics:
            sections.append(name)
            most = max(most, len(shared))
    if not pairs:
        return Pairing(False, "; ".join(reasons) or "no metric has per-sample outcomes in both runs"), {}
    return Pairing(True, f"{most} samples of the same data (sha256 {(base_info.data_sha256 or '')[:12]}) paired "
                   f"in {', '.join(sections)}", most, tuple(sections)), pairs
