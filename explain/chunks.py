"""The explanations section in chunks: what one chunk computes and saves, and the gathering back.

A chunk is a slice of the explained samples (``audit.engine.chunks.plan``), run by the same chunk runner and
backends as the robustness section (in this process, or a Ray task with ``--backend ray``). ``explain_chunk``
builds every explainer from its ``ExplainerSpec`` (the same constructor arguments in every chunk, on every
backend), explains the chunk's samples and computes their per-sample quality scores. It returns flat arrays
(``audit.engine.chunks`` saves them to ``artifacts/<section>/chunks/<k>.npz`` as the chunk finishes):

- ``attr/<method>`` the attributions; ``cost/<method>`` [seconds, model rows, batched calls]; ``notes/<method>``
  what the explainer noted (out-of-memory back-offs); ``fallback/<method>`` why it fell back to another
  algorithm ('' when it did not); ``error/<method>`` the error that stopped it (then nothing else of it);
- ``deletion/<method>``, ``insertion/<method>`` the curves (rows, steps + 1), the random ordering as
  ``faithfulness.RANDOM``; ``faithfulness/fractions``; ``faithfulness/informative`` informative features per row;
- ``infidelity/<method>`` per row; ``sensitivity_max/<method>`` per check sample of the chunk;
- ``randomization/<method>``, ``randomization_ssim/<method>`` (cascade steps, check samples of the chunk),
  ``randomization_error/<method>``.

Every random draw is keyed per sample id (``explain.seeds``), so a sample's attributions and scores do not depend on
the chunk it falls in, on the backend, or on a resume; ``gather`` reads the chunk files back in order into
``Gathered``, whose per-sample arrays cover all the explained samples (the check samples for sensitivity and
randomization).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.engine.chunks import Chunk, ChunkStore, chunk_seed, iter_chunks, seed_all
from audit.model import ModelAdapter
from explain.base import Explainer, ExplainerError
from explain.captum_methods import reference_input
from explain.faithfulness import RANDOM, FaithfulnessCurves, deletion_baseline, faithfulness_curves, informative
from explain.quality import infidelity, sensitivity_max
from explain.randomization import cascade_similarity


@dataclass
class ExplainerSpec:
    """How one explainer is built: ``audit.plugin.construct`` with the section's defaults and the method's own
    ``method_params``. The same arguments build it in every chunk and on a randomized model."""

    method: str
    cls: type[Explainer]
    key: str  # the config key of its parameters, for errors
    defaults: dict[str, Any]
    params: dict[str, Any]

    def build(self, model: ModelAdapter) -> Explainer:
        from audit.plugin import construct

        explainer: Explainer = construct(self.cls, self.method, key=self.key, defaults=self.defaults,
                                         params=self.params, fixed={"adapter": model})
        return explainer


@dataclass
class Deletion:
    kind: str  # mean, blur or lower
    data_mean: np.ndarray
    fill: float  # the lower bound
    sigma: float
    steps: int


@dataclass
class Sensitivity:
    radius: float
    samples: int
    lower: Any
    upper: Any
    perturbable: np.ndarray | None


@dataclass
class Cascade:
    layers: list[str]  # output layer first
    steps: int
    background: np.ndarray  # for the attribution baseline (tabular: its mean)


@dataclass
class ChunkInputs:
    """Everything a chunk needs, shipped once (Ray: one object in the store for all chunks)."""

    model: ModelAdapter
    section: str
    seed: int
    modality: str
    memory_mb: float
    ids: np.ndarray  # the explained samples: their rows in the audit data, inputs and explained classes
    x: np.ndarray
    target: np.ndarray
    specs: list[ExplainerSpec]
    check: np.ndarray  # positions of the check samples (sorted)
    deletion: Deletion | None = None
    infidelity: tuple[float, int] | None = None  # (noise std, perturbations per sample)
    sensitivity: Sensitivity | None = None
    cascade: Cascade | None = None


@dataclass
class Gathered:
    """Every chunk's outputs over all the explained samples, for the methods that ran on every chunk."""

    values: dict[str, np.ndarray]
    cost: dict[str, tuple[float, int, int]]  # seconds, model rows, batched calls
    notes: list[str]
    fallback: dict[str, str]
    errors: dict[str, str]  # methods that failed: the first error
    curves: dict[str, FaithfulnessCurves] = field(default_factory=dict)  # methods and RANDOM
    informative_share: float = float("nan")
    infidelity: dict[str, np.ndarray] = field(default_factory=dict)
    sensitivity: dict[str, np.ndarray] = field(default_factory=dict)  # over the check samples
    randomization: dict[str, np.ndarray] = field(default_factory=dict)  # (steps, check samples)
    randomization_ssim: dict[str, np.ndarray] = field(default_factory=dict)
    randomization_errors: dict[str, str] = field(default_factory=dict)


