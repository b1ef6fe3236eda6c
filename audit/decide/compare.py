"""Compare two runs: metric deltas with each metric's direction of better, significance from a paired
bootstrap over the per-sample outcomes both runs saved, and policy rules on deltas (a regression gate).

Pure: ``compare_results`` reads two results dicts (and their per-sample outcomes) and returns a
``Comparison``: the deltas, the pairing, the significance tests and a ``Decision`` of kind ``compare``
holding the checks behind the exit code. It prints nothing and never imports torch; ``nnaudit compare``
(``audit.cli``), the terminal/JUnit/Markdown renderers (``reports.compare``, ``reports.ci``) and the
dashboard build on it. The policy is ``audit.policy.ComparePolicy``; the statistics are
``audit.bootstrap`` and ``audit.decide.stats``.

- **Deltas** are candidate minus base. A metric's direction ("higher" / "lower" is better, or none)
  is what the section that wrote it declared (``results.json`` ``directions``); results written
  before schema 2.1 carry none, and their changes read "changed", neither better nor worse.
- **Significance**: where both runs audited the same data (equal data hashes) and saved per-sample
  outcomes (``audit.outcomes``), each metric that is a mean of per-sample values (accuracy: correct
  or not; robust accuracy: robust or not per attack, norm and eps; the loss) is paired sample by sample
  on the sample ids both runs share, bootstrapped, and the p-values of all tested metrics are
  Holm-adjusted together (``audit.decide.stats``).
- **Checks** and the exit code, as in ``nnaudit gate``: 0 every check passed; 1 a regression (a rule
  on a delta or on a value failed, or, unless the policy says ``significant_regressions: report``, a
  metric with a direction got significantly worse); 2 the comparison cannot judge (either run
  unfinished or with an errored section, a metric a rule names missing or not a number, or nothing to
  judge at all: no rules and no significance).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from audit.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, BootstrapResult, paired_bootstrap
from audit.decide.checks import Check, CheckStatus, Decision
from audit.decide.gate import evaluate_policy, evaluate_rule
from audit.decide.pairing import Pairing, RunInfo, pair_outcomes, run_info, setup_differences
from audit.decide.stats import holm, hypothesis_key
from audit.numbers import format_number
from audit.policy import DEFAULT_ALPHA, OPERATORS, ComparePolicy, Rule
from audit.results import Direction, all_directions, all_metrics, load_results
from audit.runs import run_state

if TYPE_CHECKING:
    from audit.outcomes import SampleOutcomes

Change = Literal["better", "worse", "unchanged", "changed", "not comparable", "only in base", "only in candidate"]

# -- messages (tests match these) -----------------------------------------------------------------
RUN_NOT_FINISHED = "the {which} run is {status}: {reason}; compare finished runs (exit 2)"
RUN_SECTION_FAILED = "the {which} run has failed sections ({sections}): their metrics cannot be compared"
RUN_FINISHED = "the {which} run finished ({status})"
DELTA_NULL = "metric {metric!r} is null (NaN: could not compute) in the {which} run"
DELTA_UNDEFINED = ("metric {metric!r} is {value} in both runs: the delta is not a number; gate it with an absolute "
                   "rule instead (e.g. '{metric} >= ...')")
DELTA_RESULT = "{metric}: {base} -> {candidate}, delta {delta} {verb} {op} {threshold}"
NOTHING_TO_JUDGE = ("nothing to judge: no policy rules, and significance is unavailable ({reason}); give --policy "
                    "with rules on deltas (e.g. 'performance.accuracy delta >= -0.01')")
SIGNIFICANCE_UNAVAILABLE = "significance unavailable: {reason}"


# -- the comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Significance:
    """The paired bootstrap of one metric over the samples both runs share."""

    n_paired: int
    delta: float  # on the paired samples (equals the metric delta when both runs cover the same samples)
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float  # Holm, over every metric tested in this comparison
    significant: bool


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    base: float | None
    candidate: float | None
    delta: float | None  # candidate - base; None when not a number (a side missing or NaN, inf - inf)
    direction: Direction
    change: Change
    significance: Significance | None = None
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.significance is not None and self.significance.significant

    def _paired_sign(self) -> int:
        """+1 when the paired difference is better in the declared direction, -1 worse, 0 neither."""
        if self.significance is None or self.direction is None or self.significance.delta == 0:
            return 0
        up = self.significance.delta > 0
        return 1 if up == (self.direction == "higher") else -1

    @property
    def regression(self) -> bool:
        """Significantly worse in the direction its section declared (on the paired samples, which are all of
        them unless the runs attacked different subsets)."""
        return self.significant and self._paired_sign() < 0

    @property
    def improvement(self) -> bool:
        return self.significant and self._paired_sign() > 0



@dataclass(frozen=True)
class Comparison:
    """What changed from the base run to the candidate, and the ``Decision`` (kind ``compare``) on it."""

    base: RunInfo
    candidate: RunInfo
    deltas: tuple[MetricDelta, ...]
    pairing: Pairing
    decision: Decision
    alpha: float = DEFAULT_ALPHA
    resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_CONFIDENCE
    rule_metrics: tuple[str, ...] = field(default=())
    n_hypotheses: int = 0  # distinct tests behind the Holm adjustment (metrics with equal outcomes count once)
    differences: tuple[str, ...] = ()  # what differs between the runs' setups: model, data, seed, section params

    @property
    def checks(self) -> tuple[Check, ...]:
        return self.decision.checks

    @property
    def exit_code(self) -> int:
        return self.decision.exit_code

    @property
    def verdict(self) -> str:
        return self.decision.verdict

    def count(self, status: CheckStatus) -> int:
        return self.decision.count(status)

    @property
    def tested(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.significance is not None]

    @property
    def regressions(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.regression]

    @property
    def improvements(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.improvement]

    def delta(self, metric: str) -> MetricDelta | None:
        return next((d for d in self.deltas if d.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (numbers as results.json stores them: "Infinity", null for NaN), for the
        dashboard and for ``nnaudit compare --json``."""
        from dataclasses import asdict

        from audit.results import _jsonable, encode_number

        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, float):
                return encode_number(value)
            return _jsonable(value)

        # the decision's checks stand where they always stood (its kind, title and findings say nothing here)
        out = {("checks" if k == "decision" else k): (v["checks"] if k == "decision" else v)
               for k, v in clean(asdict(self)).items()}
        deltas = out["deltas"]
        for row, d in zip(deltas, self.deltas, strict=True):
            row.update(regression=d.regression, improvement=d.improvement)
        for check in out["checks"]:  # a waiver only where one applies (a comparison's policy holds none)
            if check.get("waiver") is None:
                check.pop("waiver", None)
        return {"exit_code": self.exit_code, "verdict": self.verdict, **out}


