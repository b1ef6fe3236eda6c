"""Explanation disparity: does the model rely on different features for different groups?

Read from ``ctx.attributions`` (the explanations section's attributions): per method, the mean
|attribution| per feature per group over the explained rows, each feature's share of its group's
total, and the features whose share differs most between groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.fairness.groups import GroupSet, metric_segment
from audit.keys import metric_key
from audit.results import SectionResult

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.params import FairnessParams


PANEL_FEATURES = 6  # features per method panel in the figure; the tables hold explanation_top_k


def record_explanations(result: SectionResult, ctx: AuditContext, gs: GroupSet, *, params: FairnessParams,
                        section: str) -> None:
    data = ctx.data
    methods = list(ctx.attributions.items())
    panels: list[dict[str, Any]] = []
    for method, aset in ctx.progress(methods, desc=f"fairness: explanations by {gs.label}", total=len(methods)):
        index = np.asarray(aset.index, np.int64)
        values = np.abs(np.asarray(aset.values, np.float64).reshape(len(index), -1))
        if len(index) == 0 or index.max() >= data.n_samples or index.min() < 0:
            result.notes.append(f"explanation disparity for '{method}' skipped: its row index does not fit the "
                                f"{data.n_samples} rows of the data")
            continue
        names = _feature_names(data.feature_names, data.input_shape, values.shape[1])
        codes = gs.codes[index]
        present = np.unique(codes)
        counts = np.bincount(codes, minlength=len(gs.groups))
        sums = np.zeros((len(gs.groups), values.shape[1]))
        np.add.at(sums, codes, values)
        mean_abs = sums[present] / counts[present, None]
        totals = mean_abs.sum(axis=1, keepdims=True)
        share = np.divide(mean_abs, totals, out=np.zeros_like(mean_abs), where=totals > 0)
        groups = [gs.groups[g] for g in present]
        key = metric_segment(method) or "method"
        prefix = metric_key(gs.key, "explanation", key)
        if len(present) < 2:
            result.notes.append(f"explanation disparity for '{method}' by {gs.label}: the explained rows hold "
                                f"one group only ({groups}); explain more rows")
            continue
        gap = share.max(axis=0) - share.min(axis=0)
        order = np.argsort(-gap, kind="stable")[: params.explanation_top_k]
        result.metric(metric_key(prefix, "max_importance_gap"), float(gap[order[0]]))
        result.metric(metric_key(prefix, "rows_explained"), len(index))
        rows = [[names[f], *[float(share[i, f]) for i in range(len(groups))],
                 *[float(mean_abs[i, f]) for i in range(len(groups))], float(gap[f])] for f in order]
        result.table(f"explanation_{key}_{gs.key}",
                     f"{method}: features whose importance differs most between {gs.label} groups",
                     ["feature", *[f"share[{g}]" for g in groups], *[f"mean_abs[{g}]" for g in groups], "gap"],
                     rows, description="share: a feature's share of the group's total mean |attribution|; "
                                       "gap: max - min share over groups")
        shown = order[:PANEL_FEATURES]
        panels.append({"kind": "bar", "horizontal": True, "title": method, "xlabel": "feature",
                       "ylabel": "share of mean |attribution|",
                       "series": [{"label": g, "x": [names[f] for f in shown],
                                   "y": [float(share[i, f]) for f in shown]} for i, g in enumerate(groups)]})
        small = {g: int(counts[gs.groups.index(g)]) for g in groups
                 if counts[gs.groups.index(g)] < params.min_rate_count}
        if small:
            listed = ", ".join(f"'{g}' ({n} rows)" for g, n in small.items())
            result.notes.append(f"explanation disparity for '{method}' by {gs.label}: groups {listed} have fewer "
                                f"than min_rate_count {params.min_rate_count} explained rows")
        top = int(order[0])
        if gap[top] > params.explanation_gap_max:
            hi, lo = int(np.argmax(share[:, top])), int(np.argmin(share[:, top]))
            thin = any(groups[i] in small for i in (hi, lo))
            result.finding("low" if thin else "medium",
                           f"{method} by {gs.label}: feature '{names[top]}' carries {share[hi, top]:.1%} of the "
                           f"attribution for '{groups[hi]}' but {share[lo, top]:.1%} for '{groups[lo]}' (gap "
                           f"{gap[top]:.3f} > {params.explanation_gap_max:g}): the model relies on different "
                           "features for different groups"
                           + (" (too few explained rows in one of the two groups: treat with care)" if thin else ""),
                           code="fairness.explanation_gap", metric=metric_key(section, prefix, "max_importance_gap"),
                           value=float(gap[top]))
    if panels:  # small multiples: one panel per method, so methods compare at a glance
        result.figure({"name": f"explanation_{gs.key}", "kind": "small_multiples", "columns": 4, "panels": panels,
                       "title": f"Importance share by {gs.label}: the {PANEL_FEATURES} features whose share differs "
                                "most between groups, per method (every feature in the tables)"})


def _feature_names(names: list[str] | None, shape: tuple[int, ...], width: int) -> list[str]:
    if names is not None and len(names) == width:
        return list(names)
    if len(shape) > 1 and int(np.prod(shape)) == width:
        return ["[" + ",".join(str(int(i)) for i in np.unravel_index(f, shape)) + "]" for f in range(width)]
    return [f"x{f}" for f in range(width)]
