"""The fairness section on text (token inputs): identity-term subgroup AUCs (subgroup, BPSN, BNSP; Borkan et al.
2019) over ``identity_terms`` and the sensitive columns, and counterfactual token fairness (paired terms swapped:
prediction flip rate, mean score change), with bootstrap intervals and findings. The computing is in
``audit.fairness.identity``; the group-parity metrics of sensitive columns run as on any data
(``audit.fairness.section``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.bootstrap import bootstrap, percentile_interval
from audit.fairness.estimates import Estimate, error_bars, record_estimate
from audit.fairness.groups import metric_segment
from audit.fairness.identity import (
    AUCS,
    DEFAULT_PAIRS,
    SubgroupAUCs,
    counterfactual,
    mentions,
    overall_auc,
    subgroup_aucs,
)
from audit.keys import metric_key

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.params import FairnessParams
    from audit.results import SectionResult, Severity

WHAT = {"subgroup_auc": "the model separates positives from negatives less well among texts {who}",
        "bpsn_auc": "negative texts {who} score higher than positive texts that do not (false positives on them)",
        "bnsp_auc": "positive texts {who} score lower than negative texts that do not (false negatives on them)"}
LABELS = {"subgroup_auc": "Subgroup AUC", "bpsn_auc": "BPSN AUC", "bnsp_auc": "BNSP AUC"}
TOP_CHANGES = 10


def record_text(result: SectionResult, ctx: AuditContext, params: FairnessParams, positive: int | None,
                section: str) -> bool:
    """Identity-term AUCs and counterfactual swaps; whether anything was audited."""
    texts = ctx.data.texts
    if texts is None:
        result.notes.append("text fairness skipped: the data holds token ids without their texts (data.text)")
        return False
    audited = False
    if positive is None:
        result.notes.append("identity-term AUCs skipped: they need a positive class (set "
                            f"sections.{section}.positive_label)")
    else:
        subgroups = _subgroups(ctx, params, texts)
        if subgroups:
            _record_aucs(result, ctx, params, subgroups, positive, section)
            audited = True
        elif not ctx.data.sensitive:
            result.notes.append(f"identity-term AUCs skipped: give sections.{section}.identity_terms (e.g. {{female: "
                                "[she, her, woman], male: [he, him, man]}) or sensitive columns (data.sensitive)")
    if params.counterfactual:
        audited = _record_counterfactual(result, ctx, params, texts, positive, section) or audited
    if params.identity_terms and ctx.attributions:
        _record_term_attributions(result, ctx, params.identity_terms)
    return audited


def _word(token: str) -> str:
    """A token as a word: lower case, without a subword marker (##ing, Ġword, ▁word)."""
    return token.lower().removeprefix("##").lstrip("Ġ▁")


def _record_term_attributions(result: SectionResult, ctx: AuditContext, identity_terms: dict[str, list[str]]) -> None:
    """How much of each explained text's |attribution| falls on its identity-term tokens, per method, next to their
    share of the tokens (an identity word weighing like an average token gets its token share)."""
    model, pad = ctx.model, getattr(getattr(ctx.model, "tokenizer", None), "pad_id", None)
    if pad is None:
        return
    rows: list[list[Any]] = []
    for method, found in ctx.attributions.items():
        ids = np.asarray(ctx.data.x[found.index], np.int64)
        if found.values.shape != ids.shape:
            continue
        words = [[_word(t) for t in row] for row in model.tokens(ids)]  # type: ignore[attr-defined]
        for name, terms in identity_terms.items():
            wanted = {t.strip().lower() for t in terms}
            shares, token_shares, signed = [], [], []
            for r, row_words in enumerate(words):
                hit = np.array([w in wanted for w in row_words], bool)
                values = found.values[r][ids[r] != pad]
                total = float(np.abs(values).sum())
                if not hit.any() or total == 0 or len(values) != len(hit):
                    continue
                shares.append(float(np.abs(values[hit]).sum()) / total)
                token_shares.append(float(hit.mean()))
                signed.append(float(values[hit].sum()))
            if not shares:
                continue
            key = metric_key("identity", ("group", metric_segment(name) or "_"), method)
            result.metric(metric_key(key, "attribution_share"), float(np.mean(shares)))
            result.metric(metric_key(key, "token_share"), float(np.mean(token_shares)))
            rows.append([name, method, len(shares), float(np.mean(shares)), float(np.mean(token_shares)),
                         float(np.mean(signed))])
    if rows:
        result.table("identity_attributions", "How much the identity terms weigh in the explanations",
                     ["identity", "method", "explained texts with a term", "share of |attribution| on the terms",
                      "share of the tokens", "mean attribution of the terms toward the explained class"], rows,
                     description="per explained text that holds a single-word term of the identity (the "
                     "explanations section's texts): the terms' share of the text's total |attribution|, beside "
                     "their share of its tokens; a share of attribution well above the share of tokens says the "
                     "model leans on the identity words themselves")


def _subgroups(ctx: AuditContext, params: FairnessParams, texts: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """(grouping, subgroup, membership) of every identity and every sensitive column's value."""
    out = [("identity", name, mentions(texts, terms)) for name, terms in (params.identity_terms or {}).items()]
    names = params.features if params.features is not None else sorted(ctx.data.sensitive)
    for column in names:
        values = ctx.data.sensitive.get(column)
        if values is None:
            continue  # the group-parity path names the unknown column
        out += [(column, str(v), np.asarray(values) == v) for v in np.unique(values)]
    return out


def _estimate(found: SubgroupAUCs, name: str, confidence: float) -> Estimate:
    value = found.values[name]
    if name not in found.samples or math.isnan(value):
        return Estimate(value)
    interval = percentile_interval(found.samples[name], confidence, value)
    return Estimate(value, interval.low, interval.high, interval.defined_fraction)


def _record_aucs(result: SectionResult, ctx: AuditContext, params: FairnessParams,
                 subgroups: list[tuple[str, str, np.ndarray]], positive: int, section: str) -> None:
    scores = ctx.clean_probabilities()[:, positive]
    labels = np.asarray(ctx.data.y) == positive
    overall = overall_auc(scores, labels)
    result.metric(metric_key("overall", "auc"), overall)
    level, with_ci = f"{params.confidence:.0%}", bool(params.n_resamples)
    rows: list[list[Any]] = []
    bars: dict[str, list[Estimate]] = {m: [] for m in AUCS}
    labels_x: list[str] = []
    for grouping, name, member in ctx.progress(subgroups, desc="fairness: identity subgroups", total=len(subgroups)):
        found = subgroup_aucs(name, member, scores, labels, n_resamples=params.n_resamples, seed=ctx.seed)
        prefix = metric_key(metric_segment(grouping) or "group", ("group", metric_segment(name) or "_"))
        result.metric(metric_key(prefix, "rows"), found.rows)
        row: list[Any] = [grouping, name, found.rows, found.positives, found.negatives]
        for m in AUCS:
            est = _estimate(found, m, params.confidence)
            record_estimate(result, metric_key(prefix, m), est, with_interval=with_ci)
            row += [est.value, est.ci_text(params.confidence)]
            bars[m].append(est)
            _judge_auc(result, params, found, grouping, m, overall, level, metric_key(section, prefix, m))
        labels_x.append(f"{grouping}: {name}")
        rows.append(row)
    columns = ["grouping", "subgroup", "rows", "positives", "negatives", "subgroup AUC", f"{level} interval",
               "BPSN AUC", f"{level} interval", "BNSP AUC", f"{level} interval"]
    result.table("identity_aucs", f"Identity subgroup AUCs (Borkan et al. 2019) of the "
                 f"'{ctx.data.class_names[positive]}' score; overall AUC {overall:.3f}", columns, rows,
                 description="subgroup: texts that mention the identity's terms (identity) or rows of a sensitive "
                 "column's value. BPSN: the subgroup's negatives against the other rows' positives; BNSP: the "
                 "subgroup's positives against the other rows' negatives. Intervals: bootstrap within the four "
                 "cells (subgroup or not x positive or not)")
    result.figure({"name": "identity_aucs", "title": f"Identity subgroup AUCs ({level} bootstrap intervals); "
                   f"overall {overall:.3f}", "kind": "bar", "xlabel": "subgroup", "ylabel": "AUC",
                   "ylim": [0.0, 1.0], "series": [{"label": m.replace("_", " "), "x": labels_x,
                                                   "y": [e.value for e in bars[m]], **error_bars(bars[m])}
                                                  for m in AUCS]})


def _judge_auc(result: SectionResult, params: FairnessParams, found: SubgroupAUCs, grouping: str, name: str,
               overall: float, level: str, key: str) -> None:
    gap = _estimate(found, f"{name}_gap", params.confidence)
    if math.isnan(gap.value) or not gap.beyond(params.auc_gap_max, is_ratio=False):
        return
    who = f"that mention the '{found.name}' terms" if grouping == "identity" else f"with {grouping} '{found.name}'"
    text = (f"{LABELS[name]} of texts {who} is {found.values[name]:.3f}, "
            f"{gap.value:.3f} below the overall AUC {overall:.3f} (tolerance auc_gap_max {params.auc_gap_max}; gap "
            f"{gap.ci_text(params.confidence)}): {WHAT[name].format(who=who)}")
    if found.rows < params.min_rate_count:
        result.finding("low", f"{text}; but the subgroup has only {found.rows} rows (fewer than min_rate_count "
                       f"{params.min_rate_count})", code=f"fairness.{name}", metric=key, value=found.values[name])
        return
    severity: Severity = "high" if gap.wholly_beyond(params.auc_gap_max, is_ratio=False) else "medium"
    why = "the whole interval is beyond" if severity == "high" else "the interval also holds gaps within it"
    result.finding(severity, f"{text}; {why} the tolerance", code=f"fairness.{name}", metric=key,
                   value=found.values[name])


def _record_counterfactual(result: SectionResult, ctx: AuditContext, params: FairnessParams, texts: list[str],
                           positive: int | None, section: str) -> bool:
    pairs = [tuple(p) for p in params.counterfactual_pairs] if params.counterfactual_pairs else list(DEFAULT_PAIRS)
    proba = getattr(ctx.model, "text_predict_proba", None)
    if proba is None:
        result.notes.append("counterfactual token fairness skipped: the model does not take texts")
        return False
    found = counterfactual(texts, proba, pairs, positive)
    n = len(found.rows)
    result.metric(metric_key("counterfactual", "n_texts"), n)
    if not n:
        result.notes.append(f"counterfactual token fairness: none of the {len(texts)} texts holds a term of the "
                            f"{len(pairs)} swap pairs (sections.{section}.counterfactual_pairs)")
        return False
    values = {"flip_rate": found.flipped, "mean_abs_score_change": np.abs(found.change),
              "mean_score_change": found.change}
    samples: dict[str, np.ndarray] = {}
    if params.n_resamples:
        samples = bootstrap(np.zeros(n, np.int64), params.n_resamples, ctx.seed,
                            lambda index: {k: v[index].mean(axis=1) for k, v in values.items()})
    score = "the positive class's" if positive is not None else "the predicted class's"
    rows: list[list[Any]] = []
    for name, per_text in values.items():
        point = float(per_text.mean())
        est = Estimate(point)
        if name in samples:
            interval = percentile_interval(samples[name], params.confidence, point)
            est = Estimate(point, interval.low, interval.high, interval.defined_fraction)
        record_estimate(result, metric_key("counterfactual", name), est, with_interval=bool(params.n_resamples))
        rows.append([name.replace("_", " "), est.value, est.ci_text(params.confidence)])
    result.table("counterfactual", f"Counterfactual token fairness over the {n} texts that hold a swap term "
                 f"({len(pairs)} pairs)", ["metric", "value", "interval"], rows,
                 description=f"each text's paired terms swapped at once (he <-> she, his <-> her, ...; case kept); "
                 f"flip rate: share whose predicted class changes; score: {score} probability")
    for name, tolerance in (("flip_rate", params.counterfactual_flip_max),
                            ("mean_abs_score_change", params.counterfactual_score_max)):
        point = float(values[name].mean())
        if point <= tolerance:
            continue
        low = percentile_interval(samples[name], params.confidence, point).low if name in samples else math.nan
        severity: Severity = "high" if low > tolerance else "medium"
        why = "the whole interval is above" if severity == "high" else "the interval also holds values within it"
        result.finding(severity, f"swapping identity terms (he/she, his/her, ...) in {n} texts: "
                       f"{name.replace('_', ' ')} {point:.3f} above the tolerance {tolerance} ({why}): the "
                       "prediction depends on which identity a text mentions",
                       code=f"fairness.counterfactual_{name}", metric=metric_key(section, "counterfactual", name),
                       value=point)
    order = np.argsort(-np.abs(found.change), kind="stable")[:TOP_CHANGES]
    result.table("counterfactual_examples", "Largest score changes when identity terms are swapped",
                 ["row", "original", "swapped", "score before", "score after", "prediction flipped"],
                 [[int(found.rows[i]), texts[int(found.rows[i])], found.swapped[i], float(found.score[i]),
                   float(found.score_swapped[i]), bool(found.flipped[i])] for i in order])
    return True
