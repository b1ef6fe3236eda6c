"""The ``explanations`` section: attributions per method, their quality, global importance, stability under attack."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from audit.context import AttributionSet
from audit.data import stratified_subset
from audit.engine.chunks import DEFAULT_CHUNK_SIZE
from audit.errors import ConfigError
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult
from explain.base import Explainer, ExplainerError
from explain.budget import DEFAULT_MEMORY_MB
from explain.captum_methods import (
    reference_input,
)
from explain.global_importance import mean_abs_attribution, permutation_importance, surrogate_tree
from explain.lrp import LRPRuleError
from explain.quality import (
    FaithfulnessCurves,
    attribution_ssim,
    cascade,
    cascade_layers,
    deletion_baseline,
    deletion_insertion,
    infidelity,
    informative,
    masked_rank_correlation,
    model_rows,
    random_ordering,
    randomized_adapter,
    rank_correlation,
    sensitivity_max,
    sign_randomized,
)
from explain.ranking import Estimate, Ranking, intervals, rank
from explain.shap_methods import ShapDeepExplainer, ShapKernelExplainer
from explain.stability import compare, matched_noise, outcome_rows, perturbation_norms, pick_key, select_samples

if TYPE_CHECKING:
    from audit.context import AuditContext

# the built-in methods (their order in tables); every method, these too, loads from its entry point
METHODS: tuple[str, ...] = ("ig", "saliency", "gradient_shap", "deeplift", "lrp", "occlusion", "shap_gradient",
                            "shap_deep", "shap_kernel", "lime")
EXPLAINERS_GROUP = "nnaudit.explainers"


def explainer_classes() -> dict[str, type[Explainer]]:
    """Every method registered in the ``nnaudit.explainers`` entry-point group, built-in or third-party."""
    from audit.plugin import available, plugin_class

    return {name: plugin_class(name, EXPLAINERS_GROUP, Explainer, key="sections.explanations.methods")
            for name in available(EXPLAINERS_GROUP)}


DEFAULT_METHODS = ["ig", "saliency", "gradient_shap", "lrp", "occlusion", "shap_gradient", "lime"]
Quality = Literal["deletion", "insertion", "infidelity", "sensitivity", "randomization"]
ALL_QUALITY: list[Quality] = ["deletion", "insertion", "infidelity", "sensitivity", "randomization"]


class ExplanationsParams(Params):
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description=f"attribution methods, any of: {', '.join(METHODS)}")
    n_samples: int = Field(100, ge=1, description="samples explained (stratified over classes; predicted class); "
                           "the faithfulness ranking's intervals are over these")
    check_samples: int = Field(20, ge=1, description="of those, samples for the costly checks (sensitivity-max, "
                               "the randomization cascade), stratified")
    background_size: int = Field(32, ge=1, description="background / reference rows (gradient_shap, shap, lime)")
    batch_size: int = Field(64, ge=1, description="samples per explainer call")
    memory_mb: float = Field(DEFAULT_MEMORY_MB, gt=0, description="memory budget of one model evaluation: "
                             "perturbation methods and quality metrics go through the model in chunks this size")
    ig_steps: int = Field(32, ge=2, description="Integrated Gradients steps")
    gradient_shap_samples: int = Field(16, ge=1, description="captum GradientShap samples per input")
    shap_samples: int = Field(32, ge=1, description="shap GradientExplainer samples per input")
    kernel_shap_samples: int = Field(256, ge=8, description="shap KernelExplainer coalitions per input")
    kernel_shap_background: int = Field(10, ge=1, description="k-means centres summarizing the background")
    lime_samples: int = Field(100, ge=10, description="lime perturbations per input")
    lime_segmentation: Literal["grid", "quickshift"] = Field("grid", description="lime image segmentation")
    lime_cell: int = Field(0, ge=0, description="grid cell side in pixels (0: a quarter of the image side)")
    occlusion_window: int = Field(2, ge=1, description="occlusion patch side in pixels (images)")
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
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="samples per chunk of attributions, each saved "
                            "to artifacts as it finishes (a resumed run redoes only unfinished chunks; "
                            "docs/scale.md)")
    method_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method constructor parameters, e.g. {ig: {n_steps: 64}}; they "
        "override the settings above for that method (built-in and third-party explainers alike)")

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
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.ci_low": None, "*.ci_high": None, "random.*": None,  # interval bounds; the random-ordering reference
        "*.deletion_auc": "lower", "*.insertion_auc": "higher", "*.faithfulness_rank": "lower",
        "*.infidelity": "lower", "*.sensitivity_max": "lower", "*.randomization_similarity": "lower",
        "*.randomization_ssim": "lower", "*.randomization_check_passes": "higher",
        "stability.*.topk_overlap_random_noise": None, "stability.*.topk_overlap*": "higher",
        "stability.*.spearman": "higher", "surrogate.fidelity": "higher",
        "*": None,  # costs, counts, the noise and attack sizes, the controls, permutation importances
    }

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        p = self.params
        data = ctx.data
        index = stratified_subset(data.y, p.n_samples, ctx.seed)
        explained = Explained(index, data.x[index], ctx.clean_predictions()[index].astype(np.int64))
        rest = np.setdiff1d(np.arange(data.n_samples), index)
        pool = rest if len(rest) else np.arange(data.n_samples)
        background = data.x[pool[stratified_subset(data.y[pool], p.background_size, ctx.seed + 1)]]
        explainers, values, cost = self._attributions(ctx, result, explained, background)
        cost_rows: list[list[Any]] = []
        for method, attr in values.items():
            explainer = explainers[method]
            result.notes.extend(explainer.notes)  # e.g. an out-of-memory back-off, over every chunk
            ctx.attributions[method] = AttributionSet(method=method, index=index, target=explained.target,
                                                      values=attr)
            seconds, rows, calls = cost[method]
            evaluations = rows / len(index)
            result.metric(f"{method}.model_evaluations_per_sample", evaluations)
            per_sample = round(evaluations, 1)
            cost_rows.append([method, round(1e3 * seconds / len(index), 3),
                              int(per_sample) if float(per_sample).is_integer() else per_sample, calls])
            if isinstance(explainer, ShapDeepExplainer) and explainer.fallback_reason:
                result.finding("low", explainer.fallback_reason, code="explanations.shap_deep_fallback")
        if not values:
            result.status = "skipped"
            result.notes.append("no explanation method could run on this model; see the findings")
            return
        path, rel = ctx.artifact_path(self.section, "attributions.npz")
        arrays: dict[str, Any] = {"index": index, "target": explained.target, "x": explained.x, **values}
        np.savez_compressed(path, **arrays)
        result.artifacts["attributions"] = rel
        result.table("cost", "Cost per method", ["method", "ms per sample", "model evaluations per sample",
                                                 "batched calls"], cost_rows)
        per_sample_quality = self._quality(ctx, result, explained, explainers, values, background)
        if per_sample_quality:
            path, rel = ctx.artifact_path(self.section, "quality.npz")
            saved: dict[str, Any] = dict(per_sample_quality)
            np.savez_compressed(path, **saved)
            result.artifacts["quality"] = rel
        self._global(ctx, result, values)
        if data.modality == "image":
            self._heatmaps(ctx, result, explained.x, explained.target, values)
        if p.stability:
            self._stability(ctx, result, explainers)

    # -- explainers ---------------------------------------------------------------------------------
    def _attributions(self, ctx: AuditContext, result: SectionResult, explained: Explained, background: np.ndarray,
                      ) -> tuple[dict[str, Explainer], dict[str, np.ndarray], dict[str, tuple[float, int, int]]]:
        """Every method's attributions, chunk by chunk (``chunk_size`` samples): each chunk's attributions and
        costs go to ``artifacts/<section>/chunks/<k>.npz`` as it finishes, and a resumed run loads the chunks
        already there. Randomness is keyed per sample id (explain/seeds.py), so chunks change no number.
        Returns the explainers that ran, their attributions, and (seconds, model rows, calls) per method."""
        from audit.engine.chunks import CHUNKS_DIR, ChunkStore, plan

        explainers: dict[str, Explainer] = {}
        for method in self.params.methods:
            explainer = self._build(ctx, result, method, background)
            if explainer is not None:
                explainers[method] = explainer
        store = ChunkStore(ctx.artifacts_dir / self.section / CHUNKS_DIR, ctx.fingerprints.get(self.section))
        parts: dict[str, list[np.ndarray]] = {m: [] for m in explainers}
        cost = {m: [0.0, 0, 0] for m in explainers}
        failed: set[str] = set()
        chunks = plan(len(explained.ids), self.params.chunk_size)
        for chunk in ctx.progress(chunks, desc="explanations: chunks", total=len(chunks)):
            arrays = store.load(chunk.k) if store.done(chunk.k) else {}
            todo = [m for m in explainers if m not in failed and f"{m}/values" not in arrays]
            part = explained.subset(chunk.rows)
            # a method missing from a saved chunk is one that failed there: it fails again
            for method in ctx.progress(todo, desc="explanations: attributions", total=len(todo)):
                explainer = explainers[method]
                rows, calls, start = explainer.counter.rows, explainer.counter.calls, time.perf_counter()
                try:
                    arrays[f"{method}/values"] = explainer.explain(part.x, part.target, part.ids)
                except ExplainerError as err:
                    self._unavailable(result, method, err)
                    failed.add(method)
                    continue
                arrays[f"{method}/cost"] = np.array([time.perf_counter() - start, explainer.counter.rows - rows,
                                                     explainer.counter.calls - calls], np.float64)
            if todo:
                store.save(chunk.k, arrays)
            for method in explainers:
                if method not in failed:
                    parts[method].append(arrays[f"{method}/values"])
                    spent = arrays[f"{method}/cost"]
                    cost[method] = [cost[method][0] + float(spent[0]), cost[method][1] + int(spent[1]),
                                    cost[method][2] + int(spent[2])]
        values = {m: np.concatenate(parts[m]) for m in explainers if m not in failed}
        return ({m: e for m, e in explainers.items() if m in values}, values,
                {m: (float(c[0]), int(c[1]), int(c[2])) for m, c in cost.items() if m in values})

    def _build(self, ctx: AuditContext, result: SectionResult, method: str,
               background: np.ndarray) -> Explainer | None:
        p = self.params
        common: dict[str, Any] = {"batch_size": p.batch_size, "seed": ctx.seed, "background": background,
                                  "modality": ctx.data.modality, "memory_mb": p.memory_mb}
        extras: dict[str, dict[str, Any]] = {
            "ig": {"n_steps": p.ig_steps},
            "gradient_shap": {"n_samples": p.gradient_shap_samples},
            "occlusion": {"window": p.occlusion_window},
            "shap_gradient": {"n_samples": p.shap_samples},
            "shap_deep": {"n_samples": p.shap_samples},
            "shap_kernel": {"n_samples": p.kernel_shap_samples, "n_background": p.kernel_shap_background},
            "lime": {"n_samples": p.lime_samples, "segmentation": p.lime_segmentation, "cell": p.lime_cell,
                     "feature_names": ctx.data.feature_names},
        }
        from audit.plugin import construct

        try:
            explainer: Explainer = construct(explainer_classes()[method], method,
                                             key=f"sections.{self.section}.method_params.{method}",
                                             defaults={**common, **extras.get(method, {})},
                                             params=p.method_params.get(method, {}), fixed={"adapter": ctx.model})
            return explainer
        except ExplainerError as err:
            self._unavailable(result, method, err, asked="methods" in self.params.model_fields_set)
            return None

    def _unavailable(self, result: SectionResult, method: str, err: ExplainerError, asked: bool = True) -> None:
        result.notes.append(f"{method}: not run: {err}")
        if isinstance(err, LRPRuleError):  # the model can be fixed: always say how
            result.finding("low", f"explanation method 'lrp' could not run: layer '{err.layer}' of the model has "
                           f"no LRP rule; set one where the model is built:\n{err.hint}",
                           code="explanations.lrp_no_rule")
        elif asked:
            result.finding("low", f"explanation method '{method}' could not run: {err}",
                           code="explanations.method_unavailable")

    def _twin(self, explainer: Explainer, model: Any) -> Explainer:
        """The same explainer, with the same settings and seed, on another model (the randomized one)."""
        kwargs: dict[str, Any] = {"batch_size": explainer.batch_size, "seed": explainer.seed,
                                  "background": explainer.background, "modality": explainer.modality,
                                  "memory_mb": explainer.memory_mb}
        for name in ("n_steps", "n_samples", "window", "segmentation", "cell", "stdevs"):
            if hasattr(explainer, name):
                kwargs[name] = getattr(explainer, name)
        if isinstance(explainer, ShapKernelExplainer):
            kwargs["n_background"] = self.params.kernel_shap_background
        return type(explainer)(model, **kwargs)

    # -- quality ------------------------------------------------------------------------------------
    def _quality(self, ctx: AuditContext, result: SectionResult, explained: Explained,
                 explainers: dict[str, Explainer], values: dict[str, np.ndarray],
                 background: np.ndarray) -> dict[str, np.ndarray]:
        p = self.params
        asked = set(p.quality)
        per_sample: dict[str, np.ndarray] = {"index": explained.ids}
        if asked & {"deletion", "insertion"}:
            self._faithfulness(ctx, result, explained, values, per_sample)
        positions = stratified_subset(explained.target, p.check_samples, ctx.seed + 2)  # the costly checks' rows
        checks = explained.subset(positions)
        if asked & {"infidelity", "sensitivity"}:
            self._perturbation_metrics(ctx, result, explained, checks, positions, explainers, values, per_sample)
        if "randomization" in asked:
            self._randomization(ctx, result, checks, positions, explainers, values, background, per_sample)
        return per_sample if len(per_sample) > 1 else {}

    def _faithfulness(self, ctx: AuditContext, result: SectionResult, explained: Explained,
                      values: dict[str, np.ndarray], per_sample: dict[str, np.ndarray]) -> None:
        p = self.params
        data = ctx.data
        baseline_kind = p.deletion_baseline
        fill = float(ctx.model.bounds.lower) if ctx.model.bounds is not None else 0.0
        try:
            base = deletion_baseline(baseline_kind, explained.x, data_mean=data.x.mean(axis=0), fill=fill,
                                     sigma=p.blur_sigma, modality=data.modality)
        except ExplainerError as err:
            raise ConfigError("sections.explanations.deletion_baseline", str(err)) from err
        rows = model_rows(ctx.model, explained.x, p.memory_mb)
        orderings = {**values, RANDOM: random_ordering(explained.x, base, explained.ids, ctx.seed)}
        curves: dict[str, FaithfulnessCurves] = {}
        for method, attr in orderings.items():
            curves[method] = deletion_insertion(ctx.model.numpy_predict_proba, explained.x, attr, explained.target,
                                                base, n_steps=p.quality_steps, rows=rows)
        end = curves[RANDOM].deletion[:, -1]
        result.metric("deletion_baseline_probability", float(end.mean()))
        share = float(informative(explained.x, base).mean())
        result.notes.append(f"deletion baseline: {baseline_kind}; the model gives the explained class "
                            f"{end.mean():.2f} on average on it (the end of every deletion curve); {share:.0%} of "
                            "the features differ from it, and the random ordering deletes those first")
        if baseline_kind != "lower":
            result.notes.append(f"deleting to the {'dataset mean' if baseline_kind == 'mean' else 'blurred input'} "
                                "asks how the prediction moves toward an uninformative input: methods whose own "
                                "reference is the background (gradient_shap, shap_*) answer that question, those "
                                "relative to the lower bound (ig, deeplift, lrp, occlusion, lime's hidden segments) "
                                "a neighbouring one. deletion_baseline: lower measures them against their own "
                                "reference, where deleting a feature already at the bound is free")
        scores = {"deletion": {m: c.deletion_aucs for m, c in curves.items()},
                  "insertion": {m: c.insertion_aucs for m, c in curves.items()}}
        rankings = {kind: rank(scores[kind], lower_is_better=kind == "deletion", n_resamples=p.bootstrap_resamples,
                               seed=ctx.seed, confidence=p.confidence) for kind in scores}
        for kind, ranking in rankings.items():
            for method, estimate in ranking.estimates.items():
                self._estimate(result, f"{method}.{kind}_auc", estimate)
                per_sample[f"{kind}_auc.{method}"] = scores[kind][method]
        self._faithfulness_report(result, rankings, len(explained.ids), baseline_kind)
        for kind_name in ("deletion", "insertion"):
            series = []
            for method, c in curves.items():
                band = c.deletion if kind_name == "deletion" else c.insertion
                series.append({"label": method, "x": c.fractions.tolist(), "y": band.mean(axis=0).tolist(),
                               **({"style": "--"} if method == RANDOM else {})})
            result.figure({"name": f"{kind_name}_curves", "title": f"{kind_name.capitalize()} curves "
                           f"({baseline_kind} baseline, mean over {len(explained.ids)} samples)", "kind": "line",
                           "series": series, "xlabel": f"fraction of features {kind_name[:-3]}ed, most important "
                           "first", "ylabel": "probability of the explained class", "ylim": [0.0, 1.0]})

    def _faithfulness_report(self, result: SectionResult, rankings: dict[str, Ranking], n: int,
                             baseline: str) -> None:
        deletion, insertion = rankings["deletion"], rankings["insertion"]
        level = f"{self.params.confidence:.0%}"
        methods = [m for m in deletion.order if m != RANDOM]
        rows: list[list[Any]] = []
        for method in methods:
            est, ins = deletion.estimates[method], insertion.estimates[method]
            vs_random = deletion.difference(method, RANDOM)
            tied = [m for m in deletion.tied_with(method) if m != RANDOM]
            result.metric(f"{method}.faithfulness_rank", deletion.ranks[method])
            rows.append([deletion.ranks[method], method, est.mean, _ci(est), ins.mean, _ci(ins), vs_random.mean,
                         _ci(vs_random), ", ".join(tied) or None])
            if not deletion.better(method, RANDOM):
                result.finding("medium", f"{method}: deleting its most important features first lowers the model's "
                               f"confidence no faster than a random order of the informative features (deletion AUC "
                               f"{est.mean:.3f} {_ci(est)} vs {deletion.estimates[RANDOM].mean:.3f} "
                               f"{_ci(deletion.estimates[RANDOM])}; difference {vs_random.mean:+.3f} "
                               f"{_ci(vs_random)}, {level} interval over {n} samples); it is not shown to be "
                               "faithful to this model", code="explanations.not_faithful",
                               metric=f"{self.section}.{method}.deletion_auc", value=est.mean)
        rest = deletion.estimates[RANDOM]
        rows.append([None, "random ordering (reference)", rest.mean, _ci(rest), insertion.estimates[RANDOM].mean,
                     _ci(insertion.estimates[RANDOM]), None, None, None])
        result.table("faithfulness", f"Faithfulness ranking by deletion AUC (lower better), {level} bootstrap "
                     f"intervals over {n} samples", ["rank", "method", "deletion AUC", f"{level} interval",
                                                     "insertion AUC (higher better)", f"{level} interval",
                                                     "deletion AUC minus random", f"{level} interval",
                                                     "tied with"], rows,
                     description=f"rank: 1 + the number of methods whose deletion AUC is lower with the paired "
                     f"difference's interval excluding 0; methods tied share a rank. Deleted features take the "
                     f"{baseline} baseline; the random ordering deletes the informative features (those the "
                     "deletion changes) first, in random order")
        pairs: list[list[Any]] = []
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                d, di = deletion.difference(a, b), insertion.difference(a, b)
                verdict = "tied" if d.spans_zero else (f"{a} better" if d.high < 0 else f"{b} better")
                pairs.append([a, b, d.mean, _ci(d), verdict, di.mean, _ci(di),
                              "tied" if di.spans_zero else (f"{a} better" if di.low > 0 else f"{b} better")])
        if pairs:
            result.table("faithfulness_differences", f"Paired differences between methods ({level} bootstrap "
                         "intervals)", ["method A", "method B", "deletion AUC, A minus B", f"{level} interval",
                                        "by deletion", "insertion AUC, A minus B", f"{level} interval",
                                        "by insertion"], pairs)
        bars = [m for m in methods] + [RANDOM]
        result.figure({"name": "faithfulness_ranking", "title": f"Deletion and insertion AUC with {level} intervals",
                       "kind": "bar", "xlabel": "method", "ylabel": "area under the curve", "ylim": [0.0, 1.0],
                       "series": [_bar_series(f"{kind} AUC", rankings[kind], bars)
                                  for kind in ("deletion", "insertion")]})

    def _perturbation_metrics(self, ctx: AuditContext, result: SectionResult, explained: Explained,
                              checks: Explained, positions: np.ndarray, explainers: dict[str, Explainer],
                              values: dict[str, np.ndarray], per_sample: dict[str, np.ndarray]) -> None:
        p = self.params
        data = ctx.data
        scale = float(data.x.std()) or 1.0
        span = float(data.x.max() - data.x.min()) or 1.0
        lower, upper = self._bounds(ctx)
        scores: dict[str, dict[str, np.ndarray]] = {"infidelity": {}, "sensitivity_max": {}}
        for method in ctx.progress(list(values), desc="explanations: infidelity, sensitivity", total=len(values)):
            attr = values[method]
            if "infidelity" in p.quality:
                scores["infidelity"][method] = infidelity(
                    ctx.model, explained.x, attr, explained.target, explained.ids, noise=p.infidelity_noise * scale,
                    n_perturb=p.infidelity_samples, seed=ctx.seed, memory_mb=p.memory_mb)
            if "sensitivity" in p.quality:
                scores["sensitivity_max"][method] = sensitivity_max(
                    explainers[method], checks.x, checks.target, attr[positions], checks.ids,
                    radius=p.sensitivity_radius * span, n_perturb=p.sensitivity_samples, seed=ctx.seed,
                    lower=lower, upper=upper, perturbable=data.perturbable, memory_mb=p.memory_mb)
        estimates = {name: intervals(by_method, n_resamples=p.bootstrap_resamples, seed=ctx.seed,
                                     confidence=p.confidence) for name, by_method in scores.items() if by_method}
        for name, by_method in estimates.items():
            for method, estimate in by_method.items():
                self._estimate(result, f"{method}.{name}", estimate)
                per_sample[f"{name}.{method}"] = scores[name][method]
        level = f"{p.confidence:.0%}"
        rows = []
        for method in values:
            cells: list[Any] = [method]
            for name in ("infidelity", "sensitivity_max"):
                est = estimates.get(name, {}).get(method)
                cells += [est.mean, _ci(est)] if est is not None else [None, None]
            rows.append(cells)
        result.table("quality", f"Infidelity ({len(explained.ids)} samples) and sensitivity-max "
                     f"({len(checks.ids)} samples), {level} intervals",
                     ["method", "infidelity (lower better)", f"{level} interval", "sensitivity-max (lower better)",
                      f"{level} interval"], rows,
                     description="perturbations keyed per sample and shared by all methods; a method that samples "
                     "at random draws the same for an input and its perturbed copies, so sensitivity-max measures "
                     "the input's effect, not sampling noise")

    def _randomization(self, ctx: AuditContext, result: SectionResult, checks: Explained, positions: np.ndarray,
                       explainers: dict[str, Explainer], values: dict[str, np.ndarray], background: np.ndarray,
                       per_sample: dict[str, np.ndarray]) -> None:
        p = self.params
        try:
            layers = cascade_layers(ctx.model, checks.x)
        except ExplainerError as err:
            result.notes.append(f"randomization check not run: {err}")
            return
        reference = reference_input(ctx.model.bounds, background, ctx.data.modality, checks.x)
        mask = informative(checks.x, reference)
        image = ctx.data.modality == "image" and checks.x.ndim == 4
        steps: list[str] = []
        similarity: dict[str, list[np.ndarray]] = {m: [] for m in values}
        ssim: dict[str, list[np.ndarray]] = {m: [] for m in values}
        plan = list(cascade(layers, p.randomization_steps))
        for count, randomized_layers in ctx.progress(plan, desc="explanations: randomization cascade",
                                                     total=len(plan)):
            model = randomized_adapter(ctx.model, ctx.seed, randomized_layers)
            steps.append(randomized_layers[-1] if count == 1 else f"+ {randomized_layers[-1]}")
            for method, explainer in explainers.items():
                original = values[method][positions]
                try:
                    other = self._twin(explainer, model).explain(checks.x, checks.target, checks.ids)
                except ExplainerError as err:
                    result.notes.append(f"randomization check of {method} not run: {err}")
                    similarity.pop(method, None)
                    continue
                if method in similarity:
                    similarity[method].append(masked_rank_correlation(original, other, mask))
                    ssim[method].append(attribution_ssim(original, other) if image else np.full(len(other), np.nan))
        if not steps:
            return
        control_method = "ig" if "ig" in values else next(iter(values))
        original = values[control_method][positions]
        flipped = sign_randomized(original, checks.ids, ctx.seed)
        control = masked_rank_correlation(original, flipped, mask)
        signed = rank_correlation(original, flipped, absolute=False)
        result.metric("randomization.control_signed_spearman", float(np.nanmean(signed)))
        final = {m: v[-1] for m, v in similarity.items() if v}
        final[CONTROL] = control
        level = f"{p.confidence:.0%}"
        estimates = intervals(final, n_resamples=p.bootstrap_resamples, seed=ctx.seed, confidence=p.confidence)
        ssim_final = intervals({m: v[-1] for m, v in ssim.items() if v and m in final}, n_resamples=p.
                               bootstrap_resamples, seed=ctx.seed, confidence=p.confidence) if image else {}
        threshold = p.randomization_pass_below
        rows = []
        for method, estimate in estimates.items():
            verdict = _randomization_verdict(estimate, threshold)
            name = f"control: {control_method} with random signs (must fail)" if method == CONTROL else method
            key = "randomization.control_similarity" if method == CONTROL else f"{method}.randomization_similarity"
            self._estimate(result, key, estimate)
            if method != CONTROL:
                per_sample[f"randomization_similarity.{method}"] = final[method]
                result.metric(f"{method}.randomization_check_passes", None if verdict == "inconclusive"
                              else float(verdict == "passes"))
            ss = ssim_final.get(method)
            if ss is not None:
                self._estimate(result, f"{method}.randomization_ssim", ss)
            rows.append([name, estimate.mean, _ci(estimate), *([ss.mean, _ci(ss)] if image and ss else
                                                                ([None, None] if image else [])), verdict])
            if verdict == "fails" and method != CONTROL:
                result.finding("medium", f"{method}: its attributions barely change when the model's weights are "
                               f"re-initialized (Spearman of |attribution| on the informative features "
                               f"{estimate.mean:.2f} {_ci(estimate)} after randomizing all {len(layers)} layers, "
                               f"at least {threshold}); they reflect the input more than the model (Adebayo et al. "
                               "2018 sanity check)", code="explanations.randomization_check_failed",
                               metric=f"{self.section}.{method}.randomization_similarity", value=estimate.mean)
        columns = ["method", "Spearman of |attribution| after full randomization", f"{level} interval"]
        if image:
            columns += ["SSIM of |attribution| maps", f"{level} interval"]
        result.table("randomization", f"Cascading randomization sanity check ({len(checks.ids)} samples, "
                     f"{len(layers)} layers)", [*columns, "check"], rows,
                     description=f"passes when the interval lies below {threshold}, fails when it lies at or above "
                     "it; similarity on the features where the input differs from the attribution baseline. The "
                     "control has the first method's magnitudes with random signs: it does not depend on the "
                     f"model, yet its signed Spearman is {np.nanmean(signed):.2f} (a check on signed attributions "
                     "would pass it)")
        series = []
        for method, per_step in similarity.items():
            if not per_step:
                continue
            steps_est = [intervals({method: s}, n_resamples=p.bootstrap_resamples, seed=ctx.seed,
                                   confidence=p.confidence)[method] for s in per_step]
            series.append({"label": method, "x": steps[: len(per_step)], "y": [e.mean for e in steps_est],
                           "yerr_low": [_gap(e.mean, e.low) for e in steps_est],
                           "yerr_high": [_gap(e.high, e.mean) for e in steps_est]})
        series.append({"label": "control (random signs)", "x": steps, "y": [float(np.nanmean(control))] * len(steps),
                       "style": "--"})
        result.figure({"name": "randomization_cascade", "title": "Cascading randomization: similarity of "
                       "|attribution| to the original, layers randomized from the top", "kind": "line",
                       "series": series, "xlabel": "layers re-initialized (cumulative, output layer first)",
                       "ylabel": "Spearman of |attribution| (informative features)"})

    def _estimate(self, result: SectionResult, name: str, estimate: Estimate) -> None:
        result.metric(name, estimate.mean)
        result.metric(f"{name}.ci_low", estimate.low)
        result.metric(f"{name}.ci_high", estimate.high)

    def _bounds(self, ctx: AuditContext) -> tuple[Any, Any]:
        bounds = ctx.model.bounds
        lower = ctx.data.lower if ctx.data.lower is not None else (bounds.lower if bounds else None)
        upper = ctx.data.upper if ctx.data.upper is not None else (bounds.upper if bounds else None)
        return lower, upper

    # -- global importance ----------------------------------------------------------------------------
    def _global(self, ctx: AuditContext, result: SectionResult, values: dict[str, np.ndarray]) -> None:
        data = ctx.data
        importance = {m: mean_abs_attribution(v) for m, v in values.items()}
        if data.modality == "image":
            first = next(iter(importance))
            heat = importance[first].sum(axis=0) if importance[first].ndim == 3 else importance[first]
            if heat.ndim == 2:
                result.figure({"name": "global_importance", "title": f"Mean |attribution| per pixel ({first})",
                               "kind": "heatmap", "matrix": heat.tolist(),
                               "x_labels": [str(i) for i in range(heat.shape[1])],
                               "y_labels": [str(i) for i in range(heat.shape[0])]})
            return
        names = data.feature_names or [f"x{i}" for i in range(int(np.prod(data.input_shape)))]
        normalized = {m: v.reshape(-1) / max(float(v.sum()), 1e-12) for m, v in importance.items()}
        overall = np.mean(list(normalized.values()), axis=0)
        top = np.argsort(-overall, kind="stable")[:10]
        methods = list(normalized)
        result.figure({"name": "top_features", "title": "Top features: share of mean |attribution| per method",
                       "kind": "heatmap", "x_labels": methods, "y_labels": [names[i] for i in top],
                       "matrix": [[float(normalized[m][i]) for m in methods] for i in top]})
        perm_mean, perm_std = permutation_importance(ctx.model, data.x, data.y, n_repeats=self.params.
                                                     permutation_repeats, seed=ctx.seed)
        by_perm = np.argsort(-perm_mean, kind="stable")
        rows = [[names[i], float(perm_mean[i]), float(perm_std[i]), float(overall[i])] for i in by_perm[:15]]
        result.table("global_importance", "Global feature importance (top 15 by permutation importance)",
                     ["feature", "accuracy drop when shuffled", "std", "share of mean |attribution|"], rows)
        for i in by_perm[:3]:
            result.metric(f"permutation_importance.{_safe(names[i])}", perm_mean[i])
        tree = surrogate_tree(data.x, ctx.clean_predictions(), names, max_depth=self.params.surrogate_depth,
                              seed=ctx.seed, class_names=list(data.class_names))
        result.metric("surrogate.fidelity", tree.fidelity)
        result.figure({"name": "surrogate_tree", "kind": "tree", "nodes": tree.nodes, "fidelity": tree.fidelity,
                       "title": f"Surrogate decision tree (depth {tree.depth}) fitted to the model's predictions"})
        result.notes.append(f"surrogate decision tree (depth {tree.depth}, agrees with the model on "
                            f"{tree.fidelity:.1%} of held-out rows):\n{tree.rules}")

    # -- heatmaps -------------------------------------------------------------------------------------
    def _heatmaps(self, ctx: AuditContext, result: SectionResult, x: np.ndarray, target: np.ndarray,
                  values: dict[str, np.ndarray]) -> None:
        """Save input and attribution tiles (NPZ) and record an ``image_grid`` figure; reports/ draws it."""
        n = min(self.params.figure_samples, len(x))
        methods = list(values)
        tiles = np.stack([np.stack([x[row], *[values[m][row] for m in methods]]) for row in range(n)])
        path, rel = ctx.artifact_path(self.section, "heatmaps.npz")
        np.savez_compressed(path, tiles=tiles.astype(np.float32))
        bounds = ctx.model.bounds if ctx.model.bounds is not None else (float(x.min()), float(x.max()))
        names = ctx.data.class_names
        result.artifacts["heatmaps"] = rel
        result.figure({"name": "heatmaps", "title": "Attributions over the input (red: for the explained class, "
                       "blue: against)", "kind": "image_grid", "artifact": rel, "array": "tiles",
                       "column_labels": ["input", *methods], "row_labels": [f"#{row + 1}" for row in range(n)],
                       "tile_labels": [[f"class {names[int(target[row])]}", *[""] * len(methods)] for row in range(n)],
                       "styles": ["image", *["overlay"] * len(methods)], "styles_by": "column",
                       "bounds": [float(bounds[0]), float(bounds[1])]})

    # -- stability under attack -------------------------------------------------------------------------
    # -- stability under attack -------------------------------------------------------------------------
    def _stability(self, ctx: AuditContext, result: SectionResult, explainers: dict[str, Explainer]) -> None:
        p = self.params
        if not ctx.adversarial:
            result.notes.append("stability under attack not measured: no adversarial examples in this audit "
                                "(add the robustness section before explanations in the config)")
            return
        key = pick_key(ctx.adversarial, p.stability_key)
        if key not in ctx.adversarial:
            result.notes.append(f"stability under attack not measured: no adversarial outcome '{key}'; the "
                                f"robustness section left {sorted(ctx.adversarial)}")
            return
        outcome = ctx.adversarial[key]
        clean_pred = ctx.clean_predictions()
        try:
            outcome_rows(outcome, ctx.data.n_samples)
        except ValueError as err:
            result.notes.append(f"stability under attack not measured: the adversarial outcome {key} does not fit "
                                f"the data: {err}")
            return
        adv_pred = ctx.model.predict(outcome.x_adv)  # one per attacked row (outcome.index), not per data row
        sample = select_samples(outcome, ctx.data.x, clean_pred, adv_pred, p.stability_samples, ctx.seed)
        if len(sample.index) == 0:
            result.notes.append(f"stability under attack not measured: the attack at {key} perturbed none of the "
                                f"{sample.attacked} samples it attacked")
            return
        if sample.attacked < ctx.data.n_samples:
            result.notes.append(f"stability at {key}: the robustness section attacked {sample.attacked} of the "
                                f"{ctx.data.n_samples} samples (its max_samples); {sample.perturbed} of them have "
                                f"an adversarial input that differs from the clean one, and {len(sample.index)} of "
                                "those are compared (stability_samples)")
        idx, pos, fooled = sample.index, sample.position, sample.flipped
        x, x_adv = ctx.data.x[idx], np.asarray(outcome.x_adv[pos])
        features = int(np.prod(ctx.data.input_shape))
        k = p.top_k or max(3, features // 10)
        lower, upper = self._bounds(ctx)
        noisy = matched_noise(x, x_adv, outcome.norm, idx, ctx.seed, lower, upper, ctx.data.perturbable)
        attack_linf, attack_l2 = perturbation_norms(x_adv - x)
        noise_linf, noise_l2 = perturbation_norms(noisy - x)
        for name, values in (("attack_linf", attack_linf), ("attack_l2", attack_l2), ("noise_linf", noise_linf),
                             ("noise_l2", noise_l2)):
            result.metric(f"stability.{name}", float(values.mean()))
        noisy_pred = ctx.model.predict(noisy)
        clean_class = clean_pred[idx]
        rows = []
        for method in ctx.progress(list(explainers), desc="explanations: stability", total=len(explainers)):
            explainer = explainers[method]
            clean = explainer.explain(x, clean_class, idx)
            same_class = explainer.explain(x_adv, clean_class, idx)  # only the input changed
            overlap, rho = compare(clean, same_class, k)
            noise_overlap, _ = compare(clean, explainer.explain(noisy, clean_class, idx), k)
            cells: list[Any] = [method]
            groups = {"unflipped": (overlap, ~fooled), "flipped_clean_class": (overlap, fooled)}
            if fooled.any():
                own = explainer.explain(x_adv[fooled], adv_pred[pos][fooled], idx[fooled])
                own_overlap = np.full(len(idx), np.nan)
                own_overlap[fooled] = compare(clean[fooled], own, k)[0]
                groups["flipped_adversarial_class"] = (own_overlap, fooled)
            for group in ("unflipped", "flipped_clean_class", "flipped_adversarial_class"):
                values, mask = groups.get(group, (overlap, np.zeros(len(idx), bool)))
                value = float(values[mask].mean()) if mask.any() else None
                result.metric(f"stability.{method}.topk_overlap_{group}", value)
                cells.append(value)
            result.metric(f"stability.{method}.topk_overlap", overlap.mean())
            result.metric(f"stability.{method}.spearman", np.nanmean(rho) if np.isfinite(rho).any() else np.nan)
            result.metric(f"stability.{method}.topk_overlap_random_noise", noise_overlap.mean())
            cells += [float(noise_overlap.mean()), float(np.nanmean(rho)) if np.isfinite(rho).any() else None]
            rows.append(cells)
        result.metric("stability.n_flipped", int(fooled.sum()))
        result.metric("stability.n_unflipped", int((~fooled).sum()))
        norm = "L2" if outcome.norm == "l2" else "L-inf"
        result.table("stability", f"Explanation stability under attack ({key}, {outcome.attack}; top-{k} overlap "
                     "with the clean explanation)",
                     ["method", f"prediction unchanged ({int((~fooled).sum())})",
                      f"fooled, explained for the clean class ({int(fooled.sum())})",
                      f"fooled, explained for the adversarial class ({int(fooled.sum())})",
                      f"random noise of the attack's {norm} size ({len(idx)})",
                      "Spearman of |attribution|, clean vs attacked (clean class)"], rows,
                     description="the clean input is explained for its predicted class; 1 = the same top features. "
                     "Fooled samples are compared twice: explained for the clean class (only the input changed) and "
                     "for the class the attack produced (the explanation of the new decision). The noise has each "
                     f"sample's own attack size in {norm} (mean L-inf {noise_linf.mean():.3g} vs the attack's "
                     f"{attack_linf.mean():.3g}, mean L2 {noise_l2.mean():.3g} vs {attack_l2.mean():.3g})")
        if not (~fooled).any():
            result.notes.append(f"stability at {key}: every attacked sample changed its prediction, so the "
                                "'prediction unchanged' case is not measured; set stability_key to a smaller eps "
                                "(random noise of the same size is the reference: topk_overlap_random_noise)")
        elif not fooled.any():
            result.notes.append(f"stability at {key}: no attacked sample changed its prediction, so the "
                                "'prediction changed' case is not measured; set stability_key to a larger eps")
        result.metric("stability.noise_flipped_fraction", float((noisy_pred != clean_class).mean()))


RANDOM = "random"
CONTROL = "control"


def _ci(estimate: Estimate | None) -> str | None:
    """An interval as text, three significant digits."""
    if estimate is None or not np.isfinite(estimate.low):
        return None
    return f"[{estimate.low:.3g}, {estimate.high:.3g}]"


def _gap(a: float, b: float) -> float | None:
    return float(a - b) if np.isfinite(a) and np.isfinite(b) else None


def _bar_series(label: str, ranking: Ranking, methods: list[str]) -> dict[str, Any]:
    ests = [ranking.estimates[m] for m in methods]
    return {"label": label, "x": methods, "y": [e.mean for e in ests],
            "yerr_low": [_gap(e.mean, e.low) for e in ests], "yerr_high": [_gap(e.high, e.mean) for e in ests]}


def _randomization_verdict(estimate: Estimate, threshold: float) -> str:
    if not np.isfinite(estimate.high):
        return "inconclusive"
    if estimate.high < threshold:
        return "passes"
    if estimate.low >= threshold:
        return "fails"
    return "inconclusive"


def _safe(name: str) -> str:
    """A feature name usable inside a metric name."""
    return "".join(c if c.isalnum() or c in "_=+-<>" else "_" for c in name)
