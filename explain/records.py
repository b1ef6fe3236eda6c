"""What the explanations section writes into its result: metrics, tables, figure data and findings, from the
dataclasses the computing modules return (``explain.faithfulness``, ``explain.quality``, ``explain.randomization``,
``explain.global_importance``, ``explain.stability``). Nothing is computed here beyond formatting; all drawing
happens in ``reports/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.keys import metric_key
from audit.results import SectionResult
from explain.faithfulness import KINDS, RANDOM, Faithfulness
from explain.global_importance import TabularImportance
from explain.quality import PerturbationQuality
from explain.randomization import CONTROL, Randomization
from explain.ranking import Estimate, Ranking
from explain.stability import GROUPS, Stability

if TYPE_CHECKING:
    from audit.context import AuditContext


def estimate(result: SectionResult, name: str, value: Estimate) -> None:
    result.metric(name, value.mean)
    result.metric(metric_key(name, "ci_low"), value.low)
    result.metric(metric_key(name, "ci_high"), value.high)


def chunk_notes(result: SectionResult, backend: Any, ran: int, total: int, chunk_size: int) -> None:
    """Where the chunks ran (a backend other than this process), and how many a resumed run kept."""
    if ran and getattr(backend, "name", "local") != "local":
        where = ", ".join(f"{k} {v}" for k, v in backend.describe().items() if k != "backend" and v)
        result.notes.append(f"{ran} chunk(s) of {chunk_size} explained samples ran as {backend.name} tasks ({where})")
    if ran < total:
        result.notes.append(f"{total - ran} of {total} chunks kept from the interrupted run")


def cost(result: SectionResult, costs: dict[str, tuple[float, int, int]], n: int) -> None:
    rows: list[list[Any]] = []
    for method, (seconds, evaluated, calls) in costs.items():
        evaluations = evaluated / n
        result.metric(metric_key(method, "model_evaluations_per_sample"), evaluations)
        per_sample = round(evaluations, 1)
        rows.append([method, round(1e3 * seconds / n, 3), int(per_sample) if float(per_sample).is_integer()
                     else per_sample, calls])
    result.table("cost", "Cost per method", ["method", "ms per sample", "model evaluations per sample",
                                             "batched calls"], rows)


def faithfulness(result: SectionResult, found: Faithfulness, level: str, section: str,
                 per_sample: dict[str, np.ndarray]) -> None:
    baseline = found.baseline
    result.metric("deletion_baseline_probability", found.baseline_probability)
    result.notes.append(f"deletion baseline: {baseline}; the model gives the explained class "
                        f"{found.baseline_probability:.2f} on average on it (the end of every deletion curve); "
                        f"{found.informative_share:.0%} of the features differ from it, and the random ordering "
                        "deletes those first")
    if baseline == "pad":
        result.notes.append("deleted tokens become the padding token, outside the attention mask: the model no "
                            "longer sees them; inserted tokens are restored into an all-padding text")
    elif baseline != "lower":
        result.notes.append(f"deleting to the {'dataset mean' if baseline == 'mean' else 'blurred input'} "
                            "asks how the prediction moves toward an uninformative input: methods whose own "
                            "reference is the background (gradient_shap, shap_*) answer that question, those "
                            "relative to the lower bound (ig, deeplift, lrp, occlusion, lime's hidden segments) "
                            "a neighbouring one. deletion_baseline: lower measures them against their own "
                            "reference, where deleting a feature already at the bound is free")
    for kind, ranking in found.rankings.items():
        for method, value in ranking.estimates.items():
            estimate(result, f"{method}.{kind}_auc", value)
            per_sample[f"{kind}_auc.{method}"] = found.scores[kind][method]
    _faithfulness_tables(result, found, level, section)
    for kind in KINDS:
        series = [{"label": method, "x": found.fractions.tolist(), "y": curve.tolist(),
                   **({"style": "--"} if method == RANDOM else {})}
                  for method, curve in found.mean_curves[kind].items()]
        result.figure({"name": f"{kind}_curves", "title": f"{kind.capitalize()} curves ({baseline} baseline, mean "
                       f"over {found.n} samples)", "kind": "line", "series": series,
                       "xlabel": f"fraction of features {kind[:-3]}ed, most important first",
                       "ylabel": "probability of the explained class", "ylim": [0.0, 1.0]})


def _faithfulness_tables(result: SectionResult, found: Faithfulness, level: str, section: str) -> None:
    deletion, insertion = found.rankings["deletion"], found.rankings["insertion"]
    n = found.n
    methods = [m for m in deletion.order if m != RANDOM]
    rows: list[list[Any]] = []
    for method in methods:
        est, ins = deletion.estimates[method], insertion.estimates[method]
        vs_random = deletion.difference(method, RANDOM)
        tied = [m for m in deletion.tied_with(method) if m != RANDOM]
        result.metric(metric_key(method, "faithfulness_rank"), deletion.ranks[method])
        rows.append([deletion.ranks[method], method, est.mean, _ci(est), ins.mean, _ci(ins), vs_random.mean,
                     _ci(vs_random), ", ".join(tied) or None])
        if not deletion.better(method, RANDOM):
            result.finding("medium", f"{method}: deleting its most important features first lowers the model's "
                           f"confidence no faster than a random order of the informative features (deletion AUC "
                           f"{est.mean:.3f} {_ci(est)} vs {deletion.estimates[RANDOM].mean:.3f} "
                           f"{_ci(deletion.estimates[RANDOM])}; difference {vs_random.mean:+.3f} "
                           f"{_ci(vs_random)}, {level} interval over {n} samples); it is not shown to be "
                           "faithful to this model", code="explanations.not_faithful",
                           metric=metric_key(section, method, "deletion_auc"), value=est.mean)
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
                 f"{found.baseline} baseline; the random ordering deletes the informative features (those the "
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
    bars = [*methods, RANDOM]
    result.figure({"name": "faithfulness_ranking", "title": f"Deletion and insertion AUC with {level} intervals",
                   "kind": "bar", "xlabel": "method", "ylabel": "area under the curve", "ylim": [0.0, 1.0],
                   "series": [_bar_series(f"{kind} AUC", found.rankings[kind], bars) for kind in KINDS]})


def perturbation_quality(result: SectionResult, found: PerturbationQuality, methods: list[str], level: str,
                         n: int, n_checks: int, per_sample: dict[str, np.ndarray]) -> None:
    for name, by_method in found.estimates.items():
        for method, value in by_method.items():
            estimate(result, f"{method}.{name}", value)
            per_sample[f"{name}.{method}"] = found.scores[name][method]
    rows = []
    for method in methods:
        cells: list[Any] = [method]
        for name in ("infidelity", "sensitivity_max"):
            est = found.estimate(name, method)
            cells += [est.mean, _ci(est)] if est is not None else [None, None]
        rows.append(cells)
    result.table("quality", f"Infidelity ({n} samples) and sensitivity-max ({n_checks} samples), {level} intervals",
                 ["method", "infidelity (lower better)", f"{level} interval", "sensitivity-max (lower better)",
                  f"{level} interval"], rows,
                 description="perturbations keyed per sample and shared by all methods; a method that samples "
                 "at random draws the same for an input and its perturbed copies, so sensitivity-max measures "
                 "the input's effect, not sampling noise")


def randomization(result: SectionResult, found: Randomization, level: str, n_checks: int, section: str,
                  per_sample: dict[str, np.ndarray]) -> None:
    result.metric("randomization.control_signed_spearman", found.control_signed)
    threshold, image = found.threshold, found.image
    rows = []
    for method, value in found.estimates.items():
        verdict = found.verdicts[method]
        name = f"control: {found.control_method} with random signs (must fail)" if method == CONTROL else method
        key = "randomization.control_similarity" if method == CONTROL else f"{method}.randomization_similarity"
        estimate(result, key, value)
        if method != CONTROL:
            per_sample[f"randomization_similarity.{method}"] = found.final[method]
            result.metric(metric_key(method, "randomization_check_passes"), None if verdict == "inconclusive"
                          else float(verdict == "passes"))
        ss = found.ssim.get(method)
        if ss is not None:
            estimate(result, f"{method}.randomization_ssim", ss)
        rows.append([name, value.mean, _ci(value), *([ss.mean, _ci(ss)] if image and ss else
                                                     ([None, None] if image else [])), verdict])
        if verdict == "fails" and method != CONTROL:
            result.finding("medium", f"{method}: its attributions barely change when the model's weights are "
                           f"re-initialized (Spearman of |attribution| on the informative features "
                           f"{value.mean:.2f} {_ci(value)} after randomizing all {found.layers} layers, "
                           f"at least {threshold}); they reflect the input more than the model (Adebayo et al. "
                           "2018 sanity check)", code="explanations.randomization_check_failed",
                           metric=metric_key(section, method, "randomization_similarity"), value=value.mean)
    columns = ["method", "Spearman of |attribution| after full randomization", f"{level} interval"]
    if image:
        columns += ["SSIM of |attribution| maps", f"{level} interval"]
    result.table("randomization", f"Cascading randomization sanity check ({n_checks} samples, "
                 f"{found.layers} layers)", [*columns, "check"], rows,
                 description=f"passes when the interval lies below {threshold}, fails when it lies at or above "
                 "it; similarity on the features where the input differs from the attribution baseline. The "
                 "control has the first method's magnitudes with random signs: it does not depend on the "
                 f"model, yet its signed Spearman is {found.control_signed:.2f} (a check on signed attributions "
                 "would pass it)")
    steps = found.steps
    series = [{"label": method, "x": steps[: len(per_step)], "y": [e.mean for e in per_step],
               "yerr_low": [_gap(e.mean, e.low) for e in per_step],
               "yerr_high": [_gap(e.high, e.mean) for e in per_step]}
              for method, per_step in found.per_step.items() if per_step]
    control = float(np.nanmean(found.control))
    series.append({"label": "control (random signs)", "x": steps, "y": [control] * len(steps), "style": "--"})
    result.figure({"name": "randomization_cascade", "title": "Cascading randomization: similarity of "
                   "|attribution| to the original, layers randomized from the top", "kind": "line",
                   "series": series, "xlabel": "layers re-initialized (cumulative, output layer first)",
                   "ylabel": "Spearman of |attribution| (informative features)"})


def pixel_importance(result: SectionResult, method: str, heat: np.ndarray | None) -> None:
    if heat is not None:
        result.figure({"name": "global_importance", "title": f"Mean |attribution| per pixel ({method})",
                       "kind": "heatmap", "matrix": heat.tolist(), "x_labels": [str(i) for i in range(heat.shape[1])],
                       "y_labels": [str(i) for i in range(heat.shape[0])]})


def tabular_importance(result: SectionResult, found: TabularImportance) -> None:
    names, methods = found.names, list(found.shares)
    top = found.top_by_share(10)
    result.figure({"name": "top_features", "title": "Top features: share of mean |attribution| per method",
                   "kind": "heatmap", "x_labels": methods, "y_labels": [names[i] for i in top],
                   "matrix": [[float(found.shares[m][i]) for m in methods] for i in top]})
    by_perm = found.top_by_permutation(15)
    rows = [[names[i], float(found.permutation_mean[i]), float(found.permutation_std[i]), float(found.overall[i])]
            for i in by_perm]
    result.table("global_importance", "Global feature importance (top 15 by permutation importance)",
                 ["feature", "accuracy drop when shuffled", "std", "share of mean |attribution|"], rows)
    for i in by_perm[:3]:
        result.metric(metric_key("permutation_importance", _safe(names[i])), found.permutation_mean[i])
    tree = found.surrogate
    result.metric("surrogate.fidelity", tree.fidelity)
    result.figure({"name": "surrogate_tree", "kind": "tree", "nodes": tree.nodes, "fidelity": tree.fidelity,
                   "title": f"Surrogate decision tree (depth {tree.depth}) fitted to the model's predictions"})
    result.notes.append(f"surrogate decision tree (depth {tree.depth}, agrees with the model on "
                        f"{tree.fidelity:.1%} of held-out rows):\n{tree.rules}")


def heatmaps(ctx: AuditContext, result: SectionResult, section: str, x: np.ndarray, target: np.ndarray,
             values: dict[str, np.ndarray], samples: int) -> None:
    """Save input and attribution tiles (NPZ) and record an ``image_grid`` figure; reports/ draws it."""
    n = min(samples, len(x))
    methods = list(values)
    tiles = np.stack([np.stack([x[row], *[values[m][row] for m in methods]]) for row in range(n)])
    path, rel = ctx.artifact_path(section, "heatmaps.npz")
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


def stability(result: SectionResult, found: Stability) -> None:
    sizes = {name: float(per_sample.mean()) for name, per_sample in found.sizes.items()}
    for name, size in sizes.items():
        result.metric(metric_key("stability", name), size)
    fooled = found.sample.flipped
    rows = []
    for method, m in found.methods.items():
        for group in GROUPS:
            result.metric(metric_key("stability", method, f"topk_overlap_{group}"), m.groups[group])
        result.metric(metric_key("stability", method, "topk_overlap"), m.overlap.mean())
        result.metric(metric_key("stability", method, "spearman"), m.spearman)
        result.metric(metric_key("stability", method, "topk_overlap_random_noise"), m.noise_overlap.mean())
        rows.append([method, *[m.groups[g] for g in GROUPS], float(m.noise_overlap.mean()),
                     m.spearman if np.isfinite(m.spearman) else None])
    result.metric("stability.n_flipped", int(fooled.sum()))
    result.metric("stability.n_unflipped", int((~fooled).sum()))
    norm = "L2" if found.norm == "l2" else "L-inf"
    result.table("stability", f"Explanation stability under attack ({found.key}, {found.attack}; top-{found.k} "
                 "overlap with the clean explanation)",
                 ["method", f"prediction unchanged ({int((~fooled).sum())})",
                  f"fooled, explained for the clean class ({int(fooled.sum())})",
                  f"fooled, explained for the adversarial class ({int(fooled.sum())})",
                  f"random noise of the attack's {norm} size ({len(fooled)})",
                  "Spearman of |attribution|, clean vs attacked (clean class)"], rows,
                 description="the clean input is explained for its predicted class; 1 = the same top features. "
                 "Fooled samples are compared twice: explained for the clean class (only the input changed) and "
                 "for the class the attack produced (the explanation of the new decision). The noise has each "
                 f"sample's own attack size in {norm} (mean L-inf {sizes['noise_linf']:.3g} vs the attack's "
                 f"{sizes['attack_linf']:.3g}, mean L2 {sizes['noise_l2']:.3g} vs {sizes['attack_l2']:.3g})")
    result.notes.extend(found.notes)
    result.metric("stability.noise_flipped_fraction", found.noise_flipped_fraction)


def _ci(value: Estimate | None) -> str | None:
    """An interval as text, three significant digits."""
    if value is None or not np.isfinite(value.low):
        return None
    return f"[{value.low:.3g}, {value.high:.3g}]"


def _gap(a: float, b: float) -> float | None:
    return float(a - b) if np.isfinite(a) and np.isfinite(b) else None


def _bar_series(label: str, ranking: Ranking, methods: list[str]) -> dict[str, Any]:
    ests = [ranking.estimates[m] for m in methods]
    return {"label": label, "x": methods, "y": [e.mean for e in ests],
            "yerr_low": [_gap(e.mean, e.low) for e in ests], "yerr_high": [_gap(e.high, e.mean) for e in ests]}


def _safe(name: str) -> str:
    """A feature name usable inside a metric name."""
    return "".join(c if c.isalnum() or c in "_=+-<>" else "_" for c in name)
