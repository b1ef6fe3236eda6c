"""The ``explanations`` section for regression and multi-label models (``ExplanationsSection.run`` dispatches here).

What is explained is a score the network outputs, through the same explainers (``explain.captum_methods``,
occlusion): for regression the predicted value (output 0, captum's ``target=0``), for multi-label each label's logit
(``target=j``), one explanation per label. Methods that explain class probabilities of a softmax (lime, kernel
shap, shap's gradient/deep explainers through the softmax, LRP's logit rules) are left out with a note.

Faithfulness where it makes sense: deletion and insertion curves (``explain.faithfulness``) follow the predicted
value (regression, target units) or the label's sigmoid probability (multi-label), features removed most positive
attribution first, against a random ordering of the informative features; the methods are ranked by deletion AUC
with paired bootstrap intervals (``explain.ranking``). Global importance is the mean |attribution| per feature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit.keys import metric_key
from explain.base import Explainer, ExplainerError
from explain.faithfulness import (
    RANDOM,
    FaithfulnessCurves,
    deletion_baseline,
    deletion_insertion,
    informative,
    random_ordering,
    rank_faithfulness,
)

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import SectionResult

# the built-in methods that explain one output score through the adapter's forward pass
TASK_METHODS: tuple[str, ...] = ("ig", "saliency", "gradient_shap", "deeplift", "occlusion")


def run_task_explanations(ctx: AuditContext, result: SectionResult, params: Any, section: str) -> None:
    """Explain the predicted value (regression) or every label (multi-label); ``params``: ExplanationsParams."""
    from audit.plugin import available, construct, plugin_class

    data = ctx.data
    methods = [m for m in params.methods if m in TASK_METHODS]
    left = [m for m in params.methods if m not in TASK_METHODS]
    if left:
        result.notes.append(f"{', '.join(left)} explain class probabilities (a softmax) and are not run for a "
                            f"{data.task} model; gradient and occlusion methods explain its output: "
                            f"{', '.join(TASK_METHODS)}")
    rng = np.random.default_rng(ctx.seed)
    n = min(params.n_samples, data.n_samples)
    index = np.sort(rng.choice(data.n_samples, n, replace=False))
    background = data.x[np.sort(rng.choice(data.n_samples, min(params.background_size, data.n_samples),
                                           replace=False))]
    classes = {m: plugin_class(m, "nnaudit.explainers", Explainer, key=f"sections.{section}.methods")
               for m in available("nnaudit.explainers") if m in methods}
    explainers: dict[str, Explainer] = {}
    for method in methods:
        defaults = classes[method].section_defaults(batch_size=params.batch_size, seed=ctx.seed,
                                                    background=background, modality=data.modality,
                                                    memory_mb=params.memory_mb, feature_names=data.feature_names)
        try:
            explainers[method] = construct(classes[method], method, key=f"sections.{section}.method_params.{method}",
                                           defaults=defaults, params=dict(params.method_params.get(method, {})),
                                           fixed={"adapter": ctx.model})
        except ExplainerError as err:
            result.notes.append(f"{method} skipped: {err}")
    if not explainers:
        result.status = "skipped"
        result.notes.append(f"no method can explain this {data.task} model; list some of {', '.join(TASK_METHODS)} "
                            f"in sections.{section}.methods")
        return
    x = data.x[index]
    targets: list[tuple[int, str | None]] = [(0, None)] if data.task == "regression" else [
        (j, str(label)) for j, label in enumerate(data.class_names)]
    for j, name in targets:
        target = np.full(n, j, np.int64)
        values = {m: e.explain(x, target, ids=index) for m, e in ctx.progress(
            explainers.items(), desc=f"explanations{'' if name is None else f' ({name})'}", total=len(explainers))}
        prefix = () if name is None else (("label", _safe(str(name))),)
        _importance(result, data.feature_names, values, prefix, name)
        if {"deletion", "insertion"} & set(params.quality):
            _faithfulness(ctx, result, x, target, index, values, params, prefix, name, section)
    what = "the predicted value (output 0)" if data.task == "regression" else "each label's logit"
    result.notes.append(f"explained {what} for {n} samples drawn at random (n_samples) with "
                        f"{', '.join(explainers)}")


def score_function(ctx: AuditContext) -> Callable[[np.ndarray], np.ndarray]:
    """What the deletion curves follow: the predicted value (regression) or each label's probability (sigmoid)."""
    if ctx.data.task == "regression":
        return lambda batch: ctx.model.logits(batch).double().numpy()
    return lambda batch: torch.sigmoid(ctx.model.logits(batch).double()).numpy()


