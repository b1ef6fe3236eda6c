"""The robustness section in chunks: what one chunk computes and saves, and the reduction back to one
``NormEvaluation`` per norm.

``evaluate_chunk`` runs ``evaluate_norm`` (every attack at every eps, the minimal-norm attacks on
their samples) on one chunk of the section's samples and returns its per-sample outputs as flat
arrays (``audit.engine.chunks`` saves them to ``artifacts/<section>/chunks/<k>.npz``):

- ``<norm>/clean_correct``, ``<norm>/min_eps``, ``<norm>/nonfinite``
- ``<norm>/run/<attack>/<eps>/{success,perturbation,margin,nonfinite,seconds}``, ``success_query`` (score-based
  attacks: the query that fooled each sample), and ``x_adv`` for
  the chunk's ``keep`` rows only (the red-flag check samples, which continue from them)
- ``<norm>/minimal/<attack>/{index,success,perturbation,nonfinite,x_adv,seconds}``
- ``<norm>/worst/<eps>/{robust,fooled_by,size,x_adv}``: the per-sample worst case, the adversarial
  examples themselves included

``reduce_chunks`` streams the chunk files in order into full-length per-sample arrays; the
worst-case adversarial examples go to one ``.npy`` per (norm, eps) in the section's artifacts and
come back memory-mapped, so memory follows the chunk size, not the number of samples. The
chunk's random draws come from ``chunk_seed(run seed, section, norm, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attacks.base import Attack, AttackOutput, Domain, Norm
from attacks.evaluate import NormEvaluation, evaluate_norm
from audit.engine.chunks import Chunk, ChunkStore, NpyWriter, chunk_seed, iter_chunks, seed_all

if TYPE_CHECKING:
    from audit.model import ModelAdapter


@dataclass
class NormPlan:
    """What to run for one norm; positions index the section's list of samples."""

    norm: Norm
    eps: list[float]
    attacks: list[Attack]
    minimal_attacks: list[Attack]
    minimal_index: np.ndarray  # samples the minimal-norm attacks get
    keep: np.ndarray  # samples whose per-attack adversarial inputs are saved (the red-flag check samples)


@dataclass
class ChunkInputs:
    """Everything a chunk needs, shipped once (Ray: one object in the store for all chunks)."""

    model: ModelAdapter
    x: np.ndarray  # (n, ...) the section's samples
    y: np.ndarray  # (n,)
    clean_pred: np.ndarray  # (n,)
    domain: Domain
    norms: list[NormPlan]
    seed: int
    section: str
    batch_size: int


def key(e: float) -> str:
    """The eps part of an array name (exact: repr of the float)."""
    return repr(float(e))


