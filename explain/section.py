"""The ``explanations`` section: attributions per method, their quality, global importance, stability under attack.

The section orchestrates and records. ``run`` picks the explained samples and the background, builds the
explainers from the registry (``method_params`` on top of each method's own defaults), hands chunks of the explained
samples to the engine's chunk runner (``explain.chunks``: attributions and per-sample quality scores; in this
process, or on Ray with ``--backend ray``; a resumed run keeps the finished chunks), then reduces the chunks with
``explain.faithfulness``, ``explain.quality``, ``explain.randomization``, ``explain.global_importance`` and
``explain.stability``, and records what they return (``explain.records``). Text: ``explain.text_section``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

import explain.records as records
from audit.context import AttributionSet
from audit.data import stratified_subset
from audit.engine.chunks import CHUNKS_DIR, DEFAULT_CHUNK_SIZE, ChunkStore, plan, run_chunks
from audit.errors import ConfigError
from audit.model.onnx_convert import model_notes
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult
from explain.base import Explainer, ExplainerError
from explain.budget import DEFAULT_MEMORY_MB
from explain.captum_methods import reference_input
from explain.chunks import Cascade, ChunkInputs, Deletion, ExplainerSpec, Gathered, Sensitivity, explain_chunk, gather
from explain.faithfulness import deletion_baseline, informative, rank_faithfulness
from explain.global_importance import pixel_map, tabular_importance
from explain.quality import perturbation_quality
from explain.randomization import CascadeSimilarity, cascade_layers, judge_randomization
from explain.seeds import sample_seed
from explain.stability import NotMeasured, stability_under_attack
from explain.tasks import run_task_explanations
from explain.text_section import check_methods, run_text

if TYPE_CHECKING:
    from audit.context import AuditContext

# the built-in methods (their order in tables); every method, these too, loads from its entry point
METHODS: tuple[str, ...] = ("ig", "saliency", "gradient_shap", "deeplift", "lrp", "occlusion", "shap_gradient",
                            "shap_deep", "shap_kernel", "lime", "layer_ig", "shap_text", "lime_text")  # last 3: text
EXPLAINERS_GROUP = "nnaudit.explainers"
DEFAULT_METHODS = ["ig", "saliency", "gradient_shap", "lrp", "occlusion", "shap_gradient", "lime"]
Quality = Literal["deletion", "insertion", "infidelity", "sensitivity", "randomization"]
ALL_QUALITY: list[Quality] = ["deletion", "insertion", "infidelity", "sensitivity", "randomization"]
# per-method settings that were section parameters once: where they are now (method, constructor parameter)
MOVED: dict[str, tuple[tuple[str, str], ...]] = {
    "ig_steps": (("ig", "n_steps"),), "gradient_shap_samples": (("gradient_shap", "n_samples"),),
    "shap_samples": (("shap_gradient", "n_samples"), ("shap_deep", "n_samples")),
    "kernel_shap_samples": (("shap_kernel", "n_samples"),),
    "kernel_shap_background": (("shap_kernel", "n_background"),),
    "lime_samples": (("lime", "n_samples"),), "lime_segmentation": (("lime", "segmentation"),),
    "lime_cell": (("lime", "cell"),), "occlusion_window": (("occlusion", "window"),),
}


def explainer_classes() -> dict[str, type[Explainer]]:
    """Every method registered in the ``nnaudit.explainers`` entry-point group, built-in or third-party."""
    from audit.plugin import available, plugin_class

    return {name: plugin_class(name, EXPLAINERS_GROUP, Explainer, key="sections.explanations.methods")
            for name in available(EXPLAINERS_GROUP)}


class ExplanationsParams(Params):
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description=f"attribution methods, any of: {', '.join(METHODS)} (default on "
                               "text: layer_ig, shap_text, lime_text)")
    method_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method constructor parameters, e.g. {ig: {n_steps: 64}, lime: "
        "{n_samples: 200}}; each method's own defaults otherwise (docs/explanations.md lists them)")
    n_samples: int = Field(100, ge=1, description="samples explained (stratified over classes; predicted class); "
                           "the faithfulness ranking's intervals are over these")
    check_samples: int = Field(20, ge=1, description="of those, samples for the costly checks (sensitivity-max, "
                               "the randomization cascade), stratified")
    background_size: int = Field(32, ge=1, description="background / reference rows (gradient_shap, shap, lime), "
                                 "drawn from the data under the run seed, whatever is explained")
    batch_size: int = Field(64, ge=1, description="samples per explainer call")
    memory_mb: float = Field(DEFAULT_MEMORY_MB, gt=0, description="memory budget of one model evaluation: "
                             "perturbation methods and quality metrics go through the model in chunks this size")
    quality: list[Quality] = Field(default_factory=lambda: list(ALL_QUALITY), description="quality metrics")
    quality_steps: int = Field(16, ge=2, description="points on the deletion / insertion curves")
    deletion_baseline: Literal["mean", "blur", "lower"] = Field(
        "mean", description="what a deleted feature becomes: the dataset mean, a blurred copy of the image, or the "
        "lower input bound (free to delete where the input is already at it)")
    blur_sigma: float = Field(0.0, ge=0, description="Gaussian blur of the 'blur' deletion baseline in pixels "
                              "(0: a quarter of the image side)")
    bootstrap_resamples: int = Field(2000, ge=100, description="bootstrap resamples of the samples for intervals")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="interval confidence")
    infidelity_samples: int = Field(16, ge=1, description="perturbations per input for infidelity")
    infidelity_noise: float = Field(0.1, gt=0, description="infidelity noise std, as a fraction of the data std")
    sensitivity_samples: int = Field(4, ge=1, description="perturbations per input for sensitivity-max")
    sensitivity_radius: float = Field(0.02, gt=0, description="sensitivity radius, as a fraction of the data range")
    randomization_steps: int = Field(5, ge=1, description="points of the cascading randomization (top layer, ..., "
                                     "all layers), spread evenly over the layers")
    randomization_pass_below: float = Field(0.5, gt=-1, le=1, description="similarity of |attribution| after "
                                            "full randomization below which the randomization check passes")
    stability: bool = Field(True, description="compare clean and adversarial attributions (needs robustness)")
    stability_key: str | None = Field(None, description="ctx.adversarial key 'norm:eps', e.g. 'linf:0.1' (default: "
                                      "the linf eps splitting fooled and resisting samples most evenly)")
    stability_samples: int = Field(20, ge=1, description="attacked samples compared")
    top_k: int = Field(0, ge=0, description="features in the top-k overlap (0: 10% of the features, at least 3)")
    permutation_repeats: int = Field(5, ge=1, description="shuffles per feature for permutation importance")
    surrogate_depth: int = Field(3, ge=1, le=10, description="depth of the surrogate decision tree (tabular)")
    figure_samples: int = Field(4, ge=1, description="samples in the heatmap grid (images)")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="explained samples per chunk: the unit of work "
                            "saved to artifacts as it finishes (a resumed run redoes only unfinished chunks) and "
                            "scheduled on Ray workers with --backend ray (docs/scale.md)")

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = explainer_classes()
        unknown = [m for m in value if m not in known]
        if unknown:
            raise ValueError(f"unknown explanation methods {unknown}; choose from {sorted(known)}")
        if not value:
            raise ValueError(f"give at least one method; choose from {sorted(METHODS)}")
        return list(dict.fromkeys(value))

    @field_validator("method_params")
    @classmethod
    def _known_methods(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(explainer_classes()))
        if unknown:
            raise ValueError(f"parameters for unknown explanation methods {unknown}; choose from "
                             f"{sorted(explainer_classes())}")
        return value


@dataclass
class Explained:
    """The explained samples: rows of ctx.data (their sample ids), inputs and explained classes."""

    ids: np.ndarray
    x: np.ndarray
    target: np.ndarray

    def subset(self, positions: np.ndarray) -> Explained:
        return Explained(self.ids[positions], self.x[positions], self.target[positions])


class ExplanationsSection(SectionPlugin):
    """Attributions (captum, shap, lime), their faithfulness and sanity, global importance, stability under attack."""

    name = "explanations"
    title = "Explanations"
    ParamsModel = ExplanationsParams
    params: ExplanationsParams
    reads_sections: ClassVar[tuple[str, ...]] = ("robustness",)
    input_kinds: ClassVar[tuple[str, ...]] = ("continuous", "tokens")  # tokens: explain.text_section
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")  # others: explain/tasks.py
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.ci_low": None, "*.ci_high": None, "random.*": None,  # interval bounds; the random-ordering reference
        "*.deletion_auc": "lower", "*.insertion_auc": "higher", "*.faithfulness_rank": "lower",
        "*.infidelity": "lower", "*.sensitivity_max": "lower", "*.randomization_similarity": "lower",
        "*.randomization_ssim": "lower", "*.randomization_check_passes": "higher",
        "stability.*.topk_overlap_random_noise": None, "stability.*.topk_overlap*": "higher",
        "stability.*.spearman": "higher", "surrogate.fidelity": "higher",
        "*": None,  # costs, counts, the noise and attack sizes, the controls, permutation importances
    }

    def __init__(self, *, section: str | None = None, **params: Any) -> None:
        for name, value in params.items():
            if name in MOVED:  # an old config: say where the setting lives now
                where = ", ".join(f"{method}: {{{param}: {json.dumps(value)}}}" for method, param in MOVED[name])
                raise ConfigError(f"sections.{section or self.name}.{name}",
                                  f"moved: write it as method_params: {{{where}}}")
        super().__init__(section=section, **params)

    def validate(self, ctx: AuditContext) -> None:
        check_methods(self, ctx.data.input_kind)

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        if ctx.data.task != "classification":  # the predicted value, or each label (explain/tasks.py)
            return run_task_explanations(ctx, result, self.params, self.section)
        p = self.params
        data = ctx.data
        if data.input_kind == "tokens":
            return run_text(self, ctx, result)
        index = stratified_subset(data.y, p.n_samples, ctx.seed)
        explained = Explained(index, data.x[index], ctx.clean_predictions()[index].astype(np.int64))
        # the background is keyed to the run seed alone: a sample's attributions do not depend on what else is explained
        background = data.x[stratified_subset(data.y, p.background_size, sample_seed(ctx.seed, "background", 0))]
        specs, explainers = self._explainers(ctx, result, background)
        result.notes += model_notes(ctx.model)  # gradient methods on an ONNX model ran on its converted graph
        positions = stratified_subset(explained.target, p.check_samples, ctx.seed + 2)  # the costly checks' rows
        shared, cascade_note = self._inputs(ctx, explained, list(specs.values()), positions, background)
        got = self._chunks(ctx, result, shared)
        for method, error in got.errors.items():
            self._unavailable(result, method, ExplainerError(error))
        result.notes.extend(got.notes)  # e.g. an out-of-memory back-off, over every chunk
        if not got.values:
            result.status = "skipped"
            result.notes.append("no explanation method could run on this model; see the findings")
            return
        for method, values in got.values.items():
            ctx.attributions[method] = AttributionSet(method=method, index=index, target=explained.target,
                                                      values=values)
            if got.fallback.get(method):
                result.finding("low", got.fallback[method], code=f"explanations.{method}_fallback")
        records.cost(result, got.cost, len(index))
        path, rel = ctx.artifact_path(self.section, "attributions.npz")
        arrays: dict[str, Any] = {"index": index, "target": explained.target, "x": explained.x, **got.values}
        np.savez_compressed(path, **arrays)
        result.artifacts["attributions"] = rel
        self._quality(ctx, result, explained, positions, shared, got, cascade_note)
        if data.modality == "image":
            first = next(iter(got.values))
            records.pixel_importance(result, first, pixel_map(got.values[first]))
            records.heatmaps(ctx, result, self.section, explained.x, explained.target, got.values,
                             p.figure_samples)
        else:
            records.tabular_importance(result, tabular_importance(
                ctx.model, data.x, data.y, ctx.clean_predictions(), got.values, data.feature_names,
                repeats=p.permutation_repeats, depth=p.surrogate_depth, seed=ctx.seed,
                class_names=list(data.class_names)))
        if p.stability:
            self._stability(ctx, result, {m: e for m, e in explainers.items() if m in got.values})

    # -- helpers --------------------------------------------------------------------------------------
    def _explainers(self, ctx: AuditContext, result: SectionResult, background: np.ndarray,
                    ) -> tuple[dict[str, ExplainerSpec], dict[str, Explainer]]:
        """Every method built once here, so one that cannot run on this model or data is noted before any work;
        the chunks build theirs from the same specs, and stability under attack uses these."""
        p = self.params
        classes = explainer_classes()
        specs: dict[str, ExplainerSpec] = {}
        explainers: dict[str, Explainer] = {}
        for method in p.methods:
            defaults = classes[method].section_defaults(
                batch_size=p.batch_size, seed=ctx.seed, background=background, modality=ctx.data.modality,
                memory_mb=p.memory_mb, feature_names=ctx.data.feature_names)
            spec = ExplainerSpec(method, classes[method], f"sections.{self.section}.method_params.{method}",
                                 defaults, dict(p.method_params.get(method, {})))
            try:
                explainers[method] = spec.build(ctx.model)
            except ExplainerError as err:
                self._unavailable(result, method, err, asked="methods" in p.model_fields_set)
                continue
            specs[method] = spec
        return specs, explainers

    def _inputs(self, ctx: AuditContext, explained: Explained, specs: list[ExplainerSpec], positions: np.ndarray,
                background: np.ndarray) -> tuple[ChunkInputs, str | None]:
        """What the chunks compute, from the asked quality metrics; and why the randomization check cannot run."""
        p, data = self.params, ctx.data
        shared = ChunkInputs(model=ctx.model, section=self.section, seed=ctx.seed, modality=data.modality,
                             memory_mb=p.memory_mb, ids=explained.ids, x=explained.x, target=explained.target,
                             specs=specs, check=positions)
        if {"deletion", "insertion"} & set(p.quality):
            fill = float(ctx.model.bounds.lower) if ctx.model.bounds is not None else 0.0
            shared.deletion = Deletion(p.deletion_baseline, data.x.mean(axis=0), fill, p.blur_sigma, p.quality_steps)
            try:  # a baseline the data cannot take stops the section before any work
                deletion_baseline(p.deletion_baseline, explained.x[:1], data_mean=shared.deletion.data_mean,
                                  fill=fill, sigma=p.blur_sigma, modality=data.modality)
            except ExplainerError as err:
                raise ConfigError(f"sections.{self.section}.deletion_baseline", str(err)) from err
        if "infidelity" in p.quality:
            shared.infidelity = (p.infidelity_noise * (float(data.x.std()) or 1.0), p.infidelity_samples)
        if "sensitivity" in p.quality:
            lower, upper = self._bounds(ctx)
            shared.sensitivity = Sensitivity(p.sensitivity_radius * (float(data.x.max() - data.x.min()) or 1.0),
                                             p.sensitivity_samples, lower, upper, data.perturbable)
        if "randomization" not in p.quality:
            return shared, None
        try:
            shared.cascade = Cascade(cascade_layers(ctx.model, explained.x[positions]), p.randomization_steps,
                                     background)
        except ExplainerError as err:
            return shared, f"randomization check not run: {err}"
        return shared, None

    def _chunks(self, ctx: AuditContext, result: SectionResult, shared: ChunkInputs) -> Gathered:
        """Chunks of explained samples through the engine's chunk runner; a killed run's finished chunks are kept."""
        chunks = plan(len(shared.ids), self.params.chunk_size)
        store = ChunkStore(ctx.artifacts_dir / self.section / CHUNKS_DIR, ctx.fingerprints.get(self.section))
        ran = run_chunks(store, chunks, explain_chunk, shared, backend=ctx.backend, progress=ctx.progress,
                         desc="explanations: chunks", device=str(ctx.device))
        records.chunk_notes(result, ctx.backend, ran, len(chunks), self.params.chunk_size)
        return gather(store, chunks, [s.method for s in shared.specs], features=int(np.prod(shared.x.shape[1:])))

    def _quality(self, ctx: AuditContext, result: SectionResult, explained: Explained, positions: np.ndarray,
                 shared: ChunkInputs, got: Gathered, cascade_note: str | None) -> None:
        p = self.params
        level = f"{p.confidence:.0%}"
        intervals: dict[str, Any] = {"n_resamples": p.bootstrap_resamples, "seed": ctx.seed,
                                     "confidence": p.confidence}
        per_sample: dict[str, np.ndarray] = {"index": explained.ids}
        if got.curves:
            faithfulness = rank_faithfulness(got.curves, baseline=p.deletion_baseline,
                                             informative_share=got.informative_share, **intervals)
            records.faithfulness(result, faithfulness, level, self.section, per_sample)
        checks = explained.subset(positions)
        if {"infidelity", "sensitivity"} & set(p.quality):
            scores = {"infidelity": got.infidelity, "sensitivity_max": got.sensitivity}
            records.perturbation_quality(result, perturbation_quality(scores, **intervals), list(got.values), level,
                                         len(explained.ids), len(checks.ids), per_sample)
        if cascade_note is not None:
            result.notes.append(cascade_note)
        elif shared.cascade is not None:
            result.notes.extend(f"randomization check of {m} not run: {e}" for m, e in got.randomization_errors.items())
            reference = reference_input(ctx.model.bounds, shared.cascade.background, ctx.data.modality, checks.x)
            found = judge_randomization(
                CascadeSimilarity(got.randomization, got.randomization_ssim, got.randomization_errors),
                {m: v[positions] for m, v in got.values.items()}, checks.ids, informative(checks.x, reference),
                layers=shared.cascade.layers, steps=p.randomization_steps, threshold=p.randomization_pass_below,
                image=ctx.data.modality == "image" and checks.x.ndim == 4, **intervals)
            records.randomization(result, found, level, len(checks.ids), self.section, per_sample)
        if len(per_sample) > 1:
            path, rel = ctx.artifact_path(self.section, "quality.npz")
            saved: dict[str, Any] = dict(per_sample)
            np.savez_compressed(path, **saved)
            result.artifacts["quality"] = rel

    def _stability(self, ctx: AuditContext, result: SectionResult, explainers: dict[str, Explainer]) -> None:
        p = self.params
        lower, upper = self._bounds(ctx)
        try:
            found = stability_under_attack(ctx.model, ctx.data.x, ctx.clean_predictions(), ctx.adversarial,
                                           explainers, key=p.stability_key, samples=p.stability_samples,
                                           top_k=p.top_k, seed=ctx.seed, lower=lower, upper=upper,
                                           perturbable=ctx.data.perturbable, progress=ctx.progress)
        except NotMeasured as why:
            result.notes.append(str(why))
            return
        records.stability(result, found)

    def _unavailable(self, result: SectionResult, method: str, err: ExplainerError, asked: bool = True) -> None:
        from explain.lrp import LRPRuleError

        result.notes.append(f"{method}: not run: {err}")
        if isinstance(err, LRPRuleError):  # the model can be fixed: always say how
            result.finding("low", f"explanation method 'lrp' could not run: layer '{err.layer}' of the model has "
                           f"no LRP rule; set one where the model is built:\n{err.hint}",
                           code="explanations.lrp_no_rule")
        elif asked:
            result.finding("low", f"explanation method '{method}' could not run: {err}",
                           code="explanations.method_unavailable")

    @staticmethod
    def _bounds(ctx: AuditContext) -> tuple[Any, Any]:
        bounds = ctx.model.bounds
        lower = ctx.data.lower if ctx.data.lower is not None else (bounds.lower if bounds else None)
        upper = ctx.data.upper if ctx.data.upper is not None else (bounds.upper if bounds else None)
        return lower, upper
