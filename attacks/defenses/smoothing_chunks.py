"""Randomized-smoothing certification in chunks: what one chunk computes and saves, and the gathering back.

A chunk is a slice of the rows the ``smoothing`` defense certifies (``audit.engine.chunks.plan``), run by the
engine's chunk runner like every chunked section: in this process, or as a Ray task with ``--backend ray`` (the
model and the rows put into the object store once), saved to ``artifacts/<section>/chunks/smoothing/<k>.npz`` as it
finishes, kept by ``--resume``. Per noise level ``sigma`` (by position ``i`` in the defense's list) a chunk returns

- ``<i>/counts0``, ``<i>/counts``: CERTIFY's selection and estimation counts (rows, classes);
- with the empirical side, ``<i>/robust`` and ``<i>/prediction``: (radii, rows) the EOT-PGD outcome per radius.

Every noise draw of ``attacks/smoothing.py`` is keyed by (seed, stream, sample id, block), so a sample's counts and
its attack do not depend on the chunk it falls in or on the backend: the gathered certificates are the one-pass
ones. The EOT-PGD batches (``attack_batch`` rows) are cut inside each chunk, so a ``chunk_size`` that is a multiple
of ``attack_batch`` keeps them as in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.engine.chunks import Chunk, ChunkStore, iter_chunks

if TYPE_CHECKING:
    from attacks.base import Domain
    from attacks.smoothing import CertifyResult, EmpiricalResult
    from audit.model import ModelAdapter


@dataclass
class SmoothingInputs:
    """Everything a chunk needs, shipped once (Ray: one object in the store for all chunks)."""

    model: ModelAdapter
    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray  # dataset rows: the noise keys
    sigmas: list[float]
    n0: int
    n: int
    alpha: float
    batch: int
    seed: int
    empirical: bool
    radii: list[float]
    steps: int
    eot_samples: int
    n_eval: int
    attack_batch: int
    domain: Domain | None


def smoothing_chunk(shared: SmoothingInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """CERTIFY (and EOT-PGD with ``empirical``) at every sigma on one chunk of rows."""
    from attacks.smoothing import certify, smoothed_empirical

    part = slice(chunk.start, chunk.stop)
    x, y, ids = shared.x[part], shared.y[part], shared.ids[part]
    out: dict[str, np.ndarray] = {}
    for i, sigma in enumerate(shared.sigmas):
        cert = certify(shared.model, x, y, sigma=sigma, n0=shared.n0, n=shared.n, alpha=shared.alpha,
                       batch=shared.batch, seed=shared.seed, ids=ids, progress=progress)
        out[f"{i}/counts0"], out[f"{i}/counts"] = cert.counts0, cert.counts
        if shared.empirical:
            emp = smoothed_empirical(shared.model, x, y, sigma=sigma, radii=shared.radii, steps=shared.steps,
                                     eot_samples=shared.eot_samples, n_eval=shared.n_eval, batch=shared.batch,
                                     attack_batch=shared.attack_batch, seed=shared.seed, ids=ids,
                                     domain=shared.domain, progress=progress)
            out[f"{i}/robust"] = np.stack([emp.robust[r] for r in emp.radii])
            out[f"{i}/prediction"] = np.stack([emp.prediction[r] for r in emp.radii])
    return out


def ordered_radii(radii: list[float]) -> list[float]:
    """The radii ``smoothed_empirical`` attacks at, in its order (radius 0, the clean vote, first)."""
    return sorted({0.0, *(float(r) for r in radii)})


def gather(store: ChunkStore, chunks: list[Chunk], shared: SmoothingInputs,
           ) -> list[tuple[CertifyResult, EmpiricalResult | None]]:
    """Per sigma, the certificates (and the empirical outcome) over all the rows, from the saved chunks. The
    empirical outcome's adversarial points are not kept (the defense records outcomes per radius, not points)."""
    from attacks.smoothing import EmpiricalResult, certificates

    parts: dict[str, list[np.ndarray]] = {}
    for _chunk, arrays in iter_chunks(store, chunks):
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value)
    radii = ordered_radii(shared.radii)
    out: list[tuple[CertifyResult, EmpiricalResult | None]] = []
    for i, sigma in enumerate(shared.sigmas):
        counts0, counts = np.concatenate(parts[f"{i}/counts0"]), np.concatenate(parts[f"{i}/counts"])
        cert = certificates(counts0, counts, shared.y, shared.ids, sigma=sigma, n0=shared.n0, n=shared.n,
                            alpha=shared.alpha, seed=shared.seed)
        emp = None
        if shared.empirical:
            robust = np.concatenate(parts[f"{i}/robust"], axis=1)
            prediction = np.concatenate(parts[f"{i}/prediction"], axis=1)
            settings = {"attack": "eot_pgd", "norm": "l2", "steps": shared.steps, "eot_samples": shared.eot_samples,
                        "step_size": f"{2.5 / shared.steps:.4g} * radius", "n_eval": shared.n_eval, "sigma": sigma,
                        "loss": "smoothed ce", "random_start": False}
            emp = EmpiricalResult(radii=radii, y=np.asarray(shared.y, dtype=np.int64).reshape(-1),
                                  robust={r: robust[j] for j, r in enumerate(radii)},
                                  prediction={r: prediction[j] for j, r in enumerate(radii)}, x_adv={},
                                  settings=settings)
        out.append((cert, emp))
    return out
