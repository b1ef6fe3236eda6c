"""The ``corruptions`` section: accuracy under the common corruptions of Hendrycks & Dietterich (2019) at
severities 1-5 (images) or under feature noise, missing values and feature shift (tabular), the mean corrupted
accuracy, corruption errors and mCE against a baseline run, and the comparison with adversarial robustness."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from audit.engine.chunks import CHUNKS_DIR, DEFAULT_CHUNK_SIZE, ChunkStore, plan, run_chunks
from audit.errors import ConfigError
from audit.keys import metric_key
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult, Severity
from audit.shift import planning, record
from audit.shift.catalog import IMAGE_CORRUPTIONS, SEVERITIES, TABULAR_SHIFTS, did_you_mean, in_mce

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.shift.evaluate import ChunkInputs, Predictions, ShiftPlan
    from audit.shift.mce import Baseline

KNOWN = (*IMAGE_CORRUPTIONS, *TABULAR_SHIFTS)


class TabularShiftParams(Params):
    noise: list[float] = Field(default=[0.1, 0.25, 0.5, 0.75, 1.0],
                               description="feature_noise: std of the added Gaussian noise in spreads, by severity")
    missing: list[float] = Field(default=[0.05, 0.1, 0.2, 0.3, 0.5],
                                 description="missing_values: share of perturbable values going missing, by severity")
    imputation: Literal["auto", "model", "mean", "median", "zero"] = Field(
        default="auto", description="missing values: model = NaN goes to the model (it imputes); mean / median / zero "
        "over the audited rows; auto = model when it returns finite scores on NaN, else mean")
    shift_features: list[str] = Field(default=[], description="feature_shift: the features to shift, one at a time")
    shift_mode: Literal["shift", "scale"] = Field(
        default="shift", description="feature_shift: add k spreads, or multiply the deviations from the mean")
    shift: list[float] = Field(default=[0.25, 0.5, 1.0, 1.5, 2.0], description="spreads added, one per severity")
    scale: list[float] = Field(default=[1.25, 1.5, 2.0, 2.5, 3.0], description="factors (shift_mode: scale)")
    spread: dict[str, float] = Field(default={}, description="declared spread per feature (default: its std over "
                                     "the audited rows)")

    @field_validator("noise", "missing", "shift", "scale")
    @classmethod
    def _five(cls, value: list[float]) -> list[float]:
        if len(value) != len(SEVERITIES) or not all(math.isfinite(v) and v >= 0 for v in value):
            raise ValueError(f"give {len(SEVERITIES)} finite values >= 0, one per severity 1-5")
        return value


class CorruptionsParams(Params):
    corruptions: list[str] | None = Field(None, description="corruptions to run (default: every one that applies to "
                                          "the data: the 19 image corruptions, or the tabular shifts)")
    severities: list[int] = Field(list(SEVERITIES), description="severities 1-5 to run")
    max_samples: int | None = Field(2000, ge=1, description="corrupt at most this many samples (stratified)")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="samples per chunk (saved as it finishes, "
                            "resumable, one Ray task each)")
    baseline: str | None = Field(None, description="a run directory whose corruptions section normalizes the "
                                 "corruption errors (mCE); same data, corruptions and severities")
    baseline_section: str | None = Field(None, description="the section to read in the baseline run (default: "
                                         "its corruptions section)")
    pixel_scale: Literal["auto"] | float = Field("auto", description="factor on every length in pixels (blur "
                                                 "radii...): auto = 1 from 32 px a side, side / 32 below")
    grid_severity: int = Field(3, ge=1, le=5, description="severity shown in the image grid")
    drop_threshold: float = Field(0.2, gt=0, le=1, description="a finding when a corruption's mean accuracy is "
                                  "this far below clean")
    tabular: TabularShiftParams = Field(default_factory=TabularShiftParams, description="tabular shift levels")

    @field_validator("corruptions")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one corruption, or leave the key out for all that apply")
            for name in value:
                if name not in KNOWN:
                    raise ValueError(f"unknown corruption {name!r}{did_you_mean(name, KNOWN)}; choose from "
                                     f"{list(KNOWN)}")
        return value

    @field_validator("severities")
    @classmethod
    def _severities(cls, value: list[int]) -> list[int]:
        if not value or any(s not in SEVERITIES for s in value):
            raise ValueError(f"severities must be a non-empty list from {list(SEVERITIES)}")
        return sorted(set(value))

    @field_validator("pixel_scale")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        if value != "auto" and not (math.isfinite(value) and value > 0):
            raise ValueError("pixel_scale must be 'auto' or a number > 0")
        return value


class CorruptionsSection(SectionPlugin):
    """Common corruptions (ImageNet-C: noise, blur, weather, digital) and tabular shifts: accuracy per corruption
    and severity, mean corrupted accuracy, mCE against a baseline run."""

    name = "corruptions"
    title = "Common corruptions"
    ParamsModel = CorruptionsParams
    params: CorruptionsParams
    reads_sections: ClassVar[tuple[str, ...]] = ("robustness",)
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*accuracy": "higher", "*.ce": "lower", "*.relative_ce": "lower", "mce": "lower", "relative_mce": "lower",
        "nonfinite_outputs": "lower", "n_samples": None,
    }

    def _key(self, param: str) -> str:
        return f"sections.{self.section}.{param}"

    def validate(self, ctx: AuditContext) -> None:
        """Before any section runs: every corruption applies to this data; images have a value range; tabular
        features exist; the model imputes NaN when told to; the baseline run fits."""
        p = self.params
        names = planning.resolve_names(p.corruptions, ctx.data, p.tabular.shift_features, self._key("corruptions"))
        plans = planning.make_plans(names, p.severities, ctx.data, p.tabular.shift_features,
                                    self._key("tabular.shift_features"))
        if ctx.data.modality == "image":
            planning.image_bounds(ctx.model, ctx.data, "model.input_bounds")
        else:
            feature_names = planning.feature_names(ctx.data)
            for feature in p.tabular.spread:
                if feature not in feature_names:
                    raise ConfigError(self._key("tabular.spread"),
                                      f"no feature named {feature!r}{did_you_mean(feature, feature_names)}")
            if p.tabular.imputation == "model" and "missing_values" in names:
                self._imputation(ctx)
        if p.baseline is not None:
            self._baseline(ctx, plans)

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        from audit.data import stratified_subset
        from audit.shift.evaluate import ChunkInputs, evaluate_chunk, reduce_chunks

        p, data = self.params, ctx.data
        names = planning.resolve_names(p.corruptions, data, p.tabular.shift_features, self._key("corruptions"))
        plans = planning.make_plans(names, p.severities, data, p.tabular.shift_features,
                                    self._key("tabular.shift_features"))
        index = np.arange(data.n_samples)
        if p.max_samples is not None and p.max_samples < data.n_samples:
            index = stratified_subset(data.y, p.max_samples, ctx.seed)
            result.notes.append(f"corrupted a stratified subset of {len(index)} of {data.n_samples} samples "
                                "(max_samples)")
        x, y = data.x[index], data.y[index]
        clean_correct = ctx.clean_predictions()[index] == y
        shared = ChunkInputs(model=ctx.model, x=x, sample_ids=index, plans=plans, seed=ctx.seed,
                             section=self.section, batch_size=ctx.batch_size)
        self._setup(ctx, shared, result)
        chunks = plan(len(y), p.chunk_size)
        store = ChunkStore(ctx.artifacts_dir / self.section / CHUNKS_DIR, ctx.fingerprints.get(self.section))
        ran = run_chunks(store, chunks, evaluate_chunk, shared, backend=ctx.backend, progress=ctx.progress,
                         desc="chunks", device=str(ctx.device))
        if ran < len(chunks):
            result.notes.append(f"{len(chunks) - ran} of {len(chunks)} chunks kept from the interrupted run "
                                f"(artifacts/{self.section}/{CHUNKS_DIR}/)")
        preds = reduce_chunks(store, chunks, plans, len(y))
        self._record(ctx, result, shared, preds, y, clean_correct, index)

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self, ctx: AuditContext, shared: ChunkInputs, result: SectionResult) -> None:
        from audit.shift.corruptions import auto_pixel_scale
        from audit.shift.tabular import make_setup

        p, data = self.params, ctx.data
        if data.modality == "image":
            shared.bounds = planning.image_bounds(ctx.model, data, "model.input_bounds")
            h, w = data.input_shape[-2:]
            shared.pixel_scale = auto_pixel_scale(h, w) if p.pixel_scale == "auto" else float(p.pixel_scale)
            result.table("settings", "Corruption settings", ["setting", "value"], [
                ["input range mapped to the reference's 0..255", list(shared.bounds)],
                ["image size (H x W), channels", f"{h} x {w}, {planning.image_layout(data, 'data')}"],
                ["pixel scale (lengths in pixels multiplied by)", shared.pixel_scale],
                ["random draws", "one generator per sample: (run seed, section, corruption, severity, sample id)"]])
            return
        t = p.tabular
        imputation = t.imputation
        if imputation == "auto":
            imputation = "model" if self._imputes(ctx) else "mean"
        shared.tabular = make_setup(data.x, perturbable=data.perturbable, feature_names=planning.feature_names(data),
                                    spreads=t.spread, imputation=imputation, noise=tuple(t.noise),
                                    missing=tuple(t.missing), shift=tuple(t.shift), scale=tuple(t.scale),
                                    mode=t.shift_mode)
        mask = planning.perturbable_mask(data)
        result.table("settings", "Tabular shift settings", ["setting", "value"], [
            ["perturbable features", f"{int(mask.sum())} of {len(mask)}"],
            ["spread", "std over the audited rows" + (f" (declared for {', '.join(t.spread)})" if t.spread else "")],
            ["missing values", "NaN to the model (its own imputation)" if imputation == "model"
             else f"filled with the feature's {imputation} over the audited rows"],
            ["noise std (spreads) by severity", t.noise], ["missing rate by severity", t.missing],
            [f"feature_shift ({t.shift_mode}) by severity", t.shift if t.shift_mode == "shift" else t.scale]])

    def _imputes(self, ctx: AuditContext) -> bool:
        from audit.shift.tabular import handles_missing

        return handles_missing(lambda b: ctx.model.logits(b), ctx.data.x, planning.perturbable_mask(ctx.data))

    def _imputation(self, ctx: AuditContext) -> None:
        if not self._imputes(ctx):
            raise ConfigError(self._key("tabular.imputation"), "the model returns NaN or fails when a feature is "
                              "missing (NaN), so it does not impute; set imputation: mean, median or zero")

    def _baseline(self, ctx: AuditContext, plans: list[ShiftPlan]) -> Baseline:
        from audit.shift.mce import load_baseline

        if self.params.baseline is None:
            raise ConfigError(self._key("baseline"), "no baseline run named")
        accuracy = {pl.name: {s: math.nan for s in pl.severities} for pl in plans}
        return load_baseline(self.params.baseline, key=self._key("baseline"), section=self.params.baseline_section,
                             data_sha256=ctx.data.sha256(), accuracy=accuracy,
                             params=self.params.model_dump(mode="json"))

    # -- recording -------------------------------------------------------------------------------
    def _record(self, ctx: AuditContext, result: SectionResult, shared: ChunkInputs, preds: Predictions,
                y: np.ndarray, clean_correct: np.ndarray, index: np.ndarray) -> None:
        from audit.outcomes import save_outcomes

        p = self.params
        severities = list(p.severities)
        clean = float(clean_correct.mean())
        correct = {k: v == y for k, v in preds.prediction.items()}
        accuracy = {pl.name: {s: float(correct[(pl.name, s)].mean()) for s in severities} for pl in shared.plans}
        means = record.mean_over_severities(accuracy)
        averaged = [n for n in accuracy if in_mce(n)] or list(accuracy)
        result.metric("clean_accuracy", clean)
        result.metric("n_samples", len(y))
        values: dict[str, np.ndarray] = {"clean_accuracy": clean_correct}
        meta: dict[str, dict[str, Any]] = {"clean_accuracy": {"kind": "correct"}}
        extra: dict[str, np.ndarray] = {"label": y, "prediction": ctx.clean_predictions()[index]}
        for name, by in accuracy.items():
            for s in severities:
                metric = metric_key(name, ("severity", s), "accuracy")
                result.metric(metric, by[s])
                values[metric] = correct[(name, s)]
                meta[metric] = {"kind": "correct", "corruption": name, "severity": s}
                extra[f"prediction/{name}/severity={s}"] = preds.prediction[(name, s)]
                extra[f"confidence/{name}/severity={s}"] = preds.confidence[(name, s)]
            result.metric(f"{name}.accuracy", means[name])
            values[f"{name}.accuracy"] = np.mean([correct[(name, s)] for s in severities], axis=0)
            meta[f"{name}.accuracy"] = {"kind": "correct", "corruption": name, "severity": "mean"}
        mean_accuracy = float(np.mean([means[n] for n in averaged]))
        result.metric("mean_accuracy", mean_accuracy)
        values["mean_accuracy"] = np.mean([values[f"{n}.accuracy"] for n in averaged], axis=0)
        meta["mean_accuracy"] = {"kind": "correct", "corruption": "mean", "over": averaged}
        worst = min(means, key=lambda n: means[n])
        result.metric("worst_accuracy", means[worst])
        nonfinite = sum(int((v < 0).sum()) for v in preds.prediction.values())
        result.metric("nonfinite_outputs", nonfinite)
        if nonfinite:
            result.finding("medium", f"the model's outputs were NaN or infinite on {nonfinite} corrupted inputs; "
                           "they count as wrong", metric=f"{self.section}.nonfinite_outputs", value=nonfinite)
        left_out = [n for n in accuracy if n not in averaged]
        result.notes.append(f"worst corruption: {worst} (accuracy {means[worst]:.3f} over severities "
                            f"{', '.join(map(str, severities))}; clean {clean:.3f}). mean_accuracy averages "
                            f"{len(averaged)} corruptions" + (f"; {', '.join(left_out)} are Hendrycks' held-out "
                                                               "extras, reported but not averaged" if left_out else ""))
        ce = rel = None
        if p.baseline is not None:
            from audit.shift.mce import corruption_errors

            base = self._baseline(ctx, shared.plans)
            errors = corruption_errors(accuracy, clean, base, averaged)
            ce, rel = errors.ce, errors.relative_ce
            for name in accuracy:
                result.metric(f"{name}.ce", ce[name])
                result.metric(f"{name}.relative_ce", rel[name])
            result.metric("mce", errors.mce)
            result.metric("relative_mce", errors.relative_mce)
            result.notes.append(f"corruption errors relative to the baseline run {base.path} (section "
                                f"'{base.section}', clean accuracy {base.clean_accuracy:.3f})")
            undefined = [n for n in accuracy if not math.isfinite(rel[n]) or not math.isfinite(ce[n])]
            if undefined:
                result.notes.append(f"CE or relative CE undefined (the baseline made no error, or lost no accuracy, "
                                    f"under {', '.join(undefined)}): mCE needs every one, so it is undefined too")
        self._findings(result, means, clean, worst)
        columns = ["corruption", "family", *[f"severity {s}" for s in severities], "mean", "drop from clean"]
        result.table("accuracy", "Accuracy under each corruption", columns + (["CE", "relative CE"] if ce else []),
                     record.accuracy_rows(accuracy, severities, clean, ce, rel),
                     description="drop from clean: clean accuracy minus the mean over severities")
        result.figure(record.family_figure(accuracy, clean, severities))
        result.figure(record.heatmap_figure(accuracy, severities))
        self._compare_robustness(ctx, result, mean_accuracy, (worst, means[worst]), clean)
        if ctx.data.modality == "image":
            self._grid(ctx, result, shared, clean_correct, index, y)
        save_outcomes(ctx, result, sample_id=index, values=values, meta=meta, extra=extra)

    def _findings(self, result: SectionResult, means: dict[str, float], clean: float, worst: str) -> None:
        threshold = self.params.drop_threshold
        for name, value in sorted(means.items(), key=lambda kv: kv[1]):
            drop = clean - value
            if drop >= threshold:
                severity: Severity = "high" if drop >= 2 * threshold else "medium"
                result.finding(severity, f"{name} drops accuracy from {clean:.3f} (clean) to {value:.3f} (mean over "
                               f"severities){' - the worst corruption' if name == worst else ''}",
                               code="corruption_drop", metric=f"{self.section}.{name}.accuracy", value=value)

    def _compare_robustness(self, ctx: AuditContext, result: SectionResult, mean_accuracy: float,
                            worst: tuple[str, float], clean: float) -> None:
        robust = record.robust_accuracies(ctx.results)
        if not robust:
            return
        result.table("robustness_comparison", "Adversarial vs common-corruption accuracy",
                     ["worst-case robust accuracy of", "robust accuracy", "mean corrupted accuracy", "worst corruption",
                      "its accuracy", "clean accuracy", "corrupted below robust"],
                     record.robustness_rows(robust, mean_accuracy, worst, clean),
                     description="each section's own samples: robustness and corruptions may audit different subsets")
        strongest = min(robust, key=lambda r: r[3])
        if mean_accuracy < strongest[3]:
            result.finding("medium", f"robust to attacks but fragile to common corruptions: mean corrupted accuracy "
                           f"{mean_accuracy:.3f} is below the worst-case robust accuracy {strongest[3]:.3f} at "
                           f"{strongest[1]} eps={strongest[2]} (worst corruption: {worst[0]}, {worst[1]:.3f})",
                           code="fragile_to_corruptions", metric=f"{self.section}.mean_accuracy", value=mean_accuracy)
        else:
            result.notes.append(f"mean corrupted accuracy {mean_accuracy:.3f} vs worst-case robust accuracy "
                                f"{strongest[3]:.3f} at {strongest[1]} eps={strongest[2]} (its largest attack)")

    def _grid(self, ctx: AuditContext, result: SectionResult, shared: ChunkInputs, clean_correct: np.ndarray,
              index: np.ndarray, y: np.ndarray) -> None:
        """One clean-correct sample under each image corruption at grid_severity, rebuilt from its own seed (what
        the model saw), with the model's prediction on it."""
        import torch

        from audit.shift.evaluate import apply, predict

        severity = self.params.grid_severity
        plans = [pl for pl in shared.plans if severity in pl.severities]
        if not plans:
            return
        pos = int(np.flatnonzero(clean_correct)[0]) if clean_correct.any() else 0
        x = torch.as_tensor(shared.x[pos : pos + 1], dtype=torch.float32, device=ctx.model.device)
        names = ctx.data.class_names
        images, captions = {}, {}
        for pl in plans:
            corrupted = apply(shared, pl, severity, x, index[pos : pos + 1])
            pred, conf = predict(ctx.model, corrupted, 1)
            images[pl.name] = corrupted[0].reshape(-1, *ctx.data.input_shape[-2:]).cpu().numpy()
            captions[pl.name] = f"{conf[0]:.0%} {names[pred[0]]}" if pred[0] >= 0 else "non-finite"
        clean_pred, clean_conf = predict(ctx.model, x, 1)
        path, rel = ctx.artifact_path(self.section, "examples.npz")
        result.artifacts["examples"] = rel
        result.figure(record.grid_figure(
            path, rel, clean=x[0].reshape(-1, *ctx.data.input_shape[-2:]).cpu().numpy(), corrupted=images,
            captions=captions, clean_caption=f"true {names[int(y[pos])]}\n{clean_conf[0]:.0%} {names[clean_pred[0]]}",
            bounds=shared.bounds or (0.0, 1.0), severity=severity,
            title=f"Sample {int(index[pos])} under each corruption (severity {severity})"))