def _quiet(items: Any, **_: Any) -> Any:
    return items


def explain_chunk(shared: ChunkInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """Every method's attributions and per-sample quality scores on one chunk (see the module docstring)."""
    progress = progress or _quiet
    seed_all(chunk_seed(shared.seed, shared.section, chunk.k))  # a third-party explainer's global draws
    part = slice(chunk.start, chunk.stop)
    ids, x, target = shared.ids[part], shared.x[part], shared.target[part]
    specs = {spec.method: spec for spec in shared.specs}
    out: dict[str, np.ndarray] = {}
    explainers: dict[str, Explainer] = {}
    values: dict[str, np.ndarray] = {}
    for method in progress(list(specs), desc="explanations: attributions", total=len(specs)):
        try:
            explainer = specs[method].build(shared.model)
            rows, calls, start = explainer.counter.rows, explainer.counter.calls, time.perf_counter()
            values[method] = out[f"attr/{method}"] = explainer.explain(x, target, ids)
        except ExplainerError as err:
            out[f"error/{method}"] = np.array(str(err))
            continue
        explainers[method] = explainer
        out[f"cost/{method}"] = np.array([time.perf_counter() - start, explainer.counter.rows - rows,
                                          explainer.counter.calls - calls], np.float64)
        out[f"notes/{method}"] = np.array(explainer.notes, dtype=str)
        out[f"fallback/{method}"] = np.array(getattr(explainer, "fallback_reason", None) or "")
    if not values:
        return out
    if shared.deletion is not None:
        out.update(_faithfulness(shared, shared.deletion, x, target, ids, values))
    check = shared.check[(shared.check >= chunk.start) & (shared.check < chunk.stop)] - chunk.start
    if shared.infidelity is not None or shared.sensitivity is not None:
        for method in progress(list(values), desc="explanations: infidelity, sensitivity", total=len(values)):
            if shared.infidelity is not None:
                noise, samples = shared.infidelity
                out[f"infidelity/{method}"] = infidelity(shared.model, x, values[method], target, ids, noise=noise,
                                                         n_perturb=samples, seed=shared.seed,
                                                         memory_mb=shared.memory_mb)
            if shared.sensitivity is not None:
                s = shared.sensitivity
                out[f"sensitivity_max/{method}"] = sensitivity_max(
                    explainers[method], x[check], target[check], values[method][check], ids[check],
                    radius=s.radius, n_perturb=s.samples, seed=shared.seed, lower=s.lower, upper=s.upper,
                    perturbable=s.perturbable, memory_mb=shared.memory_mb) if len(check) else np.zeros(0)
    if shared.cascade is not None and len(check) and values:
        out.update(_randomization(shared, shared.cascade, x[check], target[check], ids[check],
                                  {m: v[check] for m, v in values.items()}, specs, progress))
    return out


def _faithfulness(shared: ChunkInputs, plan: Deletion, x: np.ndarray, target: np.ndarray, ids: np.ndarray,
                  values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    base = deletion_baseline(plan.kind, x, data_mean=plan.data_mean, fill=plan.fill, sigma=plan.sigma,
                             modality=shared.modality)
    curves = faithfulness_curves(shared.model, x, target, ids, values, base, steps=plan.steps,
                                 memory_mb=shared.memory_mb, seed=shared.seed)
    out = {"faithfulness/fractions": curves[RANDOM].fractions,
           "faithfulness/informative": informative(x, base).reshape(len(x), -1).sum(axis=1)}
    for method, c in curves.items():
        out[f"deletion/{method}"], out[f"insertion/{method}"] = c.deletion, c.insertion
    return out


def _randomization(shared: ChunkInputs, plan: Cascade, x: np.ndarray, target: np.ndarray, ids: np.ndarray,
                   originals: dict[str, np.ndarray], specs: dict[str, ExplainerSpec],
                   progress: Any) -> dict[str, np.ndarray]:
    mask = informative(x, reference_input(shared.model.bounds, plan.background, shared.modality, x))
    image = shared.modality == "image" and x.ndim == 4
    found = cascade_similarity(shared.model, {m: specs[m].build for m in originals}, originals, x, target, ids,
                               layers=plan.layers, steps=plan.steps, seed=shared.seed, mask=mask, image=image,
                               progress=progress)
    out = {f"randomization_error/{m}": np.array(err) for m, err in found.errors.items()}
    for method, similarity in found.similarity.items():
        out[f"randomization/{method}"] = similarity
        out[f"randomization_ssim/{method}"] = found.ssim[method]
    return out


def gather(store: ChunkStore, chunks: list[Chunk], methods: list[str], *, features: int) -> Gathered:
    """The saved chunks' outputs, in order, over all the explained samples (``features`` per sample). A method
    that failed on any chunk is left out (``errors``), and so is, from the randomization check, a method whose
    explainer failed on a randomized model (``randomization_errors``)."""
    arrays: dict[str, list[np.ndarray]] = {}
    errors: dict[str, str] = {}
    fractions: np.ndarray | None = None
    for _chunk, saved in iter_chunks(store, chunks):
        for name, value in saved.items():
            if name.startswith(("error/", "randomization_error/")):
                errors.setdefault(name, str(value))
            elif name == "faithfulness/fractions":
                fractions = value
            else:
                arrays.setdefault(name, []).append(value)
    ran = [m for m in methods if f"error/{m}" not in errors]

    def joined(prefix: str, names: list[str], axis: int = 0) -> dict[str, np.ndarray]:
        return {m: np.concatenate(arrays[f"{prefix}/{m}"], axis=axis) for m in names if f"{prefix}/{m}" in arrays}

    cost = {m: tuple(np.sum(arrays[f"cost/{m}"], axis=0)) for m in ran}
    out = Gathered(values=joined("attr", ran),
                   cost={m: (float(c[0]), int(c[1]), int(c[2])) for m, c in cost.items()},
                   notes=[str(note) for m in ran for notes in arrays[f"notes/{m}"] for note in notes],
                   fallback={m: next((str(f) for f in arrays[f"fallback/{m}"] if str(f)), "") for m in ran},
                   errors={m: errors[f"error/{m}"] for m in methods if m not in ran})
    if fractions is not None:
        deletion, insertion = joined("deletion", [*ran, RANDOM]), joined("insertion", [*ran, RANDOM])
        out.curves = {m: FaithfulnessCurves(fractions, deletion[m], insertion[m]) for m in deletion}
        counted = np.concatenate(arrays["faithfulness/informative"])
        out.informative_share = float(counted.sum() / (len(counted) * features))
    out.infidelity = joined("infidelity", ran)
    out.sensitivity = joined("sensitivity_max", ran)
    out.randomization_errors = {m: errors[f"randomization_error/{m}"] for m in ran
                                if f"randomization_error/{m}" in errors}
    cascade = [m for m in ran if m not in out.randomization_errors]
    out.randomization = joined("randomization", cascade, axis=1)
    out.randomization_ssim = joined("randomization_ssim", cascade, axis=1)
    return out
