"""Compare two runs: metric deltas with each metric's direction of better, significance from a paired
bootstrap over the per-sample outcomes both runs saved, and policy rules on the deltas (a regression gate).

A plain library: it reads results and outcomes and returns data (``Comparison``); it prints nothing
and never imports torch. ``nnaudit compare`` (``run_compare``), the JUnit and Markdown writers
(``reports/compare.py``) and the dashboard build on it.

- **Deltas** are candidate minus base. A metric's direction ("higher" / "lower" is better, or none)
  is what the section that wrote it declared (``results.json`` ``directions``); results written
  before schema 2.1 carry none, and their changes read "changed", neither better nor worse.
- **Significance**: where both runs audited the same data (equal data hashes) and saved per-sample
  outcomes (``audit.outcomes``), each metric that is a mean of per-sample values (accuracy: correct
  or not; robust accuracy: robust or not per attack, norm and eps; the loss) is paired sample by sample
  on the sample ids both runs share. The paired bootstrap resamples the samples (``resamples``
  times, seeded) and gives a percentile interval of the mean paired difference and a two-sided
  p-value from the centred bootstrap distribution (Hall & Wilson 1991: how often the resampled
  difference strays from the observed one by at least the observed one's distance from 0). The
  p-values of all the tested metrics are adjusted together (Holm), so the chance of calling any
  change significant when nothing changed stays at ``alpha`` for the whole comparison.
- **Checks** and the exit code, as in ``nnaudit gate``: 0 every check passed; 1 a regression (a rule
  on a delta or an absolute rule failed, or, unless the policy says ``significant_regressions:
  report``, a metric with a direction got significantly worse); 2 the comparison cannot judge (either
  run unfinished or with an errored section, a metric a rule names missing or not a number, or
  nothing to judge at all: no rules and no significance).

A compare policy is a gate policy (``audit.gate``) whose rules may also be rules on deltas::

    rules:
      - robustness.worst_case.linf.eps=0.1.robust_accuracy delta >= -0.02   # candidate - base
      - metric: performance.accuracy                                          # the same as a mapping
        delta: true
        op: ">="
        value: -0.01
      - performance.accuracy >= 0.9            # an absolute rule on the candidate, as in `nnaudit gate`
    significant_regressions: fail              # fail (default) | report
    alpha: 0.05                                # family-wise error rate of the significance tests
    fail_on_section_error: true                # default: an errored section in either run exits 2
    max_findings: {critical: 0}                # on the candidate, as in `nnaudit gate`
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from audit.errors import ConfigError
from audit.gate import (
    BAD_FLAG,
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    OPERATORS,
    POLICY_KEYS,
    POLICY_NOT_MAPPING,
    RULES_NOT_LIST,
    Policy,
    Rule,
    evaluate_policy,
    evaluate_rule,
    parse_policy,
    parse_rule,
)
from audit.results import Direction, all_directions, all_metrics, load_results, run_state

if TYPE_CHECKING:
    from audit.outcomes import SampleOutcomes

Change = Literal["better", "worse", "unchanged", "changed", "not comparable", "only in base", "only in candidate"]
CheckKind = Literal["run", "section", "rule", "delta", "findings", "significance"]
CheckStatus = Literal["pass", "fail", "missing", "error", "skipped"]
RegressionMode = Literal["fail", "report"]

DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 5000
DEFAULT_CONFIDENCE = 0.95
COMPARE_KEYS = ("significant_regressions", "alpha")

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
BAD_REGRESSION_MODE = "'significant_regressions' is fail or report, got {value!r}"
BAD_ALPHA = "'alpha' is the family-wise error rate, a number between 0 and 0.5, got {value!r}"
DELTA_RULE_SYNTAX = ("cannot read rule {text!r}: write '<metric> delta <op> <number>' such as "
                     "'robustness.worst_case.linf.eps=0.1.robust_accuracy delta >= -0.02'")
UNKNOWN_COMPARE_KEY = "unknown key {key!r}{hint}; a compare policy has only: {known}"
BAD_DELTA_FLAG = "'delta' in a rule is true (a rule on candidate - base) or false (on the candidate), got {value!r}"

_DELTA_RE = re.compile(r"^\s*(?P<metric>\S+?)\s+delta\s*(?P<rest>(?:>=|<=|==|!=|>|<).*)$")


# -- policy -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparePolicy:
    """Rules on deltas, a gate policy for the candidate (absolute rules, findings), and how to treat
    significant regressions."""

    delta_rules: tuple[Rule, ...] = ()
    gate: Policy | None = None  # absolute rules and max_findings, evaluated on the candidate
    fail_on_section_error: bool = True
    significant_regressions: RegressionMode = "fail"
    alpha: float = DEFAULT_ALPHA

    @property
    def has_rules(self) -> bool:
        return bool(self.delta_rules) or self.gate is not None


def _delta_rule(item: Any, key: str) -> Rule | None:
    """A rule on a delta, or None when ``item`` is an ordinary (absolute) rule."""
    if isinstance(item, str):
        if re.search(r"\sdelta(\s|[<>=!])", item) is None:
            return None
        match = _DELTA_RE.match(item)
        if match is None:
            raise ConfigError(key, DELTA_RULE_SYNTAX.format(text=item))
        return parse_rule(f"{match['metric']} {match['rest']}", key)
    if isinstance(item, Mapping) and "delta" in item:
        flag = item["delta"]
        if not isinstance(flag, bool):
            raise ConfigError(f"{key}.delta", BAD_DELTA_FLAG.format(value=flag))
        rest = {k: v for k, v in item.items() if k != "delta"}
        rule = parse_rule(rest, key)
        return rule if flag else None
    return None


def parse_compare_policy(data: Any) -> ComparePolicy:
    """A ``ComparePolicy`` from parsed YAML; ``ConfigError(key, message)`` names what to change. Unlike a gate
    policy it may hold no rules at all (then the significance tests alone decide)."""
    if not isinstance(data, Mapping):
        raise ConfigError("policy", POLICY_NOT_MAPPING.format(kind=type(data).__name__))
    known = (*POLICY_KEYS, *COMPARE_KEYS)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(str(key), UNKNOWN_COMPARE_KEY.format(key=key, hint=hint, known=", ".join(known)))
    mode = data.get("significant_regressions", "fail")
    if mode not in ("fail", "report"):
        raise ConfigError("significant_regressions", BAD_REGRESSION_MODE.format(value=mode))
    alpha = data.get("alpha", DEFAULT_ALPHA)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 0.5:
        raise ConfigError("alpha", BAD_ALPHA.format(value=alpha))
    flag = data.get("fail_on_section_error", True)
    if not isinstance(flag, bool):
        raise ConfigError("fail_on_section_error", BAD_FLAG.format(value=flag))
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ConfigError("rules", RULES_NOT_LIST)
    delta_rules: list[Rule] = []
    absolute: list[Any] = []
    for i, item in enumerate(raw_rules):
        rule = _delta_rule(item, f"rules[{i}]")
        if rule is not None:
            delta_rules.append(rule)
        else:
            parse_rule(item, f"rules[{i}]")  # the gate's message, with this rule's own index
            absolute.append(item)
    gate = None
    if absolute or data.get("max_findings"):
        gate = parse_policy({"rules": absolute, "fail_on_section_error": flag,
                             "max_findings": data.get("max_findings")})
    return ComparePolicy(delta_rules=tuple(delta_rules), gate=gate, fail_on_section_error=flag,
                         significant_regressions=mode, alpha=float(alpha))


def load_compare_policy(path: str | os.PathLike[str]) -> ComparePolicy:
    """Read a policy file (see the module docstring); the gate's messages for a missing or bad file."""
    from audit.gate import read_policy_yaml

    return parse_compare_policy(read_policy_yaml(path))


