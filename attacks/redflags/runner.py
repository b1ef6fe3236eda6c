"""The red flags of one norm, run the way the robustness section runs them: which checks apply, on which samples,
each reusing what the headline attacks found. Returns the flags and what else says the numbers cannot be trusted
(``FlagRun``); the section records them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from attacks.base import Domain, Norm
from attacks.evaluate import NormEvaluation
from attacks.redflags.base import CheckData, RedFlag, RedFlagParams, not_applicable
from attacks.redflags.checks import (
    GradientStats,
    check_blackbox,
    check_convergence,
    check_monotone,
    check_nonfinite_gradients,
    check_probability_outputs,
    check_randomized,
    check_restart_gain,
    check_single_step,
    check_unbounded,
    check_zero_gradients,
    gradient_stats,
    strongest_iterative,
)

if TYPE_CHECKING:
    from audit.context import AuditContext

GRADIENT_CHECKS = ("zero_gradients", "nonfinite_gradients", "unbounded_attack", "no_convergence", "restart_gain",
                   "single_step_stronger")


@dataclass
class FlagRun:
    """The red flags of one norm (codes tagged with the norm: ``zero_gradients.linf``)."""

    flags: list[RedFlag]
    reasons: list[str]  # why the numbers cannot be trusted beyond a flag's verdict (CE saturation, CE-only attacks)
    nonfinite: np.ndarray  # (N,) rows where a check's own attack met NaN/inf outputs


def run_red_flags(ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, index: np.ndarray,
                  check_idx: np.ndarray, domain: Domain, *, steps: int, check_queries: int,
                  params: RedFlagParams) -> FlagRun:
    """The checks for one norm on the check samples ``check_idx`` (rows of ``x``; ``index``: their rows in the
    data), at the most informative eps, each reusing what the headline attacks found."""
    model, bs, fp = ctx.model, ctx.batch_size, params
    eps = ev.middle_eps()
    attack_rows = np.sort(np.random.default_rng(ctx.seed).permutation(check_idx)[: fp.attack_samples])
    d = CheckData(model=model, ev=ev, x=x, y=y, rows=check_idx, attack_rows=attack_rows, domain=domain, eps=eps,
                  steps=steps, batch_size=bs, params=fp, progress=ctx.progress)
    xc, yc = x[check_idx], y[check_idx]
    bounded_white = [a for (a, e) in ev.runs if e == eps and ev.white_box(a)]
    ce_only = bool(bounded_white) and all(getattr(ev.attacks[a], "loss", None) == "ce" for a in bounded_white)
    strongest = strongest_iterative(ev, eps, check_idx)
    cache: list[GradientStats] = []

    def grads() -> GradientStats:
        if not cache:
            cache.append(gradient_stats(model, xc, yc, bs))
        return cache[0]

    rows8 = check_idx if len(check_idx) >= 8 else np.arange(min(8, len(y)))
    checks: list[tuple[str, Callable[[], RedFlag]]] = [
        ("probability_outputs", lambda: check_probability_outputs(model, ctx.clean_logits()[:256])),
        ("randomized_outputs", lambda: check_randomized(model, x[rows8], ctx.clean_logits()[index[rows8]], bs, fp)),
        ("accuracy_vs_eps", lambda: check_monotone(ev, int(ev.clean_correct.sum()), fp)),
    ]
    if len(check_idx) and model.has_gradients:
        checks += [
            ("zero_gradients", lambda: check_zero_gradients(grads(), fp, ce_only=ce_only)),
            ("nonfinite_gradients", lambda: check_nonfinite_gradients(grads(), fp)),
            ("unbounded_attack", lambda: check_unbounded(d)),
            ("no_convergence", lambda: check_convergence(d, strongest)),
            ("restart_gain", lambda: check_restart_gain(d, strongest)),
        ]
        if ev.norm == "linf":
            checks.append(("single_step_stronger", lambda: _single_step(d)))
    elif len(check_idx):
        for code in GRADIENT_CHECKS:
            checks.append((code, lambda code=code: not_applicable(code, "the model has no gradients")))  # type: ignore[misc]
    if len(check_idx):
        def saturated() -> np.ndarray | None:  # on the attack rows
            return grads().saturated[np.searchsorted(check_idx, attack_rows)] if model.has_gradients else None

        checks.append(("blackbox_stronger", lambda: _blackbox(d, saturated(), ce_only, check_queries)))
    flags: list[RedFlag] = []
    for _, check in ctx.progress(checks, desc=f"red flags ({ev.norm})", total=len(checks)):
        start = time.perf_counter()
        flag = check()
        flag.seconds = time.perf_counter() - start
        flags.append(_norm_tag(flag, ev.norm))
    reasons: list[str] = []
    if cache and ce_only:
        share = float(cache[0].saturated.mean())
        if share > fp.zero_gradients_suspicious:
            reasons.append(f"{share:.0%} of the {ev.norm} check samples saturate cross-entropy (exactly zero "
                           "gradient) and every white-box attack of the headline uses cross-entropy: add apgd_dlr")
    return FlagRun(flags, reasons, d.nonfinite)


def _single_step(d: CheckData) -> RedFlag:
    ev, rows = d.ev, d.rows
    iterative = [a for a in ev.attacks if ev.white_box(a) and a != "fgsm"]
    if not iterative:
        return not_applicable("single_step_stronger", "no iterative white-box attack in the headline")
    robust = ~ev.fooled_under(d.eps, iterative)[rows]
    reuse = ev.runs[("fgsm", d.eps)].success[rows] if ("fgsm", d.eps) in ev.runs else None
    return check_single_step(d.model, d.x[rows], d.y[rows], robust, d.domain, eps=d.eps,
                             batch_size=d.batch_size, params=d.params, fgsm_success=reuse, progress=d.progress)


def _blackbox(d: CheckData, saturated: np.ndarray | None, ce_only: bool, queries: int) -> RedFlag:
    ev, rows = d.ev, d.attack_rows
    white = [a for a in ev.attacks if ev.white_box(a)]
    if not white:
        return not_applicable("blackbox_stronger", "no white-box attack ran to compare with")
    robust = ~ev.fooled_under(d.eps, white)[rows]
    reuse = ev.runs[("square", d.eps)].success[rows] if ("square", d.eps) in ev.runs else None
    return check_blackbox(d.model, d.x[rows], d.y[rows], robust, d.domain, eps=d.eps, norm=ev.norm,
                          queries=queries, batch_size=d.batch_size, params=d.params, square_success=reuse,
                          saturated=saturated, ce_only=ce_only, progress=d.progress)


def _norm_tag(flag: RedFlag, norm: Norm) -> RedFlag:
    flag.code = f"{flag.code}.{norm}"
    return flag
