"""The ``explanations`` section: attributions per method, their quality, global importance, stability under attack."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from audit.context import AttributionSet
from audit.data import stratified_subset
from audit.plugin import Params, SectionPlugin
from audit.results import SectionResult
from explain.base import Explainer, ExplainerError
from explain.captum_methods import (
    DeepLiftExplainer,
    GradientShapExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    SaliencyExplainer,
)
from explain.global_importance import mean_abs_attribution, permutation_importance, surrogate_tree
from explain.lime_methods import LimeExplainer
from explain.lrp import LRPExplainer
from explain.quality import (
    FaithfulnessCurves,
    deletion_insertion,
    infidelity,
    randomized_adapter,
    rank_correlation,
    sensitivity_max,
)
from explain.shap_methods import ShapDeepExplainer, ShapGradientExplainer, ShapKernelExplainer
from explain.stability import compare, pick_key, random_perturbation, select_samples

if TYPE_CHECKING:
    from audit.context import AuditContext

METHODS: dict[str, type[Explainer]] = {
    "ig": IntegratedGradientsExplainer,
    "saliency": SaliencyExplainer,
    "gradient_shap": GradientShapExplainer,
    "deeplift": DeepLiftExplainer,
    "lrp": LRPExplainer,
    "occlusion": OcclusionExplainer,
    "shap_gradient": ShapGradientExplainer,
    "shap_deep": ShapDeepExplainer,
    "shap_kernel": ShapKernelExplainer,
    "lime": LimeExplainer,
}
EXPLAINERS_GROUP = "nnaudit.explainers"


def explainer_classes() -> dict[str, type[Explainer]]:
    """Built-in methods plus those other packages register in the ``nnaudit.explainers`` group."""
    from audit.plugin import available, load_plugin

    found = dict(METHODS)
    for name, target in available(EXPLAINERS_GROUP).items():
        if name in found or target.startswith("explain."):
            continue
        cls = load_plugin(name, EXPLAINERS_GROUP)
        if not (isinstance(cls, type) and issubclass(cls, Explainer)):
            raise ExplainerError(f"plugin '{name}' in {EXPLAINERS_GROUP} is {cls!r}, not an explain.Explainer")
        found[name] = cls
    return found


DEFAULT_METHODS = ["ig", "saliency", "gradient_shap", "lrp", "occlusion", "shap_gradient", "lime"]
Quality = Literal["deletion", "insertion", "infidelity", "sensitivity", "randomization"]
ALL_QUALITY: list[Quality] = ["deletion", "insertion", "infidelity", "sensitivity", "randomization"]


class ExplanationsParams(Params):
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description=f"attribution methods, any of: {', '.join(METHODS)}")
    n_samples: int = Field(20, ge=1, description="samples explained (stratified over classes; predicted class)")
    background_size: int = Field(32, ge=1, description="background / reference rows (gradient_shap, shap, lime)")
    batch_size: int = Field(64, ge=1, description="samples per explainer call")
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
    infidelity_samples: int = Field(16, ge=1, description="perturbations per input for infidelity")
    infidelity_noise: float = Field(0.1, gt=0, description="infidelity noise std, as a fraction of the data std")
    sensitivity_samples: int = Field(4, ge=1, description="perturbations per input for sensitivity-max")
    sensitivity_radius: float = Field(0.02, gt=0, description="sensitivity radius, as a fraction of the data range")
    randomization_pass_below: float = Field(0.5, gt=-1, le=1, description="Spearman below which the randomization "
                                            "check passes (attributions differ under a randomized model)")
    stability: bool = Field(True, description="compare clean and adversarial attributions (needs robustness)")
    stability_key: str | None = Field(None, description="ctx.adversarial key 'norm:eps', e.g. 'linf:0.1' (default: "
                                      "the linf eps splitting fooled and resisting samples most evenly)")
    stability_samples: int = Field(20, ge=1, description="attacked samples compared")
    top_k: int = Field(0, ge=0, description="features in the top-k overlap (0: 10% of the features, at least 3)")
    permutation_repeats: int = Field(5, ge=1, description="shuffles per feature for permutation importance")
    surrogate_depth: int = Field(3, ge=1, le=10, description="depth of the surrogate decision tree (tabular)")
    figure_samples: int = Field(4, ge=1, description="samples in the heatmap grid (images)")

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


class ExplanationsSection(SectionPlugin):
    """Attributions (captum, shap, lime), their faithfulness and sanity, global importance, stability under attack."""

    name = "explanations"
    title = "Explanations"
    ParamsModel = ExplanationsParams
    params: ExplanationsParams
    reads_sections: ClassVar[tuple[str, ...]] = ("robustness",)

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        p = self.params
        data = ctx.data
        index = stratified_subset(data.y, p.n_samples, ctx.seed)
        x = data.x[index]
        target = ctx.clean_predictions()[index].astype(np.int64)
        rest = np.setdiff1d(np.arange(data.n_samples), index)
        pool = rest if len(rest) else np.arange(data.n_samples)
        background = data.x[pool[stratified_subset(data.y[pool], p.background_size, ctx.seed + 1)]]
        explainers: dict[str, Explainer] = {}
        values: dict[str, np.ndarray] = {}
        cost_rows: list[list[Any]] = []
        for method in p.methods:
            explainer = self._build(ctx, result, method, background, p.methods)
            if explainer is None:
                continue
            start = time.perf_counter()
            try:
                attr = explainer.explain(x, target)
            except ExplainerError as err:
                self._unavailable(result, method, str(err))
                continue
            seconds = time.perf_counter() - start
            explainers[method], values[method] = explainer, attr
            ctx.attributions[method] = AttributionSet(method=method, index=index, target=target, values=attr)
            evaluations = explainer.counter.rows / len(x)
            result.metric(f"{method}.model_evaluations_per_sample", evaluations)
            per_sample = round(evaluations, 1)
            cost_rows.append([method, round(1e3 * seconds / len(x), 3),
                              int(per_sample) if float(per_sample).is_integer() else per_sample,
                              explainer.counter.calls])
            if isinstance(explainer, ShapDeepExplainer) and explainer.fallback_reason:
                result.finding("low", explainer.fallback_reason, code="explanations.shap_deep_fallback")
        if not values:
            result.status = "skipped"
            result.notes.append("no explanation method could run on this model; see the findings")
            return
        path, rel = ctx.artifact_path(self.section, "attributions.npz")
        arrays: dict[str, Any] = {"index": index, "target": target, "x": x, **values}
        np.savez_compressed(path, **arrays)
        result.artifacts["attributions"] = rel
        result.table("cost", "Cost per method", ["method", "ms per sample", "model evaluations per sample",
                                                 "batched calls"], cost_rows)
        self._quality(ctx, result, x, target, explainers, values)
        self._global(ctx, result, values)
        if data.modality == "image":
            self._heatmaps(ctx, result, x, target, values)
        if p.stability:
            self._stability(ctx, result, explainers)

    # -- explainers ---------------------------------------------------------------------------------
    def _build(self, ctx: AuditContext, result: SectionResult, method: str, background: np.ndarray,
               chosen: list[str]) -> Explainer | None:
        p = self.params
        common: dict[str, Any] = {"batch_size": p.batch_size, "seed": ctx.seed, "background": background,
                                  "modality": ctx.data.modality}
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
        extra = extras.get(method, {})
        try:
            return explainer_classes()[method](ctx.model, **common, **extra)
        except ExplainerError as err:
            self._unavailable(result, method, str(err), asked="methods" in self.params.model_fields_set)
            return None

    def _unavailable(self, result: SectionResult, method: str, message: str, asked: bool = True) -> None:
        result.notes.append(f"{method}: not run: {message}")
        if asked:
            result.finding("low", f"explanation method '{method}' could not run: {message}",
                           code="explanations.method_unavailable")

    # -- quality ------------------------------------------------------------------------------------
    def _quality(self, ctx: AuditContext, result: SectionResult, x: np.ndarray, target: np.ndarray,
                 explainers: dict[str, Explainer], values: dict[str, np.ndarray]) -> None:
        p = self.params
        asked = set(p.quality)
        data = ctx.data
        baseline = self._baseline(ctx)
        rows: dict[str, dict[str, Any]] = {m: {} for m in values}
        curves: dict[str, FaithfulnessCurves] = {}
        if asked & {"deletion", "insertion"}:
            rng = np.random.default_rng(ctx.seed)
            reference = {"random": rng.standard_normal(x.shape)}
            for method, attr in {**values, **reference}.items():
                curves[method] = deletion_insertion(ctx.model.numpy_predict_proba, x, attr, target, baseline,
                                                    n_steps=p.quality_steps)
            for method in values:
                rows[method]["deletion_auc"] = curves[method].deletion_auc
                rows[method]["insertion_auc"] = curves[method].insertion_auc
            result.metric("random.deletion_auc", curves["random"].deletion_auc)
            result.metric("random.insertion_auc", curves["random"].insertion_auc)
        scale = float(data.x.std()) or 1.0
        span = float(data.x.max() - data.x.min()) or 1.0
        randomized = None
        if "randomization" in asked:
            try:
                randomized = randomized_adapter(ctx.model, ctx.seed + 7)
            except ExplainerError as err:
                result.notes.append(f"randomization check not run: {err}")
        for method, attr in values.items():
            explainer = explainers[method]
            if "infidelity" in asked:
                rows[method]["infidelity"] = float(np.mean(infidelity(
                    ctx.model, x, attr, target, noise=p.infidelity_noise * scale, n_perturb=p.infidelity_samples,
                    seed=ctx.seed)))
            if "sensitivity" in asked:
                rows[method]["sensitivity_max"] = float(np.mean(sensitivity_max(
                    explainer, x, target, radius=p.sensitivity_radius * span, n_perturb=p.sensitivity_samples,
                    seed=ctx.seed)))
            if randomized is not None:
                twin = type(explainer)(randomized, **self._twin_kwargs(ctx, explainer))
                other = twin.explain(x, target)
                for key, absolute in (("randomization_spearman", False), ("randomization_spearman_abs", True)):
                    corr = rank_correlation(attr, other, absolute=absolute)
                    rows[method][key] = float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
        for method, row in rows.items():
            for key, value in row.items():
                result.metric(f"{method}.{key}", value)
            rho = row.get("randomization_spearman")
            if rho is not None and np.isfinite(rho) and rho >= p.randomization_pass_below:
                result.finding("medium", f"{method}: attributions barely change when the model's weights are "
                               f"re-initialized (Spearman {rho:.2f} >= {p.randomization_pass_below}); they reflect "
                               "the input more than the model (Adebayo et al. 2018 sanity check)",
                               code="explanations.randomization_check_failed",
                               metric=f"{self.section}.{method}.randomization_spearman", value=rho)
            if "random" in curves and "deletion_auc" in row and row["deletion_auc"] >= curves["random"].deletion_auc:
                result.finding("medium", f"{method}: deleting its most important features first lowers the "
                               f"model's confidence no faster than a random order (deletion AUC "
                               f"{row['deletion_auc']:.3f} vs {curves['random'].deletion_auc:.3f}); it is not "
                               "faithful to this model", code="explanations.not_faithful",
                               metric=f"{self.section}.{method}.deletion_auc", value=row["deletion_auc"])
        self._quality_report(result, rows, curves)

    def _twin_kwargs(self, ctx: AuditContext, explainer: Explainer) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"batch_size": explainer.batch_size, "seed": explainer.seed,
                                  "background": explainer.background, "modality": explainer.modality}
        for name in ("n_steps", "n_samples", "window", "segmentation", "cell"):
            if hasattr(explainer, name):
                kwargs[name] = getattr(explainer, name)
        if isinstance(explainer, ShapKernelExplainer):
            kwargs["n_background"] = self.params.kernel_shap_background
        return kwargs

    def _baseline(self, ctx: AuditContext) -> np.ndarray:
        data = ctx.data
        if data.modality == "tabular":
            return data.x.mean(axis=0)
        fill = ctx.model.bounds.lower if ctx.model.bounds is not None else 0.0
        return np.full(data.input_shape, fill, np.float32)

    def _quality_report(self, result: SectionResult, rows: dict[str, dict[str, Any]],
                        curves: dict[str, FaithfulnessCurves]) -> None:
        keys = ["deletion_auc", "insertion_auc", "infidelity", "sensitivity_max", "randomization_spearman",
                "randomization_spearman_abs"]
        order = sorted(rows, key=lambda m: (rows[m].get("deletion_auc", np.inf), -rows[m].get("insertion_auc", 0)))
        threshold = self.params.randomization_pass_below
        table = []
        for rank, method in enumerate(order, 1):
            rho = rows[method].get("randomization_spearman")
            verdict = None if rho is None or not np.isfinite(rho) else ("passes" if rho < threshold else "fails")
            table.append([rank, method, *[rows[method].get(k) for k in keys], verdict])
        if "random" in curves:
            table.append([None, "random (reference)", curves["random"].deletion_auc, curves["random"].insertion_auc,
                          None, None, None, None, None])
        result.table("quality", "Explanation quality, methods ranked by faithfulness (deletion AUC, lower better)",
                     ["rank", "method", "deletion AUC (lower better)", "insertion AUC (higher better)",
                      "infidelity (lower better)", "sensitivity-max (lower better)",
                      "randomization Spearman (lower better)", "randomization Spearman of |attribution|",
                      "randomization check"], table)
        for kind in ("deletion", "insertion"):
            if not curves:
                break
            series = [{"label": m, "x": c.fractions.tolist(), "y": getattr(c, kind).mean(axis=0).tolist(),
                       **({"style": "dashed"} if m == "random" else {})} for m, c in curves.items()]
            result.figure({"name": f"{kind}_curves", "title": f"{kind.capitalize()} curves", "kind": "line",
                           "series": series, "xlabel": f"fraction of features {kind[:-3]}ed, most important first",
                           "ylabel": "probability of the explained class"})

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
        result.figure({"name": "top_features", "title": "Top features (share of mean |attribution|)", "kind": "bar",
                       "xlabel": "feature", "ylabel": "share of mean |attribution|",
                       "series": [{"label": m, "x": [names[i] for i in top], "y": v[top].tolist()}
                                  for m, v in normalized.items()]})
        perm_mean, perm_std = permutation_importance(ctx.model, data.x, data.y, n_repeats=self.params.
                                                     permutation_repeats, seed=ctx.seed)
        by_perm = np.argsort(-perm_mean, kind="stable")
        rows = [[names[i], float(perm_mean[i]), float(perm_std[i]), float(overall[i])] for i in by_perm[:15]]
        result.table("global_importance", "Global feature importance (top 15 by permutation importance)",
                     ["feature", "accuracy drop when shuffled", "std", "share of mean |attribution|"], rows)
        for i in by_perm[:3]:
            result.metric(f"permutation_importance.{_safe(names[i])}", perm_mean[i])
        tree = surrogate_tree(data.x, ctx.clean_predictions(), names, max_depth=self.params.surrogate_depth,
                              seed=ctx.seed)
        result.metric("surrogate.fidelity", tree.fidelity)
        result.notes.append(f"surrogate decision tree (depth {tree.depth}, agrees with the model on "
                            f"{tree.fidelity:.1%} of held-out rows):\n{tree.rules}")

    # -- heatmaps -------------------------------------------------------------------------------------
    def _heatmaps(self, ctx: AuditContext, result: SectionResult, x: np.ndarray, target: np.ndarray,
                  values: dict[str, np.ndarray]) -> None:
        from matplotlib.figure import Figure

        n = min(self.params.figure_samples, len(x))
        methods = list(values)
        fig = Figure(figsize=(1.6 * (len(methods) + 1), 1.7 * n))
        axes = fig.subplots(n, len(methods) + 1, squeeze=False)
        for row in range(n):
            image = x[row].mean(axis=0) if x[row].shape[0] != 3 else np.moveaxis(x[row], 0, -1)
            axes[row][0].imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes[row][0].set_title(f"input, class {ctx.data.class_names[target[row]]}", fontsize=7)
            for col, method in enumerate(methods, 1):
                attr = values[method][row].sum(axis=0)
                bound = float(np.abs(attr).max()) or 1.0
                axes[row][col].imshow(image if image.ndim == 2 else image.mean(axis=-1), cmap="gray", alpha=0.5)
                axes[row][col].imshow(attr, cmap="bwr", vmin=-bound, vmax=bound, alpha=0.7)
                if row == 0:
                    axes[row][col].set_title(method, fontsize=7)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path, rel = ctx.artifact_path(self.section, "heatmaps.png")
        fig.savefig(path, dpi=100)
        result.artifacts["heatmaps"] = rel
        result.figure({"name": "heatmaps", "title": "Attributions (red: for the explained class, blue: against)",
                       "kind": "image", "artifact": rel})

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
        adv_pred = ctx.model.predict(outcome.x_adv)
        sample = select_samples(outcome, ctx.data.x, clean_pred, adv_pred, p.stability_samples, ctx.seed)
        if len(sample.index) == 0:
            result.notes.append(f"stability under attack not measured: the attack at {key} perturbed no sample")
            return
        idx = sample.index
        features = int(np.prod(ctx.data.input_shape))
        k = p.top_k or max(3, features // 10)
        bounds = ctx.model.bounds
        lower = ctx.data.lower if ctx.data.lower is not None else (bounds.lower if bounds else None)
        upper = ctx.data.upper if ctx.data.upper is not None else (bounds.upper if bounds else None)
        noisy = random_perturbation(ctx.data.x[idx], outcome.norm, outcome.eps, lower, upper, ctx.seed,
                                    ctx.data.perturbable)
        noisy_pred = ctx.model.predict(noisy)
        rows = []
        for method, explainer in explainers.items():
            clean = explainer.explain(ctx.data.x[idx], clean_pred[idx])
            adv = explainer.explain(outcome.x_adv[idx], adv_pred[idx])
            noise_overlap, _ = compare(clean, explainer.explain(noisy, noisy_pred), k)
            result.metric(f"stability.{method}.topk_overlap_random_noise", noise_overlap.mean())
            overlap, rho = compare(clean, adv, k)
            result.metric(f"stability.{method}.topk_overlap", overlap.mean())
            result.metric(f"stability.{method}.spearman", np.nanmean(rho) if np.isfinite(rho).any() else np.nan)
            groups = {"flipped": sample.flipped, "unflipped": ~sample.flipped}
            cells: list[Any] = [method, float(overlap.mean())]
            for group, mask in groups.items():
                value = float(overlap[mask].mean()) if mask.any() else float("nan")
                result.metric(f"stability.{method}.topk_overlap_{group}", value)
                cells.append(value if mask.any() else None)
            cells.append(float(np.nanmean(rho)) if np.isfinite(rho).any() else None)
            cells.append(float(noise_overlap.mean()))
            rows.append(cells)
        result.metric("stability.n_flipped", int(sample.flipped.sum()))
        result.metric("stability.n_unflipped", int((~sample.flipped).sum()))
        result.table("stability", f"Explanation stability under attack ({key}, {outcome.attack}; top-{k} overlap)",
                     ["method", "top-k overlap", "prediction changed", "prediction unchanged", "Spearman",
                      "top-k overlap under random noise of the same size"], rows,
                     description="each input explained for the class the model predicts on it; 1 = same top "
                     "features after the attack")
        if not (~sample.flipped).any():
            result.notes.append(f"stability at {key}: every attacked sample changed its prediction, so the "
                                "'prediction unchanged' case is not measured; set stability_key to a smaller eps "
                                "(random noise of the same size is the reference: topk_overlap_random_noise)")
        elif not sample.flipped.any():
            result.notes.append(f"stability at {key}: no attacked sample changed its prediction, so the "
                                "'prediction changed' case is not measured; set stability_key to a larger eps")
        result.metric("stability.noise_flipped_fraction", float((noisy_pred != clean_pred[idx]).mean()))


def _safe(name: str) -> str:
    """A feature name usable inside a metric name."""
    return "".join(c if c.isalnum() or c in "_=+-<>" else "_" for c in name)
