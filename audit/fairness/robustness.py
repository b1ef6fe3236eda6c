"""Robustness disparity: are some groups easier to attack?

Read from ``ctx.adversarial`` (the robustness section's per-sample outcomes): nnaudit never
attacks twice. Per group and attack outcome: clean accuracy, robust accuracy, attack success
rate (the share of clean-correct rows the attack broke) and mean minimal adversarial eps.

Robust accuracy is clean accuracy times (1 - attack success rate), so a robust-accuracy gap can
come from a clean-accuracy gap alone. "Group X is easier to attack" is said only from the attack
success rate gap; a robust-accuracy gap is reported with both parts, and where the attack success
gap is within tolerance it is an ``info`` finding that points at the clean gap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.bootstrap import bootstrap
from audit.fairness.estimates import Estimate, error_bars, estimates, record_estimate
from audit.fairness.groups import GroupSet, difference, group_means, metric_segment
from audit.fairness.judge import judge, lowest_highest, number, thin_extremes
from audit.keys import metric_key
from audit.results import SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AdversarialOutcome, AuditContext
    from audit.fairness.params import FairnessParams

ROBUST_METRICS = ("clean_accuracy", "robust_accuracy", "attack_success_rate", "mean_min_eps")
BASIS = {"clean_accuracy": "attacked rows", "robust_accuracy": "attacked rows",
         "attack_success_rate": "clean-correct rows", "mean_min_eps": "broken rows"}
JUDGED = ("robust_accuracy", "attack_success_rate")  # the gaps findings are raised for


def record_robustness(result: SectionResult, ctx: AuditContext, gs: GroupSet, *, params: FairnessParams,
                      section: str) -> None:
    """Per attack outcome: per-group robustness, its gaps with intervals, findings; then the worst gap."""
    worst: dict[str, tuple[float, str, Estimate]] = {}
    rows: list[list[Any]] = []
    series = []
    outcomes = list(ctx.adversarial.items())
    for key, outcome in ctx.progress(outcomes, desc=f"fairness: robustness by {gs.label}", total=len(outcomes)):
        rows_index = outcome.index  # rows of the data attacked, if a subset
        codes = gs.codes if rows_index is None else gs.codes[np.asarray(rows_index, np.int64)]
        if len(outcome.robust_correct) != len(codes) or len(outcome.clean_correct) != len(codes):
            result.notes.append(f"robustness disparity for {key} skipped: the outcome covers "
                                f"{len(outcome.robust_correct)} rows but the data has {len(codes)}")
            continue
        est, counts = _estimates(outcome, codes, len(gs.groups), gs.seed, params, ctx, f"{key} by {gs.label}")
        prefix = metric_key(gs.key, ("norm", metric_segment(outcome.norm)), ("eps", float(outcome.eps)))
        for m in ROBUST_METRICS:
            if f"{m}_difference" not in est:
                continue
            record_estimate(result, metric_key(prefix, f"{m}_difference"), est[f"{m}_difference"][0],
                            with_interval=bool(params.n_resamples))
            for j, g in enumerate(gs.group_keys):
                result.metric(metric_key(prefix, ("group", g), m), est[f"group.{m}"][j].value)
        for j, g in enumerate(gs.groups):
            row: list[Any] = [key, g, int(counts["robust_accuracy"][j]), int(counts["attack_success_rate"][j])]
            for m in ROBUST_METRICS:
                e = est[f"group.{m}"][j] if f"group.{m}" in est else Estimate(math.nan)
                row += [e.value, e.low, e.high]
            rows.append(row)
        ra = est["group.robust_accuracy"]
        series.append({"label": key, "x": gs.groups, "y": [e.value for e in ra], **error_bars(ra)})
        for m in JUDGED:
            diff = est[f"{m}_difference"][0]
            if not math.isnan(diff.value) and (m not in worst or diff.value > worst[m][0]):
                worst[m] = (diff.value, key, diff)
        _findings(result, gs, key, est, counts, prefix, params, section)
        _min_eps_note(result, gs, key, outcome)
    if not rows:
        return
    columns = ["attack", "group", "count", "clean_correct"] + [f"{m}{s}" for m in ROBUST_METRICS
                                                                for s in ("", "_ci_low", "_ci_high")]
    result.table(f"robustness_{gs.key}", f"Robustness by {gs.label} (from the robustness section's attacks)",
                 columns, rows, description="attack success rate: share of clean-correct rows the attack broke; "
                                            "robust accuracy = clean accuracy x (1 - attack success rate)")
    result.figure({"name": f"robust_accuracy_{gs.key}", "title": f"Robust accuracy by {gs.label}",
                   "kind": "bar", "xlabel": gs.label, "ylabel": "robust accuracy", "ylim": [0.0, 1.0],
                   "series": series})
    for m, (_, key, diff) in worst.items():
        result.notes.append(f"{gs.label}: {m}_difference is the worst over the attacks ({key})")
        record_estimate(result, metric_key(gs.key, f"{m}_difference"), diff, with_interval=bool(params.n_resamples))


def _estimates(outcome: AdversarialOutcome, codes: np.ndarray, n_groups: int, seed: int, params: FairnessParams,
               ctx: AuditContext, what: str) -> tuple[dict[str, list[Estimate]], dict[str, np.ndarray]]:
    clean = np.asarray(outcome.clean_correct, bool)
    robust = np.asarray(outcome.robust_correct, bool) & clean
    min_eps = None if outcome.min_eps is None else np.asarray(outcome.min_eps, np.float64)
    broken = None if min_eps is None else clean & np.isfinite(min_eps)
    attacked = np.bincount(codes, minlength=n_groups)
    counts = {"clean_accuracy": attacked, "robust_accuracy": attacked,
              "attack_success_rate": np.bincount(codes, weights=clean.astype(np.float64), minlength=n_groups)}
    if broken is not None:
        counts["mean_min_eps"] = np.bincount(codes, weights=broken.astype(np.float64), minlength=n_groups)
    enough = {m: c >= params.min_rate_count for m, c in counts.items()}

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        per = {"clean_accuracy": group_means(codes, clean, n_groups, index),
               "robust_accuracy": group_means(codes, robust, n_groups, index),
               "attack_success_rate": group_means(codes, ~robust, n_groups, index, mask=clean)}
        if min_eps is not None and broken is not None:
            per["mean_min_eps"] = group_means(codes, np.where(broken, min_eps, 0.0), n_groups, index, mask=broken)
        out = {f"group.{m}": v for m, v in per.items()}
        out.update({f"{m}_difference": difference(v) for m, v in per.items()})
        out.update({f"supported.{m}_difference": difference(np.where(enough[m], per[m], np.nan)) for m in JUDGED})
        return out

    samples = None
    if params.n_resamples:
        desc = f"fairness: bootstrap {what} ({params.n_resamples} resamples)"
        samples = bootstrap(codes, params.n_resamples, seed, statistic,
                            progress=lambda chunks, total: ctx.progress(chunks, desc=desc, total=total))
    return estimates(statistic(None), samples, params.confidence), counts


def _findings(result: SectionResult, gs: GroupSet, key: str, est: dict[str, list[Estimate]],
              counts: dict[str, np.ndarray], prefix: str, params: FairnessParams, section: str) -> None:
    success, robust = est["attack_success_rate_difference"][0], est["robust_accuracy_difference"][0]
    clean = est["clean_accuracy_difference"][0]
    tol_s, tol_r = params.attack_success_difference_max, params.robust_accuracy_difference_max
    success_beyond = success.beyond(tol_s, is_ratio=False)
    if success_beyond:
        severity, text = _judged(gs, "attack_success_rate", est, counts, tol_s, params)
        (lo_g, lo_v), (hi_g, hi_v) = lowest_highest(gs.groups, est["group.attack_success_rate"])
        clean_lo, clean_hi = (est["group.clean_accuracy"][gs.groups.index(g)].value for g in (lo_g, hi_g))
        claim = (f"group '{hi_g}' is easier to attack" if severity != "low"
                 else f"too few rows to say that group '{hi_g}' is easier to attack")
        result.finding(severity, f"{gs.label} under {key}: attack success rate (share of clean-correct rows the "
                       f"attack broke) differs by {success.value:.3f} ({success.ci_text(params.confidence)}) across "
                       f"groups, above the tolerance {tol_s:g}; {text}: '{hi_g}' {hi_v:.3f} vs '{lo_g}' {lo_v:.3f}; "
                       f"{claim} (clean accuracy '{hi_g}' {number(clean_hi)}, '{lo_g}' {number(clean_lo)})",
                       code="fairness.attack_success_rate_difference",
                       metric=metric_key(section, prefix, "attack_success_rate_difference"), value=success.value)
    if not robust.beyond(tol_r, is_ratio=False):
        return
    (lo_g, lo_v), (hi_g, hi_v) = lowest_highest(gs.groups, est["group.robust_accuracy"])
    parts = (f"clean accuracy gap {number(clean.value)}, attack success rate gap {number(success.value)} "
             "(among clean-correct rows)")
    if success_beyond:
        severity, text = _judged(gs, "robust_accuracy", est, counts, tol_r, params)
        driver = (f"{text}; {parts}: the attack success gap is above its tolerance {tol_s:g} (see the attack success "
                  "rate finding)")
    else:
        severity = "info"
        driver = (f"{parts}: the attack success gap is within its tolerance {tol_s:g}, so no group is easier to "
                  "attack; the robust accuracy gap follows the clean accuracy gap")
    result.finding(severity, f"{gs.label} under {key}: robust accuracy differs by {robust.value:.3f} "
                   f"({robust.ci_text(params.confidence)}) across groups, above the tolerance {tol_r:g}: '{lo_g}' "
                   f"{lo_v:.3f} vs '{hi_g}' {hi_v:.3f}; {driver}", code="fairness.robust_accuracy_difference",
                   metric=metric_key(section, prefix, "robust_accuracy_difference"), value=robust.value)


def _judged(gs: GroupSet, m: str, est: dict[str, list[Estimate]], counts: dict[str, np.ndarray], tol: float,
            params: FairnessParams) -> tuple[Severity, str]:
    thin = thin_extremes(gs.groups, {m: est[f"group.{m}"]}, counts, BASIS, params.min_rate_count)
    verdict = judge(est[f"{m}_difference"][0], tol, is_ratio=False, confidence=params.confidence, thin=thin,
                    supported=est[f"supported.{m}_difference"][0], min_count=params.min_rate_count)
    return verdict.severity, verdict.text


def _min_eps_note(result: SectionResult, gs: GroupSet, key: str, outcome: AdversarialOutcome) -> None:
    if outcome.min_eps is None:
        return
    clean = np.asarray(outcome.clean_correct, bool)
    never = int((clean & ~np.isfinite(np.asarray(outcome.min_eps, np.float64))).sum())
    if never:
        result.notes.append(f"{gs.label} / {key}: mean minimal eps is over the {int(clean.sum()) - never} clean-"
                            f"correct rows an adversarial example was found for; {never} were never broken")