def _change(base: float | None, candidate: float | None, direction: Direction) -> tuple[float | None, Change, str]:
    if base is None or candidate is None:
        which = "both runs" if base is None and candidate is None else "the base run" if base is None else \
            "the candidate run"
        return None, "not comparable", f"null (could not compute) in {which}"
    if base == candidate:
        return 0.0, "unchanged", ""
    if math.isinf(base) and math.isinf(candidate):  # opposite infinities
        return None, "not comparable", "infinite with opposite signs"
    delta = candidate - base
    if direction is None:
        return delta, "changed", ""
    better = delta > 0 if direction == "higher" else delta < 0
    return delta, "better" if better else "worse", ""


def _run_checks(info: RunInfo, results: Mapping[str, Any], which: str, fail_on_section_error: bool) -> list[Check]:
    state = run_state(dict(results), info.path)
    name = f"{which} run finished"
    if state.status in ("running", "interrupted", "incomplete"):
        never = f"; sections that never ran: {', '.join(state.never_ran)}" if state.never_ran else ""
        return [Check(name, "run", "error", RUN_NOT_FINISHED.format(which=which, status=state.status,
                                                                   reason=state.reason + never))]
    if state.errored and fail_on_section_error:
        return [Check(name, "run", "error", RUN_SECTION_FAILED.format(which=which, sections=", ".join(state.errored)))]
    return [Check(name, "run", "pass", RUN_FINISHED.format(which=which, status=state.status))]


def _num(value: float | None, *, signed: bool = False) -> str:
    return format_number(value, style="plain", signed=signed)