# -- statistics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # mean paired difference (candidate - base) over the paired samples
    ci_low: float
    ci_high: float
    p_value: float  # two-sided


def paired_bootstrap(base: np.ndarray, candidate: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> BootstrapResult:
    """Paired bootstrap of the mean difference ``candidate - base`` over samples (rows paired by position).

    Resamples the n samples with replacement ``resamples`` times. When the differences take few distinct
    values (0/1 outcomes give -1, 0, 1) the counts of each value in a resample are drawn at once from
    their multinomial distribution, which is the same distribution as resampling the rows one by one.
    Interval: percentile. p-value: how often the resampled mean strays from the observed one by at
    least the observed one's distance from 0 (plus one, over resamples plus one), doubled sides included.
    """
    base = np.asarray(base, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if base.shape != candidate.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError(f"need two equal-length, non-empty 1-d arrays, got {base.shape} and {candidate.shape}")
    diff = candidate - base
    n = len(diff)
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(diff, return_counts=True)
    if len(values) <= 64:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ values / n
    else:
        chunk = max(1, 4_000_000 // n)
        parts = []
        for start in range(0, resamples, chunk):
            rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
            parts.append(diff[rows].mean(axis=1))
        means = np.concatenate(parts)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # rounding of a mean of n values of size <= max|diff|: a few ulps of that scale
    tol = 8 * np.finfo(np.float64).eps * max(1.0, float(np.abs(values).max()))
    extreme = int((np.abs(means - observed) >= abs(observed) - tol).sum())
    p_value = 1.0 if abs(observed) <= tol else min(1.0, (extreme + 1) / (resamples + 1))
    return BootstrapResult(observed, float(low), float(high), p_value)


def _hypothesis_key(base: np.ndarray, candidate: np.ndarray) -> bytes:
    """The paired differences up to sign, as bytes: equal keys are the same test."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    nonzero = np.flatnonzero(diff)
    if len(nonzero) and diff[nonzero[0]] < 0:
        diff = -diff
    return (diff + 0.0).tobytes()  # + 0.0 turns -0.0 into 0.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error rate, valid under any dependence between the tests)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


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
class Check:
    """One check behind the exit code: a run's state, a rule, a metric's significance."""

    name: str
    kind: CheckKind
    status: CheckStatus
    message: str
    metric: str | None = None
    op: str | None = None
    threshold: float | None = None
    value: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "missing", "error")


@dataclass(frozen=True)
class Pairing:
    """Whether per-sample outcomes could be paired, and on what."""

    available: bool
    reason: str
    n_samples: int = 0  # the most samples paired in one section
    sections: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunInfo:
    title: str
    path: str | None
    status: str
    data_sha256: str | None
    model_sha256: str | None
    seed: Any
    nnaudit_version: str | None


@dataclass(frozen=True)
class Comparison:
    base: RunInfo
    candidate: RunInfo
    deltas: tuple[MetricDelta, ...]
    pairing: Pairing
    checks: tuple[Check, ...]
    alpha: float = DEFAULT_ALPHA
    resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_CONFIDENCE
    rule_metrics: tuple[str, ...] = field(default=())
    n_hypotheses: int = 0  # distinct tests behind the Holm adjustment (metrics with equal outcomes count once)
    differences: tuple[str, ...] = ()  # what differs between the runs' setups: model, data, seed, section params

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        if statuses & {"missing", "error"}:
            return EXIT_ERROR
        if "fail" in statuses:
            return EXIT_FAIL
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "PASSED", EXIT_FAIL: "REGRESSION", EXIT_ERROR: "CANNOT JUDGE"}[self.exit_code]

    def count(self, status: CheckStatus) -> int:
        return sum(1 for c in self.checks if c.status == status)

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

        out = clean(asdict(self))
        deltas = out["deltas"]
        for row, d in zip(deltas, self.deltas, strict=True):
            row.update(regression=d.regression, improvement=d.improvement)
        return {"exit_code": self.exit_code, "verdict": self.verdict, **out}


def _run_info(results: Mapping[str, Any], path: str | os.PathLike[str] | None) -> RunInfo:
    from reports.views import run_title

    manifest = results.get("manifest") if isinstance(results.get("manifest"), Mapping) else {}
    assert isinstance(manifest, Mapping)
    data = manifest.get("data") if isinstance(manifest.get("data"), Mapping) else {}
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    state = run_state(dict(results), path)
    return RunInfo(title=run_title(results), path=str(path) if path is not None else None, status=state.status,
                   data_sha256=data.get("sha256") if isinstance(data, Mapping) else None,
                   model_sha256=model.get("sha256") if isinstance(model, Mapping) else None,
                   seed=manifest.get("seed"), nnaudit_version=manifest.get("nnaudit_version"))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def setup_differences(base: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """What differs between two runs' setups, one line each: model and data hashes, seed, nnaudit version, the
    sections run and each section's parameters."""
    out: list[str] = []
    b_man = base.get("manifest") if isinstance(base.get("manifest"), Mapping) else {}
    c_man = candidate.get("manifest") if isinstance(candidate.get("manifest"), Mapping) else {}
    assert isinstance(b_man, Mapping) and isinstance(c_man, Mapping)
    for label, path in (("model", ("model", "sha256")), ("data", ("data", "sha256"))):
        b_val, c_val = b_man.get(path[0], {}).get(path[1]), c_man.get(path[0], {}).get(path[1])
        if b_val != c_val:
            out.append(f"{label} sha256 {str(b_val)[:12]} -> {str(c_val)[:12]}")
    for key in ("seed", "nnaudit_version", "device"):
        if b_man.get(key) != c_man.get(key):
            out.append(f"{key} {b_man.get(key)} -> {c_man.get(key)}")
    b_sec, c_sec = base.get("sections", {}), candidate.get("sections", {})
    only_b, only_c = [n for n in b_sec if n not in c_sec], [n for n in c_sec if n not in b_sec]
    if only_b:
        out.append(f"sections only in the base run: {', '.join(only_b)}")
    if only_c:
        out.append(f"sections only in the candidate run: {', '.join(only_c)}")
    for name in (n for n in b_sec if n in c_sec):
        b_params, c_params = _flatten(b_sec[name].get("params", {})), _flatten(c_sec[name].get("params", {}))
        changed = [f"{k} {b_params.get(k)} -> {c_params.get(k)}" for k in dict.fromkeys([*b_params, *c_params])
                   if b_params.get(k) != c_params.get(k)]
        if changed:
            out.append(f"{name} parameters: {'; '.join(changed)}")
    return out


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


def _pair_outcomes(base: Mapping[str, SampleOutcomes], candidate: Mapping[str, SampleOutcomes],
                   base_info: RunInfo, cand_info: RunInfo) -> tuple[Pairing, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per metric, the paired per-sample values (base, candidate) on the sample ids both runs share."""
    if base_info.data_sha256 is None or base_info.data_sha256 != cand_info.data_sha256:
        return Pairing(False, "the runs audited different data (data sha256 "
                       f"{(base_info.data_sha256 or 'unknown')[:12]} vs {(cand_info.data_sha256 or 'unknown')[:12]}), "
                       "so their samples cannot be paired"), {}
    common = [s for s in base if s in candidate]
    if not common:
        missing = "neither run" if not base and not candidate else "the base run" if not base else \
            "the candidate run" if not candidate else "no section of both runs"
        return Pairing(False, f"{missing} saved per-sample outcomes (artifacts/<section>/outcomes.npz; results "
                       "written before nnaudit saved them have none)"), {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sections: list[str] = []
    most = 0
    reasons: list[str] = []
    for name in common:
        b, c = base[name], candidate[name]
        if b.data_sha256 != base_info.data_sha256 or c.data_sha256 != cand_info.data_sha256:
            reasons.append(f"{name}: its outcomes file describes other data than its run")
            continue
        shared, bi, ci = np.intersect1d(b.sample_id, c.sample_id, assume_unique=True, return_indices=True)
        if len(shared) == 0:
            reasons.append(f"{name}: no sample ids in common")
            continue
        metrics = [m for m in b.values if m in c.values]
        for metric in metrics:
            pairs[metric] = (b.values[metric][bi], c.values[metric][ci])
        if metrics:
            sections.append(name)
            most = max(most, len(shared))
    if not pairs:
        return Pairing(False, "; ".join(reasons) or "no metric has per-sample outcomes in both runs"), {}
    return Pairing(True, f"{most} samples of the same data (sha256 {(base_info.data_sha256 or '')[:12]}) paired "
                   f"in {', '.join(sections)}", most, tuple(sections)), pairs


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


def fmt(value: float | None, *, signed: bool = False) -> str:
    """A number for the comparison's text: up to 4 significant digits, no exponent for ordinary values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return ("+" if signed else "") + "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "+" if signed and value > 0 else ""
    magnitude = abs(value)
    if float(value).is_integer() and magnitude < 1e15:
        return f"{sign}{int(value)}"
    if 1e-4 <= magnitude < 1e6:
        digits = max(0, 3 - math.floor(math.log10(magnitude)))
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        return sign + text
    return f"{sign}{value:.3e}"


def _delta_check(rule: Rule, base: Mapping[str, Any], candidate: Mapping[str, Any],
                 base_metrics: Mapping[str, float | None], cand_metrics: Mapping[str, float | None]) -> Check:
    text = f"{rule.metric} delta {rule.op} {fmt(rule.threshold)}"
    for which, results, metrics in (("base", base, base_metrics), ("candidate", candidate, cand_metrics)):
        if rule.metric not in metrics:  # the gate's message: did you mean, or the section that failed / skipped
            outcome = evaluate_rule(rule, metrics, results.get("sections", {}))
            return Check(text, "delta", outcome.status, f"{which} run: {outcome.message}", rule.metric, rule.op,
                         rule.threshold)
        if metrics[rule.metric] is None:
            return Check(text, "delta", "missing", DELTA_NULL.format(metric=rule.metric, which=which), rule.metric,
                         rule.op, rule.threshold)
    b, c = base_metrics[rule.metric], cand_metrics[rule.metric]
    assert b is not None and c is not None
    if math.isinf(b) and b == c:
        return Check(text, "delta", "error", DELTA_UNDEFINED.format(metric=rule.metric, value=fmt(b)), rule.metric,
                     rule.op, rule.threshold)
    delta = c - b  # +/-inf when one side is infinite (opposite infinities included)
    ok = OPERATORS[rule.op](delta, rule.threshold)
    message = DELTA_RESULT.format(metric=rule.metric, base=fmt(b), candidate=fmt(c), delta=fmt(delta, signed=True),
                                  verb="meets" if ok else "does not meet", op=rule.op, threshold=fmt(rule.threshold))
    return Check(text, "delta", "pass" if ok else "fail", message, rule.metric, rule.op, rule.threshold, delta)


def compare_results(base: Mapping[str, Any], candidate: Mapping[str, Any], *,
                    base_outcomes: Mapping[str, SampleOutcomes] | None = None,
                    candidate_outcomes: Mapping[str, SampleOutcomes] | None = None,
                    policy: ComparePolicy | None = None, base_dir: str | os.PathLike[str] | None = None,
                    candidate_dir: str | os.PathLike[str] | None = None, resamples: int = DEFAULT_RESAMPLES,
                    confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                    outcomes_error: str | None = None) -> Comparison:
    """Compare two loaded results dicts (and their per-sample outcomes, by section). Pure: reads and writes
    nothing. ``*_dir`` tell a live run from a dead one (see ``audit.results.run_state``)."""
    policy = policy or ComparePolicy()
    base_info, cand_info = _run_info(base, base_dir), _run_info(candidate, candidate_dir)
    base_metrics, cand_metrics = all_metrics(dict(base)), all_metrics(dict(candidate))
    directions = {**all_directions(base), **all_directions(candidate)}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if outcomes_error is not None:
        pairing = Pairing(False, outcomes_error)
    else:
        pairing, pairs = _pair_outcomes(base_outcomes or {}, candidate_outcomes or {}, base_info, cand_info)

    tested = [m for m in pairs if m in base_metrics and m in cand_metrics and directions.get(m) is not None]
    # metrics with the same paired differences up to sign (accuracy and error rate; an attack that is the whole
    # worst case) are one hypothesis: tested once, counted once in the Holm adjustment
    groups: dict[bytes, list[str]] = {}
    for metric in tested:
        groups.setdefault(_hypothesis_key(*pairs[metric]), []).append(metric)
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
    if policy.gate is not None:
        report = evaluate_policy(candidate, policy.gate, run_dir=candidate_dir)
        checks += [Check(o.name, "rule" if o.kind == "metric" else "findings", o.status, o.message, o.metric, o.op,
                         o.threshold, o.value) for o in report.outcomes if o.kind in ("metric", "findings")]
    by_metric = {d.metric: d for d in deltas}
    if pairing.available and tested:
        for metric in tested:
            d = by_metric[metric]
            s = d.significance
            assert s is not None
            worse = d.regression
            status: CheckStatus = "fail" if worse and policy.significant_regressions == "fail" else "pass"
            what = "significantly worse" if worse else "significantly better" if d.improvement else \
                "no significant change"
            message = (f"{metric}: {fmt(d.base)} -> {fmt(d.candidate)} ({what}; paired delta "
                       f"{fmt(s.delta, signed=True)} over {s.n_paired} samples, {confidence:.0%} CI "
                       f"[{fmt(s.ci_low, signed=True)}, {fmt(s.ci_high, signed=True)}], p {fmt(s.p_value)}, Holm "
                       f"{fmt(s.p_adjusted)})")
            checks.append(Check(f"{metric} no significant regression", "significance", status, message, metric,
                                value=d.delta))
    else:
        reason = pairing.reason if not pairing.available else "no metric with a direction has per-sample outcomes"
        if policy.has_rules:
            checks.append(Check("significance", "significance", "skipped",
                                SIGNIFICANCE_UNAVAILABLE.format(reason=reason)))
        else:
            checks.append(Check("significance", "significance", "error", NOTHING_TO_JUDGE.format(reason=reason)))
    rule_metrics = tuple(dict.fromkeys([r.metric for r in policy.delta_rules]
                                       + [r.metric for r in (policy.gate.rules if policy.gate else ())]))
    return Comparison(base=base_info, candidate=cand_info, deltas=tuple(deltas), pairing=pairing,
                      checks=tuple(checks), alpha=policy.alpha, resamples=resamples, confidence=confidence,
                      rule_metrics=rule_metrics, n_hypotheses=len(groups),
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


# -- plain text ------------------------------------------------------------------------------------

_MARKS = {"pass": "PASS", "fail": "FAIL", "missing": "MISSING", "error": "ERROR", "skipped": "SKIP"}


def notable_deltas(comparison: Comparison, *, limit: int | None = 20) -> list[MetricDelta]:
    """The deltas worth showing: significant ones and those rules name first, then the largest changes of
    metrics with a direction (``limit`` of those; None: every metric)."""
    if limit is None:
        return list(comparison.deltas)
    first = [d for d in comparison.deltas if d.significant or d.metric in comparison.rule_metrics]
    rest = [d for d in comparison.deltas if d not in first and d.direction is not None and d.change in
            ("better", "worse")]
    rest.sort(key=lambda d: -abs(d.delta) if d.delta is not None and math.isfinite(d.delta) else -math.inf)
    return first + rest[:limit]


def format_comparison(comparison: Comparison, *, limit: int | None = 20) -> str:
    """The comparison as plain text for the terminal and CI logs: runs, pairing, checks, notable deltas."""
    c = comparison
    lines = [f"nnaudit compare: base {c.base.title!r} ({c.base.path}) -> candidate {c.candidate.title!r} "
             f"({c.candidate.path})"]
    lines.append("differs: " + ("; ".join(c.differences) if c.differences else "nothing in the setup (model, data, "
                                "seed, section parameters)"))
    if c.pairing.available:
        lines.append(f"significance: {c.pairing.reason}; paired bootstrap, {c.resamples} resamples, Holm-adjusted "
                     f"over {c.n_hypotheses} distinct tests ({len(c.tested)} metrics) at alpha {fmt(c.alpha)}")
    else:
        lines.append(f"significance unavailable: {c.pairing.reason}")
    rows = [(_MARKS[k.status], k.name, "" if k.value is None else fmt(k.value, signed=k.kind in ("delta",
             "significance")), k.message) for k in c.checks]
    header = ("RESULT", "CHECK", "VALUE", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    shown = notable_deltas(c, limit=limit)
    if shown:
        lines.append("")
        lines.append("metric deltas (candidate - base)" + ("" if limit is None else
                     f": significant, named by a rule, then the {limit} largest changes with a direction"))
        table: list[tuple[str, ...]] = [("METRIC", "BASE", "CANDIDATE", "DELTA", "BETTER", "CHANGE", "SIGNIFICANCE")]
        for d in shown:
            s = d.significance
            sig = ("untested" if d.direction is not None else "") if s is None else \
                (f"p(Holm) {fmt(s.p_adjusted)}" + (" significant" if s.significant else ""))
            table.append((d.metric, fmt(d.base), fmt(d.candidate), fmt(d.delta, signed=True),
                          d.direction or "-", d.change + (f" ({d.note})" if d.note else ""), sig))
        table_widths = [max(len(r[i]) for r in table) for i in range(6)]
        for cells in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(cells[:6], table_widths, strict=True)) + "  "
                         + cells[6])
    counts = ", ".join(f"{c.count(s)} {s}" for s in ("pass", "fail", "missing", "error", "skipped") if c.count(s))
    lines.append(f"compare {c.verdict} (exit {c.exit_code}): {counts or 'no checks'}; {len(c.regressions)} "
                 f"significant regressions, {len(c.improvements)} significant improvements")
    return "\n".join(lines) + "\n"


def run_compare(base_dir: str | os.PathLike[str], candidate_dir: str | os.PathLike[str], *,
                policy_path: str | os.PathLike[str] | None = None, junit: str | os.PathLike[str] | None = None,
                summary: str | os.PathLike[str] | None = None, limit: int | None = 20,
                resamples: int = DEFAULT_RESAMPLES, json_path: str | os.PathLike[str] | None = None,
                stream: Any = None) -> int:
    """``nnaudit compare``: compare, write the text to ``stream`` (stdout), JUnit / Markdown if asked; the exit
    code. Raises ``ConfigError`` (bad policy) and ``ResultsError`` (missing or invalid results)."""
    import sys

    from reports.compare import write_compare_junit, write_compare_markdown

    policy = load_compare_policy(policy_path) if policy_path is not None else None
    comparison = compare_run_dirs(base_dir, candidate_dir, policy=policy, resamples=resamples)
    out = stream if stream is not None else sys.stdout
    out.write(format_comparison(comparison, limit=limit))
    if json_path is not None:
        import json

        from audit.results import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n")
    if junit is not None:
        write_compare_junit(comparison, Path(junit))
    if summary is not None:
        write_compare_markdown(comparison, Path(summary))
    return comparison.exit_code
