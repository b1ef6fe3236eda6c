"""The ``ood`` section: out-of-distribution detection (max softmax, max logit, energy, ODIN, Mahalanobis, KNN,
autoencoder) against user-named, synthetic and near (corrupted) OOD sets, and calibration clean and under
corruption, before and after temperature scaling. Metric keys: docs/shift.md."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from audit.config import DataConfig
from audit.engine.chunks import CHUNKS_DIR, DEFAULT_CHUNK_SIZE, ChunkStore, plan, run_chunks
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult
from audit.shift import ood_record as rec
from audit.shift import ood_setup as setup
from audit.shift.catalog import DETECTORS, IMAGE_CORRUPTIONS, SEVERITIES, did_you_mean

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.shift.ood_eval import OODInputs

NEAR_DEFAULT = ("gaussian_noise", "defocus_blur", "contrast")


class OODSource(Params):
    name: str = Field(description="the set's name in metric keys (letters, digits, _)")
    data: DataConfig = Field(description="the same keys as the config's data block (source, path, ...)")
    resize: list[int] | None = Field(None, description="[H, W]: resize images to the model's input size (area)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not value.replace("_", "").isalnum() or value in ("in", "calibration") or "." in value:
            raise ValueError("give a name of letters, digits and _ (not 'in' or 'calibration')")
        return value


class AutoencoderParams(Params):
    hidden: list[int] = Field(default=[128, 32], description="encoder layer widths (the decoder mirrors them)")
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)


class OODParams(Params):
    detectors: list[str] | None = Field(None, description=f"detectors to run (default: every one that applies "
                                        f"to the model): {', '.join(DETECTORS)}")
    ood_data: list[OODSource] = Field([], description="OOD sets from data sources (same loaders as data:)")
    synthetic: list[Literal["uniform", "gaussian", "permuted"]] = Field(
        ["uniform", "gaussian", "permuted"], description="synthetic OOD sets made from the audited rows")
    near_ood: list[str] | None = Field(None, description=f"corruptions at near_severity as near-OOD sets (images; "
                                       f"default {list(NEAR_DEFAULT)})")
    near_severity: int = Field(5, ge=1, le=5)
    fit_data: DataConfig | None = Field(None, description="in-distribution data the feature detectors and the "
                                        "autoencoder fit on (default: the held-out part of the audited data)")
    holdout: float = Field(0.3, gt=0, lt=1, description="share of the audited rows held out: temperature scaling "
                           "(and, without fit_data, the detectors) fit on it; the rest is evaluated")
    feature_layer: str | None = Field(None, description="the module whose output Mahalanobis and KNN use "
                                      "(default: the input of the last Linear layer)")
    knn_k: int = Field(50, ge=1)
    mahalanobis_ridge: float = Field(1e-6, ge=0, description="added to the covariance's diagonal")
    energy_temperature: float = Field(1.0, gt=0)
    odin_temperature: float = Field(1000.0, gt=0)
    odin_eps: float = Field(0.0014, ge=0, description="ODIN's input step, in raw input units")
    autoencoder: AutoencoderParams = Field(AutoencoderParams(), description="the autoencoder detector's training")
    calibration_corruptions: list[str] | None = Field(None, description="corruptions for calibration under shift "
                                                      "(default: the 15 ImageNet-C ones that apply)")
    severities: list[int] = Field(list(SEVERITIES))
    n_bins: int = Field(15, ge=2, le=100, description="equal-width confidence bins of the ECE")
    max_samples: int | None = Field(2000, ge=2, description="audited rows used (stratified); also caps each OOD set")
    max_fit_samples: int | None = Field(5000, ge=2, description="fit_data rows used (stratified)")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1)
    fpr_warn: float = Field(0.5, gt=0, le=1, description="a finding when the best detector's mean FPR at 95% TPR "
                            "is above this")
    confident_warn: float = Field(0.25, ge=0, le=1, description="a finding when more than this share of an OOD "
                                  "set gets a confidence above the in-distribution median")

    @field_validator("detectors")
    @classmethod
    def _detectors(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in DETECTORS:
                raise ValueError(f"unknown detector {name!r}{did_you_mean(name, DETECTORS)}; choose from "
                                 f"{list(DETECTORS)}")
        if value is not None and not value:
            raise ValueError("give at least one detector, or leave the key out for all that apply")
        return value

    @field_validator("ood_data")
    @classmethod
    def _unique(cls, value: list[OODSource]) -> list[OODSource]:
        names = [s.name for s in value]
        taken = [n for n in names if names.count(n) > 1 or n in ("uniform", "gaussian", "permuted")
                 or n.startswith("near_")]
        if taken:
            raise ValueError(f"OOD set names must be unique and not uniform, gaussian, permuted or near_*: "
                             f"{taken[0]!r}")
        return value

    @field_validator("near_ood", "calibration_corruptions")
    @classmethod
    def _corruptions(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in IMAGE_CORRUPTIONS:
                raise ValueError(f"unknown corruption {name!r}{did_you_mean(name, IMAGE_CORRUPTIONS)}")
        return value

    @field_validator("severities")
    @classmethod
    def _severities(cls, value: list[int]) -> list[int]:
        if not value or any(s not in SEVERITIES for s in value):
            raise ValueError(f"severities must be a non-empty list from {list(SEVERITIES)}")
        return sorted(set(value))


class OODSection(SectionPlugin):
    """Out-of-distribution detection (softmax, logit, energy, ODIN, Mahalanobis, KNN, autoencoder) and calibration
    under corruption with temperature scaling."""

    name = "ood"
    title = "Out-of-distribution detection and calibration"
    ParamsModel = OODParams
    params: OODParams
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.auroc": "higher", "*.aupr_in": "higher", "*.aupr_out": "higher", "*.fpr_at_95_tpr": "lower",
        "best_auroc": "higher", "*confident_share": "lower", "calibration.*ece*": "lower",
        "calibration.*brier*": "lower", "calibration.*nll*": "lower", "calibration.*accuracy": "higher",
        "calibration.predictions_changed": "lower", "*": None,
    }

    def _key(self, param: str) -> str:
        return f"sections.{self.section}.{param}"

    def validate(self, ctx: AuditContext) -> None:
        """Before any section runs: the detectors apply, the feature layer exists, every OOD and fit set fits the
        model's input."""
        setup.check_task(ctx, self._key("plugin"))
        self._detectors(ctx, [])
        for i, source in enumerate(self.params.ood_data):
            self._ood_set(ctx, i, source)
        if self.params.fit_data is not None:
            setup.load_fit(ctx, self.params.fit_data, self._key("fit_data"), self.params.max_fit_samples)
        self._corruption_lists(ctx)

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        from audit.shift.ood_eval import reduce_chunks

        p, data = self.params, ctx.data
        notes: list[str] = []
        detectors = self._detectors(ctx, notes)
        hold, evaluate = setup.split_rows(data.y, p.max_samples, p.holdout, ctx.seed)
        shared = self._shared(ctx, detectors, evaluate, hold, notes)
        detectors = list(shared.detectors)  # less a default detector these fit rows cannot fit
        chunks = plan(shared.length, p.chunk_size)
        store = ChunkStore(ctx.artifacts_dir / self.section / CHUNKS_DIR, ctx.fingerprints.get(self.section))
        from audit.shift.ood_eval import evaluate_chunk

        ran = run_chunks(store, chunks, evaluate_chunk, shared, backend=ctx.backend, progress=ctx.progress,
                         desc="chunks", device=str(ctx.device))
        if ran < len(chunks):
            notes.append(f"{len(chunks) - ran} of {len(chunks)} chunks kept from the interrupted run "
                         f"(artifacts/{self.section}/{CHUNKS_DIR}/)")
        arrays = reduce_chunks(store, chunks)
        result.metric("n_in_distribution", len(evaluate))
        self._record_ood(result, shared, arrays, detectors)
        self._record_calibration(ctx, result, shared, arrays, hold, evaluate)
        result.notes.extend(notes)

    # -- setup -----------------------------------------------------------------------------------
    def _detectors(self, ctx: AuditContext, notes: list[str]) -> list[str]:
        chosen = setup.applicable(ctx, self.params.detectors, self._key("detectors"), notes)
        if any(d in ("mahalanobis", "knn") for d in chosen):
            layer = setup.feature_layer(ctx, self.params.feature_layer, self._key("feature_layer"))
            if layer is None:
                notes.append("mahalanobis and knn skipped: the network has no Linear layer to take the penultimate "
                             "features from; name one with feature_layer")
                chosen = [d for d in chosen if d not in ("mahalanobis", "knn")]
        return chosen

    def _ood_set(self, ctx: AuditContext, i: int, source: OODSource) -> np.ndarray:
        return setup.load_ood_set(ctx, name=source.name, config=source.data, resize=source.resize,
                                  key=self._key(f"ood_data.{i}"), limit=self.params.max_samples)

    def _corruption_lists(self, ctx: AuditContext) -> tuple[list[str], list[str]]:
        p = self.params
        near = setup.corruption_list(ctx, p.near_ood, list(NEAR_DEFAULT), self._key("near_ood"))
        cal = setup.corruption_list(ctx, p.calibration_corruptions, None, self._key("calibration_corruptions"))
        return near, cal

    def _shared(self, ctx: AuditContext, detectors: list[str], evaluate: np.ndarray, hold: np.ndarray,
                notes: list[str]) -> OODInputs:
        from audit.shift.ood_eval import OODInputs

        p, data = self.params, ctx.data
        near, cal = self._corruption_lists(ctx)
        lower, upper, pixel_scale = setup.ranges(ctx, data.x[evaluate])
        users = {s.name: self._ood_set(ctx, i, s) for i, s in enumerate(p.ood_data)}
        shared = OODInputs(model=ctx.model, x_in=data.x[evaluate], ids_in=evaluate, detectors=tuple(detectors),
                           seed=ctx.seed, section=self.section, batch_size=ctx.batch_size, lower=lower, upper=upper,
                           image=data.modality == "image", user_sets=users, synthetic=tuple(p.synthetic),
                           near=tuple(near), near_severity=p.near_severity, calibration=tuple(cal),
                           severities=tuple(p.severities), pixel_scale=pixel_scale,
                           energy_temperature=p.energy_temperature, odin_temperature=p.odin_temperature,
                           odin_eps=p.odin_eps, knn_k=p.knn_k)
        if p.fit_data is not None:
            fit = setup.load_fit(ctx, p.fit_data, self._key("fit_data"), p.max_fit_samples)
            fit_x, fit_y, fit_key, origin = fit.x, fit.y, self._key("fit_data"), f"fit_data ({fit.name})"
        else:
            fit_x, fit_y, fit_key = data.x[hold], data.y[hold], self._key("holdout")
            origin = f"the {len(hold)} held-out audited rows"
        notes.append(f"in-distribution: {len(evaluate)} audited rows evaluated, {len(hold)} held out for temperature "
                     f"scaling; feature detectors and the autoencoder fit on {origin}")
        setup.fit_detectors(ctx, shared, fit_x, fit_y, fit_key=fit_key, layer=p.feature_layer,
                            ridge=p.mahalanobis_ridge, autoencoder=p.autoencoder.model_dump(), notes=notes,
                            k_key=self._key("knn_k"), named=p.detectors is not None)
        return shared

    # -- recording -------------------------------------------------------------------------------
    def _record_ood(self, result: SectionResult, shared: OODInputs, arrays: dict[str, np.ndarray],
                    detectors: list[str]) -> None:
        from audit.shift.calibration import softmax
        from audit.shift.ood_metrics import confident_share, detection_metrics

        scores = {src: {d: arrays[f"{src}/{d}"] for d in detectors} for src in shared.sources()}
        conf = {src: softmax(arrays[f"{src}/logits"]).max(axis=1) for src in shared.sources()}
        metrics = {src: {d: detection_metrics(scores["in"][d], scores[src][d]) for d in detectors}
                   for src in scores if src != "in"}
        confident = {src: confident_share(conf["in"], conf[src]) for src in metrics}
        for src, by in metrics.items():
            result.metric(f"{src}.n_samples", len(scores[src][detectors[0]]))
            result.metric(f"{src}.confident_share", confident[src])
            for det, m in by.items():
                for key, value in m.as_dict().items():
                    result.metric(f"{src}.{det}.{key}", value)
        means = rec.summary(metrics, detectors)
        for det, mean in means.items():
            for key, number in mean.items():
                result.metric(f"{det}.{key}", number)
        best = max(detectors, key=lambda d: means[d]["auroc"])
        result.metric("best_auroc", means[best]["auroc"])
        result.metric("best_fpr_at_95_tpr", means[best]["fpr_at_95_tpr"])
        result.metric("confident_share", float(np.mean(list(confident.values()))))
        result.notes.append(f"best detector: {best} (AUROC {means[best]['auroc']:.3f}, FPR at 95% TPR "
                            f"{means[best]['fpr_at_95_tpr']:.3f}, means over {len(metrics)} OOD sets: "
                            f"{', '.join(metrics)}). Scores: higher = more out-of-distribution")
        result.table("detection", "OOD detection per set and detector",
                     ["OOD set", "detector", "AUROC", "AUPR-in", "AUPR-out", "FPR at 95% TPR", "confident share"],
                     rec.metric_rows(metrics, confident), description="confident share: OOD inputs classified with "
                     "a max softmax above the in-distribution median")
        result.table("summary", "Detectors: means over the OOD sets", ["detector", "AUROC", "AUPR-in", "AUPR-out",
                     "FPR at 95% TPR"], [[d, *means[d].values()] for d in detectors])
        result.figure(rec.roc_figure(scores, detectors))
        result.figure(rec.histogram_figure(scores, best))
        self._ood_findings(result, means[best], best, confident)

    def _ood_findings(self, result: SectionResult, best: dict[str, float], name: str,
                      confident: dict[str, float]) -> None:
        p = self.params
        if best["fpr_at_95_tpr"] > p.fpr_warn:
            result.finding("medium", f"even the best OOD detector ({name}) accepts {best['fpr_at_95_tpr']:.0%} of OOD "
                           "inputs when it keeps 95% of in-distribution ones", code="ood_undetected",
                           metric=f"{self.section}.{name}.fpr_at_95_tpr", value=best["fpr_at_95_tpr"])
        for src, share in confident.items():
            if share > p.confident_warn:
                result.finding("medium" if share < 0.5 else "high", f"{share:.0%} of the {src} OOD inputs get a "
                               "confidence above the in-distribution median: the model is confidently wrong "
                               "off its distribution", code="ood_overconfident",
                               metric=f"{self.section}.{src}.confident_share", value=share)

    def _record_calibration(self, ctx: AuditContext, result: SectionResult, shared: OODInputs,
                            arrays: dict[str, np.ndarray], hold: np.ndarray, evaluate: np.ndarray) -> None:
        from audit.shift.calibration import fit_temperature, summarize

        p, y_hold, y = self.params, ctx.data.y[hold], ctx.data.y[evaluate]
        temperature = fit_temperature(ctx.clean_logits()[hold].numpy(), y_hold)
        if not (math.isfinite(temperature) and temperature > 0):
            result.notes.append(f"temperature scaling failed (T = {temperature}); calibration after scaling skipped")
            temperature = 1.0
        clean = summarize(arrays["in/logits"], y, temperature, p.n_bins)
        shifted = {}
        for s in shared.severities if shared.calibration else ():
            logits = np.concatenate([arrays[f"cal/{c}/{s}"] for c in shared.calibration])
            shifted[s] = summarize(logits, np.tile(y, len(shared.calibration)), temperature, p.n_bins)
        changed = clean.predictions_changed + sum(c.predictions_changed for c in shifted.values())
        result.metric("calibration.temperature", temperature)
        result.metric("calibration.predictions_changed", changed)
        for prefix, cal in (("calibration", clean), *((f"calibration.severity={s}", c) for s, c in shifted.items())):
            for key in ("accuracy", "ece", "ece_scaled", "brier", "brier_scaled", "nll", "nll_scaled"):
                result.metric(f"{prefix}.{key}", getattr(cal, key))
        if shifted:
            result.metric("calibration.mean_corrupted_ece", float(np.mean([c.ece for c in shifted.values()])))
            result.metric("calibration.mean_corrupted_ece_scaled",
                          float(np.mean([c.ece_scaled for c in shifted.values()])))
        result.table("calibration", f"Calibration ({p.n_bins} equal-width bins), before and after temperature "
                     f"scaling (T = {temperature:.3f})", ["data", "accuracy", "ECE", "ECE scaled", "Brier",
                     "Brier scaled", "NLL", "NLL scaled"], rec.calibration_rows(clean, shifted),
                     description=("severity s: the evaluated rows under each of " + ", ".join(shared.calibration) +
                                  " at s, pooled") if shifted else None)
        result.figure(rec.reliability_figure(clean, shifted, temperature))
        if shifted:
            result.figure(rec.ece_figure(clean, shifted))
        if changed:
            result.finding("high", f"temperature scaling changed {changed} predictions; it must change none",
                           code="temperature_changed_predictions", metric=f"{self.section}."
                           "calibration.predictions_changed", value=changed)
        result.notes.append(f"temperature T = {temperature:.3f} fitted by L-BFGS on the NLL of {len(hold)} held-out "
                            f"clean rows; ECE on the {len(evaluate)} evaluated rows {clean.ece:.4f} -> "
                            f"{clean.ece_scaled:.4f}; predictions changed: {changed}")