def _delta_check(rule: Rule, base: Mapping[str, Any], candidate: Mapping[str, Any],
                 base_metrics: Mapping[str, float | None], cand_metrics: Mapping[str, float | None]) -> Check:
    text = f"{rule.metric} delta {rule.op} {_num(rule.threshold)}"
    for which, results, metrics in (("base", base, base_metrics), ("candidate", candidate, cand_metrics)):
        if rule.metric not in metrics:  # the gate's message: did you mean, or the section that failed / skipped
            missing = evaluate_rule(rule, metrics, results.get("sections", {}))
            return Check(text, "delta", missing.status, f"{which} run: {missing.message}", rule.metric, rule.op,
                         rule.threshold)
        if metrics[rule.metric] is None:
            return Check(text, "delta", "missing", DELTA_NULL.format(metric=rule.metric, which=which), rule.metric,
                         rule.op, rule.threshold)
    b, c = base_metrics[rule.metric], cand_metrics[rule.metric]
    assert b is not None and c is not None
    if math.isinf(b) and b == c:
        return Check(text, "delta", "error", DELTA_UNDEFINED.format(metric=rule.metric, value=_num(b)), rule.metric,
                     rule.op, rule.threshold)
    delta = c - b  # +/-inf when one side is infinite (opposite infinities included)
    ok = OPERATORS[rule.op](delta, rule.threshold)
    message = DELTA_RESULT.format(metric=rule.metric, base=_num(b), candidate=_num(c), delta=_num(delta, signed=True),
                                  verb="meets" if ok else "does not meet", op=rule.op, threshold=_num(rule.threshold))
    return Check(text, "delta", "pass" if ok else "fail", message, rule.metric, rule.op, rule.threshold, delta)


def _bootstrap_all(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], tested: list[str], *, resamples: int,
                   confidence: float, seed: int) -> tuple[dict[str, BootstrapResult], dict[str, float], int]:
    """Per tested metric, its paired bootstrap and Holm-adjusted p-value; and how many distinct tests there were.

    Metrics with the same paired differences up to sign (accuracy and error rate; an attack that is the whole
    worst case) are one hypothesis: tested once, counted once in the Holm adjustment.
    """
    groups: dict[bytes, list[str]] = {}
    for metric in tested:
        groups.setdefault(hypothesis_key(*pairs[metric]), []).append(metric)
    distinct = {key: paired_bootstrap(*pairs[members[0]], resamples=resamples, confidence=confidence, seed=seed)
                for key, members in groups.items()}
    adjusted_by_key = dict(zip(distinct, holm([b.p_value for b in distinct.values()]), strict=True))
    boot: dict[str, BootstrapResult] = {}
    adjusted: dict[str, float] = {}
    for key, members in groups.items():
        first = distinct[key]
        lead = pairs[members[0]][1] - pairs[members[0]][0]
        for metric in members:
            same_sign = np.array_equal(pairs[metric][1] - pairs[metric][0], lead)
            boot[metric] = first if same_sign else BootstrapResult(-first.delta, -first.ci_high, -first.ci_low,
                                                                   first.p_value)
            adjusted[metric] = adjusted_by_key[key]
    return boot, adjusted, len(groups)


def _significance_checks(deltas: list[MetricDelta], tested: list[str], pairing: Pairing, policy: ComparePolicy,
                         confidence: float) -> list[Check]:
    """One check per tested metric (a significant regression fails unless the policy only reports it), or one
    saying why nothing was tested: skipped beside rules, an error when nothing else judges."""
    if not (pairing.available and tested):
        reason = pairing.reason if not pairing.available else "no metric with a direction has per-sample outcomes"
        if policy.has_rules:
            return [Check("significance", "significance", "skipped", SIGNIFICANCE_UNAVAILABLE.format(reason=reason))]
        return [Check("significance", "significance", "error", NOTHING_TO_JUDGE.format(reason=reason))]
    by_metric = {d.metric: d for d in deltas}
    checks = []
    for metric in tested:
        d = by_metric[metric]
        s = d.significance
        assert s is not None
        worse = d.regression
        status: CheckStatus = "fail" if worse and policy.significant_regressions == "fail" else "pass"
        what = "significantly worse" if worse else "significantly better" if d.improvement else \
            "no significant change"
        message = (f"{metric}: {_num(d.base)} -> {_num(d.candidate)} ({what}; paired delta "
                   f"{_num(s.delta, signed=True)} over {s.n_paired} samples, {confidence:.0%} CI "
                   f"[{_num(s.ci_low, signed=True)}, {_num(s.ci_high, signed=True)}], p {_num(s.p_value)}, Holm "
                   f"{_num(s.p_adjusted)})")
        checks.append(Check(f"{metric} no significant regression", "significance", status, message, metric,
                            value=d.delta))
    return checks