def evaluate_chunk(shared: ChunkInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """Every norm's attacks on one chunk; returns its per-sample outputs (see the module docstring)."""
    rows = chunk.rows
    x, y, pred = shared.x[chunk.start : chunk.stop], shared.y[rows], shared.clean_pred[rows]
    out: dict[str, np.ndarray] = {}
    for plan in shared.norms:
        seed_all(chunk_seed(shared.seed, shared.section, plan.norm, chunk.k))
        ev = evaluate_norm(shared.model, x, y, norm=plan.norm, eps=plan.eps, attacks=plan.attacks,
                           minimal_attacks=plan.minimal_attacks,
                           minimal_index=np.flatnonzero(np.isin(rows, plan.minimal_index)),
                           domain=shared.domain, clean_pred=pred, batch_size=shared.batch_size, progress=progress)
        out.update(chunk_outputs(ev, keep=np.flatnonzero(np.isin(rows, plan.keep)), prefix=f"{plan.norm}/"))
    return out


def chunk_outputs(ev: NormEvaluation, *, keep: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """A chunk's ``NormEvaluation`` as flat named arrays (rows: the chunk's samples)."""
    n = len(ev.clean_correct)
    out: dict[str, np.ndarray] = {
        "clean_correct": ev.clean_correct,
        "min_eps": ev.min_eps if ev.min_eps is not None else np.where(ev.clean_correct, np.inf, 0.0),
        "nonfinite": ev.nonfinite if ev.nonfinite is not None else np.zeros(n, bool),
        "keep": keep,
    }
    for (name, e), run in ev.runs.items():
        base = f"run/{name}/{key(e)}/"
        out[base + "success"] = run.success
        out[base + "perturbation"] = run.perturbation
        out[base + "margin"] = run.margin if run.margin is not None else np.full(n, np.nan, np.float32)
        out[base + "nonfinite"] = run.nonfinite if run.nonfinite is not None else np.zeros(n, bool)
        out[base + "seconds"] = np.array(run.seconds)
        out[base + "batch"] = _batch_record(run.settings)
        out[base + "x_adv"] = run.x_adv[keep]
        if run.success_query is not None:
            out[base + "success_query"] = run.success_query
    for name, (index, run) in ev.minimal.items():
        base = f"minimal/{name}/"
        out[base + "index"] = index
        out[base + "success"] = run.success
        out[base + "perturbation"] = run.perturbation
        out[base + "nonfinite"] = run.nonfinite if run.nonfinite is not None else np.zeros(len(index), bool)
        out[base + "x_adv"] = run.x_adv
        out[base + "seconds"] = np.array(run.seconds)
        out[base + "batch"] = _batch_record(run.settings)
    for e in ev.eps:
        base = f"worst/{key(e)}/"
        out[base + "robust"] = ev.worst_robust[e]
        out[base + "fooled_by"] = ev.fooled_by[e].astype(str)
        out[base + "size"] = ev.worst_size[e]
        out[base + "x_adv"] = ev.worst_x_adv[e]
    return {prefix + k: v for k, v in out.items()}


def reduce_chunks(store: ChunkStore, chunks: list[Chunk], plan: NormPlan, *, n: int, input_shape: tuple[int, ...],
                  x_adv_path: Any) -> NormEvaluation:
    """One ``NormEvaluation`` over all ``n`` samples from the saved chunks, one chunk in memory at a time.

    ``x_adv_path(eps) -> Path``: where the worst-case adversarial examples at eps go (one ``.npy``);
    ``ev.worst_x_adv[eps]`` is that file, memory-mapped (copy-on-write). ``ev.runs[...].x_adv`` hold only
    the ``plan.keep`` rows (``ev.kept_rows``; read them with ``ev.run_x_adv``)."""
    p = f"{plan.norm}/"
    eps = sorted(plan.eps)
    clean_correct = np.zeros(n, bool)
    min_eps = np.zeros(n, np.float64)
    nonfinite = np.zeros(n, bool)
    runs = {(a.name, e): _Rows(n) for e in eps for a in plan.attacks}
    minimal: dict[str, _Subset] = {}
    worst = {e: _Worst(n) for e in eps}
    writers: dict[float, NpyWriter] = {}
    kept: list[np.ndarray] = []
    try:
        for chunk, arrays in iter_chunks(store, chunks):
            s = slice(chunk.start, chunk.stop)
            clean_correct[s] = arrays[p + "clean_correct"]
            min_eps[s] = arrays[p + "min_eps"]
            nonfinite[s] = arrays[p + "nonfinite"]
            kept.append(chunk.start + arrays[p + "keep"])
            for (a, e), acc in runs.items():
                acc.add(s, arrays, f"{p}run/{a}/{key(e)}/")
            for attack in plan.minimal_attacks:
                base = f"{p}minimal/{attack.name}/"
                if base + "index" in arrays:  # absent: none of its samples in this chunk was clean-correct
                    minimal.setdefault(attack.name, _Subset()).add(chunk.start, arrays, base)
            for e, w in worst.items():
                base = f"{p}worst/{key(e)}/"
                w.robust[s] = arrays[base + "robust"]
                w.fooled_by[s] = arrays[base + "fooled_by"]
                w.size[s] = arrays[base + "size"]
                block = arrays[base + "x_adv"]
                if e not in writers:
                    writers[e] = NpyWriter(Path(x_adv_path(e)), (n, *input_shape), block.dtype)
                writers[e].write(block)
            del arrays
        worst_x_adv = {e: writer.close() for e, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.abort()
    attacks = {a.name: a for a in [*plan.attacks, *plan.minimal_attacks]}
    ev = NormEvaluation(norm=plan.norm, eps=eps, clean_correct=clean_correct, attacks=attacks)
    ev.kept_rows = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    for (a, e), acc in runs.items():
        attack = attacks[a]
        x_adv = np.concatenate(acc.x_adv) if acc.x_adv else np.zeros((0, *input_shape), np.float32)
        ev.runs[(a, e)] = AttackOutput(attack=a, norm=plan.norm, eps=e, x_adv=x_adv, success=acc.success,
                                       perturbation=acc.perturbation, seconds=acc.seconds,
                                       settings=_batch_settings(attack.settings(), acc.batch),
                                       queries=attack.queries_per_sample(), margin=acc.margin,
                                       nonfinite=acc.nonfinite,
                                       success_query=acc.success_query if acc.counted else None)
    for attack in plan.minimal_attacks:
        name = attack.name
        if name not in minimal:
            continue
        sub = minimal[name]
        ev.minimal[name] = (np.concatenate(sub.index), AttackOutput(
            attack=name, norm=plan.norm, eps=None, x_adv=np.concatenate(sub.x_adv),
            success=np.concatenate(sub.success), perturbation=np.concatenate(sub.perturbation),
            seconds=sub.seconds, settings=_batch_settings(attack.settings(), sub.batch),
            queries=attack.queries_per_sample(),
            nonfinite=np.concatenate(sub.nonfinite)))
    for e, w in worst.items():
        ev.worst_robust[e] = w.robust
        ev.fooled_by[e] = w.fooled_by
        ev.worst_size[e] = w.size
        if e in worst_x_adv:
            ev.worst_x_adv[e] = worst_x_adv[e]
    ev.min_eps = min_eps
    ev.nonfinite = nonfinite
    return ev


class _Rows:
    """One bounded attack at one eps, over all n samples, filled chunk by chunk."""

    def __init__(self, n: int) -> None:
        self.success = np.zeros(n, bool)
        self.perturbation = np.zeros(n, np.float32)
        self.margin = np.full(n, np.nan, np.float32)
        self.nonfinite = np.zeros(n, bool)
        self.seconds = 0.0
        self.x_adv: list[np.ndarray] = []  # the kept rows only
        self.success_query = np.full(n, np.inf)  # score-based attacks: the query that fooled each sample
        self.counted = False
        self.batch: list[str] = []  # per chunk: the batch size the attack ran at, or its out-of-memory halvings

    def add(self, s: slice, arrays: dict[str, np.ndarray], base: str) -> None:
        self.success[s] = arrays[base + "success"]
        self.perturbation[s] = arrays[base + "perturbation"]
        self.margin[s] = arrays[base + "margin"]
        self.nonfinite[s] = arrays[base + "nonfinite"]
        self.seconds += float(arrays[base + "seconds"])
        self.x_adv.append(arrays[base + "x_adv"])
        if base + "success_query" in arrays:
            self.success_query[s] = arrays[base + "success_query"]
            self.counted = True
        if base + "batch" in arrays:
            self.batch.append(str(arrays[base + "batch"]))


class _Subset:
    """One minimal-norm attack on its samples, gathered chunk by chunk."""

    def __init__(self) -> None:
        self.index: list[np.ndarray] = []
        self.success: list[np.ndarray] = []
        self.perturbation: list[np.ndarray] = []
        self.nonfinite: list[np.ndarray] = []
        self.x_adv: list[np.ndarray] = []
        self.seconds = 0.0
        self.batch: list[str] = []

    def add(self, start: int, arrays: dict[str, np.ndarray], base: str) -> None:
        self.index.append(start + arrays[base + "index"])
        self.success.append(arrays[base + "success"])
        self.perturbation.append(arrays[base + "perturbation"])
        self.nonfinite.append(arrays[base + "nonfinite"])
        self.x_adv.append(arrays[base + "x_adv"])
        self.seconds += float(arrays[base + "seconds"])
        if base + "batch" in arrays:
            self.batch.append(str(arrays[base + "batch"]))


class _Worst:
    def __init__(self, n: int) -> None:
        self.robust = np.zeros(n, bool)
        self.fooled_by = np.empty(n, object)
        self.size = np.zeros(n, np.float32)


def _batch_record(settings: dict[str, Any]) -> np.ndarray:
    """What a chunk keeps of an attack's batch size: the out-of-memory halvings ('64 -> 32') or the size."""
    return np.array(str(settings.get("out_of_memory_backoff") or settings.get("batch_size", "")))


def _batch_settings(settings: dict[str, Any], records: list[str]) -> dict[str, Any]:
    """The attack's settings with the batch size it ran at over every chunk: the smallest, and the distinct
    out-of-memory halvings (one per chunk where it had to back off)."""
    records = [r for r in records if r]
    if not records:
        return settings
    out = {**settings, "batch_size": min(int(r.split(" -> ")[-1]) for r in records)}
    chains = list(dict.fromkeys(r for r in records if " -> " in r))
    if chains:
        out["out_of_memory_backoff"] = "; ".join(chains)
    return out