def _importance(result: SectionResult, features: list[str] | None, values: dict[str, np.ndarray],
                prefix: tuple[Any, ...], name: str | None) -> None:
    share = {}
    for method, attr in values.items():
        mean_abs = np.abs(attr.reshape(len(attr), -1)).mean(axis=0)
        share[method] = mean_abs / mean_abs.sum() if mean_abs.sum() > 0 else mean_abs
    first = next(iter(share.values()))
    if features is None or len(features) != len(first):
        return
    order = np.argsort(-first)[:20]
    suffix = "" if name is None else f"_{_safe(name)}"
    what = "the predicted value" if name is None else f"label '{name}'"
    result.table(f"importance{suffix}", f"Feature importance for {what} (share of mean |attribution|)",
                 ["feature", *share], [[features[i], *[float(s[i]) for s in share.values()]] for i in order])
    for method, s in share.items():
        result.metric(metric_key(*prefix, method, "top_feature_share"), float(s.max()))


def _faithfulness(ctx: AuditContext, result: SectionResult, x: np.ndarray, target: np.ndarray, ids: np.ndarray,
                  values: dict[str, np.ndarray], params: Any, prefix: tuple[Any, ...], name: str | None,
                  section: str) -> None:
    baseline = deletion_baseline("mean", x, data_mean=ctx.data.x.mean(axis=0), fill=0.0, sigma=0.0,
                                 modality=ctx.data.modality)
    orderings = {**values, RANDOM: random_ordering(x, baseline, ids, ctx.seed)}
    score = score_function(ctx)
    curves: dict[str, FaithfulnessCurves] = {
        m: deletion_insertion(score, x, attr, target, baseline, n_steps=params.quality_steps)
        for m, attr in orderings.items()}
    found = rank_faithfulness(curves, baseline="mean", informative_share=float(informative(x, baseline).mean()),
                              n_resamples=params.bootstrap_resamples, seed=ctx.seed, confidence=params.confidence)
    deletion, insertion = found.rankings["deletion"], found.rankings["insertion"]
    rows: list[list[Any]] = []
    for method in [m for m in deletion.order if m != RANDOM]:
        est, ins, vs = deletion.estimates[method], insertion.estimates[method], deletion.difference(method, RANDOM)
        result.metric(metric_key(*prefix, method, "deletion_auc"), est.mean)
        result.metric(metric_key(*prefix, method, "insertion_auc"), ins.mean)
        result.metric(metric_key(*prefix, method, "faithfulness_rank"), deletion.ranks[method])
        rows.append([deletion.ranks[method], method, est.mean, est.low, est.high, ins.mean, vs.mean, vs.low, vs.high])
        if not deletion.better(method, RANDOM):
            what = "the predicted value" if name is None else f"the probability of label '{name}'"
            result.finding("medium", f"{method}: deleting its most important features first lowers {what} no faster "
                           f"than a random order of the informative features (deletion AUC {est.mean:.4g} vs "
                           f"{deletion.estimates[RANDOM].mean:.4g}); it is not shown to be faithful",
                           code="explanations.not_faithful",
                           metric=metric_key(section, *prefix, method, "deletion_auc"), value=est.mean)
    suffix = "" if name is None else f"_{_safe(name)}"
    unit = "predicted value (target units)" if name is None else "label probability"
    result.table(f"faithfulness{suffix}", f"Faithfulness{'' if name is None else f' for {name}'}: area under the "
                 f"{unit} as features are deleted / inserted", ["rank", "method", "deletion_auc", "ci_low",
                 "ci_high", "insertion_auc", "vs_random", "vs_random_ci_low", "vs_random_ci_high"], rows,
                 description=f"deletion: lower is more faithful; vs_random: deletion AUC minus the random ordering's "
                             f"({params.confidence:.0%} paired bootstrap intervals over {found.n} samples)")
    result.figure({"name": f"deletion{suffix}", "title": f"Deletion curves{'' if name is None else f' ({name})'}",
                   "kind": "line", "xlabel": "fraction of features deleted", "ylabel": unit,
                   "series": [{"label": m, "x": found.fractions.tolist(), "y": c.tolist()}
                              for m, c in found.mean_curves["deletion"].items()]})


def _safe(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return out or "label"