def compare_results(base: Mapping[str, Any], candidate: Mapping[str, Any], *,
                    base_outcomes: Mapping[str, SampleOutcomes] | None = None,
                    candidate_outcomes: Mapping[str, SampleOutcomes] | None = None,
                    policy: ComparePolicy | None = None, base_dir: str | os.PathLike[str] | None = None,
                    candidate_dir: str | os.PathLike[str] | None = None, resamples: int = DEFAULT_RESAMPLES,
                    confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                    outcomes_error: str | None = None) -> Comparison:
    """Compare two loaded results dicts (and their per-sample outcomes, by section). Pure: reads and writes
    nothing. ``*_dir`` tell a live run from a dead one (see ``audit.runs.run_state``)."""
    policy = policy or ComparePolicy()
    base_info, cand_info = run_info(base, base_dir), run_info(candidate, candidate_dir)
    base_metrics, cand_metrics = all_metrics(dict(base)), all_metrics(dict(candidate))
    directions = {**all_directions(base), **all_directions(candidate)}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if outcomes_error is not None:
        pairing = Pairing(False, outcomes_error)
    else:
        pairing, pairs = pair_outcomes(base_outcomes or {}, candidate_outcomes or {}, base_info, cand_info)
    tested = [m for m in pairs if m in base_metrics and m in cand_metrics and directions.get(m) is not None]
    boot, adjusted, n_hypotheses = _bootstrap_all(pairs, tested, resamples=resamples, confidence=confidence,
                                                  seed=seed)

    deltas: list[MetricDelta] = []
    for metric in [*base_metrics, *(m for m in cand_metrics if m not in base_metrics)]:
        direction = directions.get(metric)
        if metric not in cand_metrics:
            deltas.append(MetricDelta(metric, base_metrics[metric], None, None, direction, "only in base"))
            continue
        if metric not in base_metrics:
            deltas.append(MetricDelta(metric, None, cand_metrics[metric], None, direction, "only in candidate"))
            continue
        delta, change, note = _change(base_metrics[metric], cand_metrics[metric], direction)
        significance = None
        if metric in boot:
            b = boot[metric]
            significance = Significance(len(pairs[metric][0]), b.delta, b.ci_low, b.ci_high, b.p_value,
                                        adjusted[metric], adjusted[metric] <= policy.alpha)
        deltas.append(MetricDelta(metric, base_metrics[metric], cand_metrics[metric], delta, direction, change,
                                  significance, note))

    checks = _run_checks(base_info, base, "base", policy.fail_on_section_error)
    checks += _run_checks(cand_info, candidate, "candidate", policy.fail_on_section_error)
    checks += [_delta_check(rule, base, candidate, base_metrics, cand_metrics) for rule in policy.delta_rules]
    if policy.gate is not None:  # the gate's rules on values and findings limits, on the candidate
        gated = evaluate_policy(candidate, policy.gate, run_dir=candidate_dir)
        checks += [replace(c, kind="rule" if c.kind == "metric" else "findings") for c in gated.checks
                   if c.kind in ("metric", "findings")]
    checks += _significance_checks(deltas, tested, pairing, policy, confidence)
    rule_metrics = tuple(dict.fromkeys([r.metric for r in policy.delta_rules]
                                       + [r.metric for r in (policy.gate.rules if policy.gate else ())]))
    return Comparison(base=base_info, candidate=cand_info, deltas=tuple(deltas), pairing=pairing,
                      decision=Decision("compare", tuple(checks)), alpha=policy.alpha, resamples=resamples,
                      confidence=confidence, rule_metrics=rule_metrics, n_hypotheses=n_hypotheses,
                      differences=tuple(setup_differences(base, candidate)))


def compare_run_dirs(base_dir: str | os.PathLike[str], candidate_dir: str | os.PathLike[str], *,
                     policy: ComparePolicy | None = None, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> Comparison:
    """Load both runs (results and per-sample outcomes) and compare them. Raises ``ResultsError`` for a
    missing or invalid results file."""
    from audit.outcomes import OutcomesError, load_all_outcomes

    base, candidate = load_results(base_dir, validate=True), load_results(candidate_dir, validate=True)
    base_dir, candidate_dir = _run_dir(base_dir), _run_dir(candidate_dir)
    try:
        base_outcomes = load_all_outcomes(base_dir, list(base.get("sections", {})), extra=False)
        cand_outcomes = load_all_outcomes(candidate_dir, list(candidate.get("sections", {})), extra=False)
        error = None
    except OutcomesError as err:
        base_outcomes, cand_outcomes, error = {}, {}, str(err)
    return compare_results(base, candidate, base_outcomes=base_outcomes, candidate_outcomes=cand_outcomes,
                           policy=policy, base_dir=base_dir, candidate_dir=candidate_dir, resamples=resamples,
                           confidence=confidence, seed=seed, outcomes_error=error)


def _run_dir(path: str | os.PathLike[str]) -> Path:
    """The run directory of a run directory or of its results.json."""
    p = Path(path)
    return p.parent if p.is_file() else p

