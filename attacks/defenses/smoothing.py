"""Randomized smoothing as a defense of the ``defenses`` section: certified L2 accuracy (CERTIFY) and, beside it,
the empirical robust accuracy of the same smoothed classifier under EOT-PGD, at the same radii.

The work itself is ``attacks/smoothing.py``; this plugin picks the rows, runs it per noise level ``sigma`` in chunks
of ``chunk_size`` rows on the engine's chunk runner (``attacks/defenses/smoothing_chunks.py``: Ray tasks with
``--backend ray``, kept by ``--resume``), and
records metrics, one table and one figure per sigma, and a finding should a certificate ever be broken (empirical
below certified: a bug, or a certificate among the ``alpha`` share allowed to be wrong; never silent).

Metrics (relative to the section, so ``defenses.smoothing...`` in results.json), with one sigma:
``smoothing.l2.radius=<r>.certified_accuracy``, ``smoothing.l2.radius=<r>.empirical_robust_accuracy``,
``smoothing.abstain_rate``, ``smoothing.sigma``, ``smoothing.certificate_violations``; with several sigmas the
same names under ``smoothing.sigma=<s>.`` (e.g. ``smoothing.sigma=0.25.l2.radius=0.5.certified_accuracy``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from attacks.defenses.base import Defense
from audit.errors import ConfigError
from audit.keys import metric_key

if TYPE_CHECKING:
    from attacks.smoothing import CertifyResult, EmpiricalResult
    from audit.context import AuditContext
    from audit.model import ModelAdapter
    from audit.results import SectionResult


class RandomizedSmoothing(Defense):
    """Randomized smoothing (Cohen et al. 2019): certified L2 accuracy beside EOT-PGD empirical robust accuracy."""

    name = "smoothing"
    differentiable = True
    randomized = False  # not a transform the section attacks: it certifies and attacks the smoothed classifier itself
    evaluation: ClassVar[str] = "custom"

    def __init__(self, *, sigma: float | list[float] = 0.25, n0: int = 100, n: int = 1000, alpha: float = 0.001,
                 radii: list[float] | None = None, empirical: bool = True, steps: int = 20, eot_samples: int = 8,
                 n_eval: int = 200, max_samples: int = 100, batch: int = 1000, attack_batch: int = 32,
                 chunk_size: int = 64) -> None:
        super().__init__()
        sigmas = [sigma] if isinstance(sigma, (int, float)) else list(sigma)
        if not sigmas or any(not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0 for s in sigmas):
            raise ValueError(f"sigma must be a noise level > 0 or a list of them, got {sigma!r}")
        self.sigmas = [float(s) for s in dict.fromkeys(sigmas)]
        radii = [0.0, 0.25, 0.5, 0.75, 1.0] if radii is None else radii
        if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f"radii must be finite L2 radii >= 0, got {radii!r}")
        self.radii = sorted({float(r) for r in radii})
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        for label, value in (("n0", n0), ("n", n), ("steps", steps), ("eot_samples", eot_samples),
                             ("n_eval", n_eval), ("max_samples", max_samples), ("batch", batch),
                             ("attack_batch", attack_batch), ("chunk_size", chunk_size)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.n0, self.n, self.alpha = n0, n, float(alpha)
        self.empirical, self.steps, self.eot_samples, self.n_eval = empirical, steps, eot_samples, n_eval
        self.max_samples, self.batch, self.attack_batch = max_samples, batch, attack_batch
        self.chunk_size = chunk_size  # rows per chunk: one Ray task each, saved as it finishes (--resume keeps it)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("randomized smoothing is evaluated by certification (evaluate), not as a transform")

    def settings(self) -> dict[str, Any]:
        return {"defense": self.name, "sigma": self.sigmas, "n0": self.n0, "n": self.n, "alpha": self.alpha,
                "radii": self.radii, "empirical": self.empirical, "steps": self.steps,
                "eot_samples": self.eot_samples, "n_eval": self.n_eval, "max_samples": self.max_samples}

    def check_model(self, model: ModelAdapter) -> None:
        if self.empirical and not model.has_gradients:
            raise ConfigError(f"{self.config_key}.empirical",
                              f"the empirical side of smoothing attacks the smoothed classifier with EOT-PGD, which "
                              f"needs input gradients; the model ({model.kind}) has none. Set "
                              f"{self.config_key}.empirical: false to certify only (certification needs predictions "
                              "only), or audit a torch model")

    def max_radius(self, sigma: float) -> float:
        """The largest radius ``n`` draws can certify: every draw agreeing gives pA = alpha^(1/n)."""
        from attacks.smoothing import certified_radius

        return certified_radius(self.alpha ** (1 / self.n), sigma)

    # -- evaluation ----------------------------------------------------------------------------------
    def rows(self, ctx: AuditContext, rows: np.ndarray) -> np.ndarray:
        """At most ``max_samples`` of the section's rows (dataset indices), a seeded subset kept in order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) <= self.max_samples:
            return rows
        return np.sort(np.random.default_rng(ctx.seed).choice(rows, self.max_samples, replace=False))

    def evaluate(self, ctx: AuditContext, result: SectionResult, rows: np.ndarray) -> None:
        """Certify (and attack, with ``empirical``) the smoothed classifier on ``rows`` (dataset indices), in chunks
        of ``chunk_size`` rows on the run's backend (attacks/defenses/smoothing_chunks.py)."""
        from attacks.base import AttackNotApplicable, Domain
        from attacks.defenses.smoothing_chunks import SmoothingInputs, gather, smoothing_chunk
        from audit.engine.chunks import CHUNKS_DIR, ChunkStore, plan, run_chunks

        self.check_model(ctx.model)
        rows = self.rows(ctx, rows)
        try:
            domain: Domain | None = Domain.from_model_data(ctx.model, ctx.data)
        except AttackNotApplicable:
            domain = None  # unbounded inputs: the attack projects onto the L2 ball only
        shared = SmoothingInputs(model=ctx.model, x=ctx.data.x[rows], y=ctx.data.y[rows], ids=rows,
                                 sigmas=self.sigmas, n0=self.n0, n=self.n, alpha=self.alpha, batch=self.batch,
                                 seed=ctx.seed, empirical=self.empirical, radii=self.radii, steps=self.steps,
                                 eot_samples=self.eot_samples, n_eval=self.n_eval, attack_batch=self.attack_batch,
                                 domain=domain)
        chunks = plan(len(rows), self.chunk_size)
        folder = f"{CHUNKS_DIR}/{self.name}"
        store = ChunkStore(ctx.artifacts_dir / result.name / folder, ctx.fingerprints.get(result.name))
        ran = run_chunks(store, chunks, smoothing_chunk, shared, backend=ctx.backend, progress=ctx.progress,
                         desc=f"{self.name} chunks", device=str(ctx.device))
        backend = getattr(ctx.backend, "name", "local")
        if ran and backend != "local":
            where = ", ".join(f"{k} {v}" for k, v in ctx.backend.describe().items() if k != "backend" and v)
            result.notes.append(f"{self.name}: {ran} chunk(s) of {self.chunk_size} samples ran as {backend} tasks "
                                f"({where})")
        if ran < len(chunks):
            result.notes.append(f"{len(chunks) - ran} of {len(chunks)} chunks kept from the interrupted run "
                                f"(artifacts/{result.name}/{folder}/)")
        several = len(self.sigmas) > 1
        for sigma, (cert, emp) in zip(self.sigmas, gather(store, chunks, shared), strict=True):
            prefix = metric_key(self.name, ("sigma", float(sigma))) if several else self.name
            self._save(ctx, result, cert, emp, sigma)
            self._record(result, cert, emp, sigma, prefix, n_rows=len(rows))

    def _save(self, ctx: AuditContext, result: SectionResult, cert: CertifyResult, emp: EmpiricalResult | None,
              sigma: float) -> None:
        """Per-sample certificates (and empirical outcomes per radius) to ``artifacts/<section>/``."""
        path, rel = ctx.artifact_path(result.name, f"smoothing_sigma_{sigma:g}.npz")
        arrays: dict[str, np.ndarray] = {
            "ids": cert.ids, "y": cert.y, "prediction": cert.prediction, "radius": cert.radius,
            "p_lower": cert.p_lower, "counts0": cert.counts0, "counts": cert.counts,
            "radii": np.asarray(self.radii, dtype=np.float64)}
        if emp is not None:
            arrays["empirical_robust"] = np.stack([emp.robust[r] for r in self.radii])
            arrays["empirical_prediction"] = np.stack([emp.prediction[r] for r in self.radii])
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        result.artifacts[f"smoothing_sigma_{sigma:g}"] = rel

    def _record(self, result: SectionResult, cert: CertifyResult, emp: EmpiricalResult | None, sigma: float,
                prefix: str, *, n_rows: int) -> None:
        from attacks.smoothing import curve_rows, fmt_radius, smoothing_metrics

        for name, value in smoothing_metrics(cert, emp, self.radii, name=prefix).items():
            result.metric(name, value)
        curve = curve_rows(cert, emp, self.radii)
        limit = self.max_radius(sigma)
        # per radius: samples certified there that the attack fooled (a correct certificate cannot be broken)
        violations: list[int] = [int((cert.certified(r) & ~emp.robust[r]).sum()) if emp is not None else 0
                                 for r in self.radii]
        if emp is not None:
            result.metric(metric_key(prefix, "certificate_violations"), max(violations))
        tag = f"sigma={sigma:g}"
        rows = [[r, c, e, v if emp is not None else None] for (r, c, e), v in zip(curve, violations, strict=True)]
        how = (f"{n_rows} samples; CERTIFY with n0={self.n0}, n={self.n}, alpha={self.alpha:g} (abstained: "
               f"{float(cert.abstained.mean()):.1%}; radii above {limit:.3g} cannot be certified with n={self.n}); ")
        if emp is None:
            how += "empirical side not run (empirical: false)"
        else:
            how += (f"empirical: L2 PGD on the smoothed classifier, {self.steps} steps, gradient averaged over "
                    f"{self.eot_samples} noise draws, prediction by a vote of {self.n_eval} draws. Certified accuracy "
                    "is a lower bound and the empirical one an upper bound on the smoothed classifier's robust "
                    "accuracy; certified but broken: samples certified at the radius that the attack fooled (must "
                    "be 0)")
        result.table(f"smoothing_{tag}", f"Randomized smoothing ({tag}): certified vs empirical L2 robust accuracy",
                     ["L2 radius", "certified accuracy", "empirical robust accuracy (EOT-PGD)",
                      "certified but broken"], rows, description=how)
        series = [{"label": f"certified ({tag})", "x": [r[0] for r in curve], "y": [r[1] for r in curve]}]
        if emp is not None:
            series.append({"label": f"empirical, EOT-PGD ({tag})", "x": [r[0] for r in curve],
                           "y": [r[2] for r in curve], "style": "dashed"})
        result.figure({"name": f"smoothing_{tag}", "title": f"Randomized smoothing ({tag}): robust accuracy vs L2 "
                       "radius", "kind": "line", "xlabel": "L2 radius", "ylabel": "robust accuracy",
                       "series": series})
        if any(r > limit for r in self.radii):
            result.notes.append(f"smoothing {tag}: radii above {limit:.3g} certify nothing by construction with "
                                f"n={self.n}, alpha={self.alpha:g}; raise n for larger certified radii")
        if emp is None:
            return
        below = [(float(r or 0), float(c or 0), e) for r, c, e in curve if e is not None and c is not None and e < c]
        broken = [(r, v) for r, v in zip(self.radii, violations, strict=True) if v]
        if not (below or broken):
            return
        where = ", ".join(f"radius {fmt_radius(r)}: {v} of {n_rows}" for r, v in broken)
        aggregate = ("; empirical robust accuracy below certified accuracy at " + ", ".join(
            f"radius {fmt_radius(r)} ({e:.3f} < {c:.3f})" for r, c, e in below)) if below else ""
        result.finding("high" if below else "medium",
                       f"randomized smoothing ({tag}): the EOT-PGD attack broke certified samples ({where})"
                       f"{aggregate}. A correct certificate cannot be broken: this is a bug in the certification "
                       f"or the radius, unless it is one of the alpha={self.alpha:g} share of certificates allowed "
                       f"to be wrong or the vote of n_eval={self.n_eval} draws erred on a sample near the boundary; "
                       "do not trust these certificates until it is understood",
                       code="defenses.smoothing.certificate_broken",
                       metric=metric_key(result.name, prefix, "certificate_violations"), value=float(max(violations)))
