"""The ``robustness`` section: robust accuracy under the strongest configured attacks, robustness
curves, minimal adversarial epsilons, gradient-masking red flags and an adversarial gallery."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from attacks.base import NORMS, Attack, AttackError, AttackNotApplicable, Domain, Norm
from attacks.chunks import ChunkInputs, NormPlan, evaluate_chunk, reduce_chunks
from attacks.escalate import EscalationParams, escalate
from attacks.escalate import record as record_escalation
from attacks.evaluate import (
    BOUNDED_ATTACKS,
    MINIMAL_ATTACKS,
    NormEvaluation,
    attack_class,
    make_attack,
    per_class_accuracy,
    registered_attacks,
)
from attacks.gallery import feature_summary, gallery_figure
from attacks.redflags import (
    CheckData,
    GradientStats,
    RedFlag,
    RedFlagParams,
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
    not_applicable,
    strongest_iterative,
)
from audit.engine.chunks import (
    CHUNKS_DIR,
    DEFAULT_CHUNK_SIZE,
    ChunkStore,
    chunk_seed,
    copy_on_write,
    plan,
    run_chunks,
    seed_all,
)
from audit.errors import ConfigError, NNAuditError, PluginError
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AuditContext

class RobustnessParams(Params):
    norm: Norm | list[Norm] = Field("linf", description="threat model(s): linf, l2 or both")
    eps: list[float] | dict[Norm, list[float]] = Field(
        [0.05, 0.1, 0.2], description="perturbation budgets in raw input units; a dict gives a list per norm")
    attacks: list[str] = Field(["apgd_ce", "apgd_dlr"], description=f"eps-bounded attacks: {list(BOUNDED_ATTACKS)}")
    steps: int = Field(50, ge=2, le=10_000, description="iterations of pgd / apgd")
    restarts: int = Field(1, ge=1, le=100, description="random restarts of pgd / apgd (worst case per sample)")
    square: Literal["auto", "always", "never"] = Field(
        "auto", description="add the score-based square attack: auto = only when the model has no gradients")
    square_queries: int = Field(1000, ge=1, description="queries per sample of the square attack")
    minimal_norm: list[str] = Field(["fmn"], description=f"minimal-norm attacks (foolbox): {list(MINIMAL_ATTACKS)}")
    minimal_samples: int = Field(100, ge=0, description="samples given to the minimal-norm attacks")
    minimal_steps: int = Field(100, ge=1, description="iterations of the minimal-norm attacks")
    max_samples: int | None = Field(2000, ge=1, description="attack at most this many samples (stratified)")
    red_flags: bool = Field(True, description="run the gradient-masking checks")
    check_samples: int = Field(100, ge=4, description="clean-correct samples the red-flag checks use")
    check_queries: int = Field(100, ge=1, description="square-attack queries per sample in the black-box check")
    red_flag_params: RedFlagParams = Field(
        default_factory=RedFlagParams, description="thresholds and effort of the red-flag checks (docs/robustness.md)")
    gallery_size: int = Field(8, ge=0, le=32, description="adversarial examples in the image gallery")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="samples per chunk: the unit of work saved to "
                            "artifacts as it finishes (a resumed run redoes only unfinished chunks), scheduled on "
                            "Ray workers with --backend ray, and the bound on the adversarial examples held in "
                            "memory (docs/scale.md)")
    escalation: EscalationParams = Field(
        default_factory=EscalationParams, description="adaptive attacks (Square, BPDA, transfer, EOT) run when a red "
        "flag says likely masked, folded into the worst case (docs/defenses.md)")
    attack_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-attack constructor parameters, e.g. {pgd: {rel_step_size: 0.1}}; they "
        "override steps / restarts / square_queries for that attack (built-in and third-party attacks alike)")

    @field_validator("eps")
    @classmethod
    def _eps_positive(cls, value: Any) -> Any:
        lists = value.values() if isinstance(value, dict) else [value]
        for eps in lists:
            if not eps:
                raise ValueError("give at least one eps")
            if any(not math.isfinite(e) or e <= 0 for e in eps):
                raise ValueError(f"eps values must be finite and > 0, got {eps}")
        return value

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, value: list[str]) -> list[str]:
        registered = registered_attacks()
        unknown = [a for a in value if a not in registered or attack_class(a).minimal]
        if unknown:
            bounded = [a for a in registered if a not in MINIMAL_ATTACKS]
            raise ValueError(f"unknown attacks {unknown}; choose from {bounded} (minimal-norm attacks go under "
                             "minimal_norm)")
        return value

    @field_validator("minimal_norm")
    @classmethod
    def _known_minimal(cls, value: list[str]) -> list[str]:
        registered = registered_attacks()
        unknown = [a for a in value if a not in registered or not attack_class(a).minimal]
        if unknown:
            raise ValueError(f"unknown minimal-norm attacks {unknown}; choose from {list(MINIMAL_ATTACKS)}")
        return value

    @field_validator("attack_params")
    @classmethod
    def _known_attack_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [a for a in value if a not in registered_attacks()]
        if unknown:
            raise ValueError(f"parameters for unknown attacks {unknown}; installed: {sorted(registered_attacks())}")
        return value

    def norms(self) -> list[Norm]:
        chosen = [self.norm] if isinstance(self.norm, str) else list(dict.fromkeys(self.norm))
        return [n for n in NORMS if n in chosen]

    def eps_for(self, norm: Norm) -> list[float] | None:
        if isinstance(self.eps, dict):
            return sorted(self.eps[norm]) if norm in self.eps else None
        return sorted(self.eps)


def fmt(eps: float) -> str:
    return f"{eps:g}"


def batch_cell(settings: dict[str, Any]) -> Any:
    """The batch size an attack ran at; after out-of-memory halvings, how it got there."""
    chain = settings.get("out_of_memory_backoff")
    return f"{chain} (out of memory)" if chain else settings.get("batch_size")


@dataclass
class _Outcomes:
    """Per-sample values the section saves (``audit.outcomes``): robust or not per attack, norm and eps, plus
    what the dashboard's sample explorer shows (adversarial prediction and confidence, first attack to fool)."""

    values: dict[str, np.ndarray]
    meta: dict[str, dict[str, Any]]
    extra: dict[str, np.ndarray]

    def add(self, metric: str, per_sample: np.ndarray, **meta: Any) -> None:
        self.values[metric] = np.asarray(per_sample, dtype=np.float64)
        self.meta[metric] = meta

    def add_adversarial(self, ctx: AuditContext, ev: NormEvaluation, eps: float) -> None:
        """The model's probabilities on the worst-case adversarial inputs at (norm, eps): one forward pass, kept
        whole (the explorer's probability table) and as prediction and confidence."""
        from audit.outcomes import EXTRA_ADV_PROBA, adversarial_tag

        tag = adversarial_tag(ev.norm, eps)
        logits = ctx.model.logits(ev.worst_x_adv[eps], batch_size=ctx.batch_size).double()
        proba = logits.softmax(dim=1).numpy()
        finite = np.isfinite(proba).all(axis=1)
        self.extra[f"{EXTRA_ADV_PROBA}{tag}"] = np.where(finite[:, None], proba, np.nan).astype(np.float32)
        self.extra[f"adv_prediction/{tag}"] = np.where(finite, proba.argmax(axis=1), -1)
        self.extra[f"adv_confidence/{tag}"] = np.where(finite, proba.max(axis=1), np.nan)
        self.extra[f"fooled_by/{tag}"] = np.asarray(ev.fooled_by[eps]).astype(str)


class RobustnessSection(SectionPlugin):
    """Adversarial robustness: worst-case robust accuracy over strong attacks, curves, red flags."""

    name = "robustness"
    title = "Adversarial robustness"
    ParamsModel = RobustnessParams
    params: RobustnessParams
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.robust_accuracy": "higher", "*.worst_class_robust_accuracy": "higher", "clean_accuracy": "higher",
        "*.attack_success_rate": "lower", "*.success_rate": "lower",  # a minimal-norm attack's
        "*.median_min_eps": "higher", "*.mean_min_eps": "higher",
        # escalation: the worst case before the adaptive attacks were folded in; how many of them ran
        "escalation.*.robust_accuracy_before": "higher", "escalation.*.attacks": None,
        "reliable": "higher", "red_flags.count": "lower", "red_flags.likely_masked": "lower",
        "nonfinite_outputs.*": "lower",
        # sizes of the successful perturbations, the checks' own values, counts: no better direction
        "*.mean_perturbation": None, "*.max_perturbation": None, "red_flags.*": None, "n_samples": None,
        "n_attacked": None,
    }

    def validate(self, ctx: AuditContext) -> None:
        """Before any section runs: every eps must fit in the input range (a larger one allows every input in
        the box, so the numbers would mean nothing); every attack's parameters (attack_params) must fit it."""
        self._check_attack_params()
        try:
            domain = Domain.from_model_data(ctx.model, ctx.data)
        except AttackNotApplicable:
            return  # run() skips the section and says why
        span = (domain.upper - domain.lower).expand(1, *ctx.data.input_shape)
        if domain.mask is not None:
            span = span * domain.mask
        linf = float(span.max())
        if not math.isfinite(linf):
            return
        limits = {"linf": linf, "l2": float(span.pow(2).sum().sqrt())}
        what = {"linf": "the largest input range (upper - lower)", "l2": "the diameter of the input box"}
        for norm in self.params.norms():
            for e in self.params.eps_for(norm) or []:
                if e > limits[norm] * (1 + 1e-6):
                    raise ConfigError(f"sections.{self.section}.eps",
                                      f"{norm} eps {e:g} exceeds {what[norm]}, {limits[norm]:.4g} (from "
                                      "model.input_bounds or the data's bounds): it allows every input of the box. "
                                      f"Use {norm} eps <= {limits[norm]:.4g}, or check data.scale and "
                                      "model.input_bounds")

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        from audit.data import stratified_subset

        p = self.params
        data = ctx.data
        index = np.arange(data.n_samples)
        if p.max_samples is not None and p.max_samples < data.n_samples:
            index = stratified_subset(data.y, p.max_samples, ctx.seed)
            result.notes.append(f"attacked a stratified subset of {len(index)} of {data.n_samples} samples "
                                "(max_samples)")
        subset = len(index) < data.n_samples
        x, y = (data.x[index] if subset else data.x), data.y[index]
        pred = ctx.clean_predictions()[index]
        clean_correct = pred == y
        try:
            domain = Domain.from_model_data(ctx.model, data)
        except AttackNotApplicable as err:
            result.status = "skipped"
            result.notes.append(str(err))
            return
        result.metric("clean_accuracy", clean_correct.mean())
        result.metric("n_samples", len(y))
        result.metric("n_attacked", int(clean_correct.sum()))
        plans = self._plans(ctx, domain, clean_correct, result)
        # the attacks, in chunks of samples: each chunk's outputs are saved as it finishes
        chunks = plan(len(y), p.chunk_size)
        store = ChunkStore(ctx.artifacts_dir / self.section / CHUNKS_DIR, ctx.fingerprints.get(self.section))
        shared = ChunkInputs(model=ctx.model, x=x, y=y, clean_pred=pred, domain=domain, norms=plans, seed=ctx.seed,
                             section=self.section, batch_size=ctx.batch_size)
        ran = run_chunks(store, chunks, evaluate_chunk, shared, backend=ctx.backend, progress=ctx.progress,
                         desc="chunks", device=str(ctx.device)) if plans else 0
        if ran and getattr(ctx.backend, "name", "local") != "local":
            where = ", ".join(f"{k} {v}" for k, v in ctx.backend.describe().items() if k != "backend" and v)
            result.notes.append(f"{ran} chunk(s) of {p.chunk_size} samples ran as {ctx.backend.name} tasks ({where})")
        if ran < len(chunks) and plans:
            result.notes.append(f"{len(chunks) - ran} of {len(chunks)} chunks kept from the interrupted run "
                                f"(artifacts/{self.section}/{CHUNKS_DIR}/)")
        settings_rows: list[list[Any]] = []
        curve_rows: list[list[Any]] = []
        outcomes = _Outcomes(values={"clean_accuracy": clean_correct}, meta={"clean_accuracy": {"kind": "correct"}},
                             extra={"label": y, "prediction": pred})
        flags: list[RedFlag] = []
        unreliable: list[str] = []
        resolved: set[str] = set()  # likely-masked flags the escalation's adaptive attacks answered
        for norm_plan in plans:
            norm = norm_plan.norm
            ev = reduce_chunks(store, chunks, norm_plan, n=len(y), input_shape=tuple(data.input_shape),
                               x_adv_path=lambda e, norm=norm: ctx.artifact_path(
                                   self.section, f"x_adv_{norm}_eps={fmt(e)}.npy")[0])
            nonfinite = ev.nonfinite if ev.nonfinite is not None else np.zeros(len(y), bool)
            if p.red_flags:
                seed_all(chunk_seed(ctx.seed, self.section, norm, "red_flags"))
                norm_flags, reasons, check_nonfinite = self._red_flags(ctx, ev, x, y, index, norm_plan.keep, domain)
                flags += norm_flags
                unreliable += reasons
                nonfinite = nonfinite | check_nonfinite
                # a likely-masked flag: adaptive attacks join the worst case before it is recorded (attacks/escalate.py)
                esc = escalate(ctx, ev, x, y, domain, norm_flags, norm_plan.keep, params=p.escalation, steps=p.steps,
                               square_queries=p.square_queries, red_flag_params=p.red_flag_params, section=self.section)
                record_escalation(result, esc, ev, section=self.section)
                unreliable += esc.reasons
                resolved |= esc.resolved
            self._record_norm(ctx, result, ev, x, y, index, settings_rows, curve_rows, outcomes)
            unreliable += self._nonfinite_outputs(result, ev, nonfinite)
        result.table("settings", "Attack settings behind every number", ["attack", "library", "norm", "eps", "steps",
                     "step size", "restarts", "random start", "loss", "samples", "queries/sample", "batch size",
                     "seconds"],
                     settings_rows, description="each robust accuracy in this section comes from the row with "
                     "the same attack, norm and eps")
        result.table("robust_accuracy", "Robust accuracy by attack and eps",
                     ["norm", "eps", "attack", "robust accuracy", "attack success rate", "mean perturbation"],
                     curve_rows, description="attack success rate: share of clean-correct samples fooled; worst "
                     "case: correct under every attack at that eps (and every smaller eps)")
        if p.red_flags:
            self._record_flags(result, flags)
            unreliable = [f"red flag {f.code} says likely masked ({f.title.lower()})" for f in flags
                          if f.verdict == "likely masked" and f.code not in resolved] + unreliable
        self._record_reliable(result, unreliable, checked=p.red_flags and bool(flags), escalated=bool(resolved))
        from audit.outcomes import save_outcomes

        save_outcomes(ctx, result, sample_id=index, values=outcomes.values, meta=outcomes.meta, extra=outcomes.extra)

    def _check_attack_params(self) -> None:
        """Build each configured attack once per norm: a wrong ``attack_params`` entry is a ConfigError now, not
        after the other sections ran (a norm an attack lacks is only a note at run time)."""
        p = self.params
        for norm in p.norms():
            for name in dict.fromkeys([*p.attacks, *p.minimal_norm, *p.attack_params]):
                try:
                    self._build(name, norm)
                except AttackNotApplicable:
                    continue  # e.g. a norm the attack lacks: run() notes it
                except AttackError as err:  # settings the attack refuses
                    raise ConfigError(f"sections.{self.section}.attack_params.{name}", str(err)) from err

    def _build(self, name: str, norm: Norm) -> Attack:
        """One configured attack for ``norm``. Expected refusals pass through: AttackNotApplicable (it does not
        apply: a norm it lacks), ConfigError (a wrong attack_params entry), AttackError (settings it refuses).
        Anything else is a bug of the attack plugin: a PluginError that names it (the section's error)."""
        p = self.params
        try:
            return make_attack(name, norm=norm, steps=p.steps, restarts=p.restarts, queries=p.square_queries,
                               minimal_steps=p.minimal_steps, params=p.attack_params.get(name),
                               key=f"sections.{self.section}.attack_params")
        except NNAuditError:
            raise
        except Exception as err:
            raise PluginError(f"attack '{name}' ({registered_attacks().get(name, '?')}) raised "
                              f"{type(err).__name__} while being built for norm {norm}: {err}") from err

    # -- which attacks -------------------------------------------------------------------------
    def _plans(self, ctx: AuditContext, domain: Domain, clean_correct: np.ndarray,
               result: SectionResult) -> list[NormPlan]:
        """Per norm: its eps, attacks, the minimal-norm attacks' samples and the red-flag check samples."""
        p = self.params
        rng = np.random.default_rng(ctx.seed)
        correct_idx = np.flatnonzero(clean_correct)
        minimal_index = np.sort(rng.permutation(len(clean_correct))[: p.minimal_samples])
        plans: list[NormPlan] = []
        for norm in p.norms():
            eps_list = p.eps_for(norm)
            if eps_list is None:
                result.notes.append(f"norm {norm}: no eps list given in eps; skipped")
                continue
            attacks = self._attacks(ctx, norm, domain, result)
            minimal = self._minimal(ctx, norm, domain, result)
            if not attacks and not minimal:
                result.notes.append(f"norm {norm}: no attack applies to this model and data")
                continue
            check_idx = np.zeros(0, np.int64)
            if p.red_flags:
                check_idx = correct_idx[: p.check_samples] if len(correct_idx) <= p.check_samples else \
                    np.sort(rng.choice(correct_idx, p.check_samples, replace=False))
            plans.append(NormPlan(norm=norm, eps=eps_list, attacks=attacks, minimal_attacks=minimal,
                                  minimal_index=minimal_index, keep=check_idx))
        return plans

    def _attacks(self, ctx: AuditContext, norm: Norm, domain: Domain, result: SectionResult) -> list[Attack]:
        p = self.params
        names = list(p.attacks)
        if p.square == "always" or (p.square == "auto" and not ctx.model.has_gradients):
            names.append("square")
        out: list[Attack] = []
        for name in dict.fromkeys(names):
            try:
                attack = self._build(name, norm)
                if attack.needs_gradients and not ctx.model.has_gradients:
                    raise AttackNotApplicable(f"the model ({ctx.model.kind}) has no gradients; remove it from "
                                              f"sections.{self.section}.attacks")
            except AttackNotApplicable as err:
                result.notes.append(f"{name} ({norm}) skipped: {err}")
                continue
            out.append(attack)
        if not ctx.model.has_gradients and "square" not in names:
            result.notes.append("the model has no gradients and square is off: no eps-bounded attack ran")
        return out

    def _minimal(self, ctx: AuditContext, norm: Norm, domain: Domain, result: SectionResult) -> list[Attack]:
        p = self.params
        out: list[Attack] = []
        if p.minimal_samples == 0:
            return out
        for name in p.minimal_norm:
            try:
                attack = self._build(name, norm)
                if attack.needs_gradients and not ctx.model.has_gradients:
                    raise AttackNotApplicable("the model has no gradients")
                if domain.masked and not attack.supports_mask:
                    raise AttackNotApplicable("foolbox cannot keep non-perturbable features fixed; per-sample "
                                              "minimal eps comes from the eps grid instead")
            except AttackNotApplicable as err:  # a norm the attack lacks, no gradients, a feature mask
                result.notes.append(f"{name} ({norm}) skipped: {err}")
                continue
            out.append(attack)
        return out

    # -- recording -----------------------------------------------------------------------------
    def _record_norm(self, ctx: AuditContext, result: SectionResult, ev: NormEvaluation, x: np.ndarray,
                     y: np.ndarray, index: np.ndarray, settings_rows: list[list[Any]],
                     curve_rows: list[list[Any]], outcomes: _Outcomes) -> None:
        from audit.context import AdversarialOutcome

        norm, n_ok = ev.norm, max(int(ev.clean_correct.sum()), 1)
        attacked = int(ev.clean_correct.sum())
        order = list(BOUNDED_ATTACKS)
        names = sorted({a for a, _ in ev.runs}, key=lambda a: (order.index(a) if a in order else len(order), a))
        for e in ev.eps:
            for name in names:
                run = ev.runs[(name, e)]
                key = f"{name}.{norm}.eps={fmt(e)}"
                success_rate = run.success.sum() / n_ok
                mean_size = float(run.perturbation[run.success].mean()) if run.success.any() else math.nan
                result.metric(f"{key}.robust_accuracy", ev.robust_accuracy(name, e))
                outcomes.add(f"{key}.robust_accuracy", ev.clean_correct & run.robust, kind="robust", norm=norm,
                             eps=e, attack=name)
                result.metric(f"{key}.attack_success_rate", success_rate)
                curve_rows.append([norm, e, name, ev.robust_accuracy(name, e), float(success_rate), mean_size])
                s = run.settings
                settings_rows.append([name, s.get("library"), norm, e, s.get("steps"), s.get("step_size"),
                                      s.get("restarts"), s.get("random_start"), s.get("loss"), attacked,
                                      run.queries or None, batch_cell(s), round(run.seconds, 3)])
            robust = ev.worst_robust[e]
            fooled = ev.clean_correct & ~robust
            size = ev.worst_size[e]
            mean_size = float(size[fooled].mean()) if fooled.any() else math.nan
            key = f"worst_case.{norm}.eps={fmt(e)}"
            result.metric(f"{key}.robust_accuracy", robust.mean())
            outcomes.add(f"{key}.robust_accuracy", robust, kind="robust", norm=norm, eps=e, attack="worst_case")
            outcomes.add_adversarial(ctx, ev, e)
            result.metric(f"{key}.attack_success_rate", fooled.sum() / n_ok)
            result.metric(f"{key}.mean_perturbation", mean_size)
            result.metric(f"{key}.max_perturbation", size[fooled].max() if fooled.any() else 0.0)
            per_class = per_class_accuracy(y, robust, ctx.data.num_classes)
            result.metric(f"{key}.worst_class_robust_accuracy", np.nanmin(per_class))
            curve_rows.append([norm, e, "worst case", float(robust.mean()), float(fooled.sum() / n_ok), mean_size])
            outcome_attack = "worst of " + ", ".join(names + list(ev.minimal)) + f" ({self.params.steps} steps, " \
                f"{self.params.restarts} restart(s))"
            subset = None if len(index) == ctx.data.n_samples else index
            result.artifacts[f"x_adv_{norm}_eps={fmt(e)}"] = ctx.artifact_path(self.section,
                                                                              f"x_adv_{norm}_eps={fmt(e)}.npy")[1]
            ctx.adversarial[f"{norm}:{e}"] = AdversarialOutcome(
                norm=norm, eps=e, attack=outcome_attack, x_adv=copy_on_write(ev.worst_x_adv[e]),
                clean_correct=ev.clean_correct,
                robust_correct=robust, min_eps=ev.min_eps, index=subset)
        if ev.min_eps is not None:
            outcomes.extra[f"min_eps/{norm}"] = ev.min_eps
        self._per_class(ctx, result, ev, y)
        self._minimal_record(result, ev, settings_rows, curve_rows)
        self._curve(result, ev, names)
        middle = self._middle_eps(ev)
        if ctx.data.modality == "image":
            self._gallery(ctx, result, ev, x, y, index, middle)
        else:
            self._features(ctx, result, ev, x, middle)

    def _per_class(self, ctx: AuditContext, result: SectionResult, ev: NormEvaluation, y: np.ndarray) -> None:
        k, names = ctx.data.num_classes, ctx.data.class_names
        clean = per_class_accuracy(y, ev.clean_correct, k)
        cols = {e: per_class_accuracy(y, ev.worst_robust[e], k) for e in ev.eps}
        counts = np.bincount(y, minlength=k)
        rows = []
        for c in range(k):
            ok = int((ev.clean_correct & (y == c)).sum())
            rates = [float(((~ev.worst_robust[e]) & ev.clean_correct & (y == c)).sum() / ok) if ok else None
                     for e in ev.eps]
            rows.append([names[c], int(counts[c]), float(clean[c]), *[float(cols[e][c]) for e in ev.eps], *rates])
        result.table(f"per_class_{ev.norm}", f"Per-class robust accuracy ({ev.norm}, worst case)",
                     ["class", "samples", "clean accuracy", *[f"robust eps={fmt(e)}" for e in ev.eps],
                      *[f"success rate eps={fmt(e)}" for e in ev.eps]], rows)

    def _minimal_record(self, result: SectionResult, ev: NormEvaluation, settings_rows: list[list[Any]],
                        curve_rows: list[list[Any]]) -> None:
        for name, (idx, out) in ev.minimal.items():
            norms = np.where(out.success, out.perturbation, np.inf)
            ok = ev.clean_correct[idx]
            found = norms[ok & out.success]
            result.metric(f"{name}.{ev.norm}.median_min_eps", float(np.median(norms[ok])) if ok.any() else math.nan)
            result.metric(f"{name}.{ev.norm}.success_rate", float(out.success[ok].mean()) if ok.any() else math.nan)
            result.metric(f"{name}.{ev.norm}.mean_min_eps", float(found.mean()) if len(found) else math.nan)
            s = out.settings
            settings_rows.append([name, s.get("library"), ev.norm, "minimal", s.get("steps"), s.get("step_size"),
                                  s.get("restarts"), s.get("random_start"), s.get("loss"), len(idx),
                                  out.queries or None, batch_cell(s), round(out.seconds, 3)])
            for e, acc in zip(ev.eps, ev.minimal_curve(name, ev.eps), strict=True):
                curve_rows.append([ev.norm, e, f"{name} (minimal norm, {len(idx)} samples)", acc, None, None])
        if ev.min_eps is not None:
            ok = ev.clean_correct
            result.metric(f"worst_case.{ev.norm}.median_min_eps",
                          float(np.median(ev.min_eps[ok])) if ok.any() else math.nan)

    def _curve(self, result: SectionResult, ev: NormEvaluation, names: list[str]) -> None:
        xs = [0.0, *ev.eps]
        clean = float(ev.clean_correct.mean())
        series = [{"label": name, "x": xs, "y": [clean, *[ev.robust_accuracy(name, e) for e in ev.eps]],
                   "style": "dashed"} for name in names]
        series.append({"label": "worst case", "x": xs, "y": [clean, *[ev.worst_accuracy(e) for e in ev.eps]]})
        for name, (idx, _) in ev.minimal.items():
            grid = list(np.linspace(0.0, max(ev.eps) * 1.5, 31))
            series.append({"label": f"{name} (minimal norm, {len(idx)} samples)", "x": [float(g) for g in grid],
                           "y": ev.minimal_curve(name, grid), "style": "dotted"})
        result.figure({"name": f"robustness_curve_{ev.norm}", "title": f"Robust accuracy vs eps ({ev.norm})",
                       "kind": "line", "series": series, "xlabel": f"eps ({ev.norm})", "ylabel": "robust accuracy",
                       "ylim": [0.0, 1.0]})

    @staticmethod
    def _middle_eps(ev: NormEvaluation) -> float:
        """The eps whose worst-case accuracy is nearest half the clean accuracy (most informative)."""
        clean = float(ev.clean_correct.mean())
        return min(ev.eps, key=lambda e: abs(ev.worst_accuracy(e) - clean / 2))

    def _gallery(self, ctx: AuditContext, result: SectionResult, ev: NormEvaluation, x: np.ndarray,
                 y: np.ndarray, index: np.ndarray, eps: float) -> None:
        if self.params.gallery_size == 0:
            return
        fooled = ev.clean_correct & ~ev.worst_robust[eps]
        if ev.nonfinite is not None:
            fooled &= ~ev.nonfinite  # no confidences to show for NaN outputs
        fooled = np.flatnonzero(fooled)
        if len(fooled) == 0:
            return
        picked: list[int] = []
        for c in range(ctx.data.num_classes):  # one per class first, then fill
            picked += [int(i) for i in fooled[y[fooled] == c][:1]]
        picked += [int(i) for i in fooled if int(i) not in picked]
        picked = sorted(picked[: self.params.gallery_size])
        x_adv = ev.worst_x_adv[eps][picked]
        lo, hi = ctx.model.bounds if ctx.model.bounds is not None else (float(x.min()), float(x.max()))
        path, rel = ctx.artifact_path(self.section, f"gallery_{ev.norm}.npz")
        clean_logits = ctx.clean_logits()[index[picked]].numpy()  # computed once for every section
        result.artifacts[f"gallery_{ev.norm}"] = rel
        result.figure(gallery_figure(path, rel, x=x[picked], x_adv=x_adv, y=y[picked], clean_logits=clean_logits,
                                     adv_logits=ctx.model.logits(x_adv).numpy(), class_names=ctx.data.class_names,
                                     title=f"Adversarial examples ({ev.norm}, eps={fmt(eps)})",
                                     name=f"gallery_{ev.norm}", bounds=(float(lo), float(hi))))

    def _features(self, ctx: AuditContext, result: SectionResult, ev: NormEvaluation, x: np.ndarray,
                  eps: float) -> None:
        names = ctx.data.feature_names or [f"x{i}" for i in range(int(np.prod(ctx.data.input_shape)))]
        fooled = ev.clean_correct & ~ev.worst_robust[eps]
        rows = feature_summary(x, ev.worst_x_adv[eps], fooled, names)
        if ctx.data.perturbable is not None:
            allowed = {n for n, m in zip(names, np.asarray(ctx.data.perturbable).reshape(-1), strict=True) if m}
            rows = [r for r in rows if r[0] in allowed]
        result.table(f"feature_perturbation_{ev.norm}", f"Per-feature perturbation ({ev.norm}, eps={fmt(eps)})",
                     ["feature", "mean |delta|", "max |delta|", "share changed"], rows,
                     description=f"over the {int(fooled.sum())} successful adversarial examples; only perturbable "
                     "features")
        top = rows[:20]
        result.figure({"name": f"feature_perturbation_{ev.norm}", "kind": "bar",
                       "title": f"Mean |perturbation| per feature ({ev.norm}, eps={fmt(eps)})",
                       "series": [{"label": "mean |delta|", "x": [r[0] for r in top], "y": [r[1] for r in top]}],
                       "xlabel": "feature", "ylabel": "mean |delta| (raw units)"})

    # -- red flags -----------------------------------------------------------------------------
    def _red_flags(self, ctx: AuditContext, ev: NormEvaluation, x: np.ndarray, y: np.ndarray, index: np.ndarray,
                   check_idx: np.ndarray, domain: Domain) -> tuple[list[RedFlag], list[str], np.ndarray]:
        """The checks for one norm, each reusing what the headline attacks found (attacks/redflags.py).
        Returns the flags, reasons the numbers cannot be trusted beyond a flag's verdict, and the rows where a
        check's own attack met non-finite outputs."""
        p, model, bs = self.params, ctx.model, ctx.batch_size
        fp = p.red_flag_params
        eps = self._middle_eps(ev)
        attack_rows = np.sort(np.random.default_rng(ctx.seed).permutation(check_idx)[: fp.attack_samples])
        d = CheckData(model=model, ev=ev, x=x, y=y, rows=check_idx, attack_rows=attack_rows, domain=domain, eps=eps,
                      steps=p.steps, batch_size=bs, params=fp, progress=ctx.progress)
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
            ("randomized_outputs", lambda: check_randomized(model, x[rows8], ctx.clean_logits()[index[rows8]], bs,
                                                            fp)),
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
                checks.append(("single_step_stronger", lambda: self._single_step(d)))
        elif len(check_idx):
            for code in ("zero_gradients", "nonfinite_gradients", "unbounded_attack", "no_convergence",
                         "restart_gain", "single_step_stronger"):
                checks.append((code, lambda code=code: not_applicable(code, "the model has no gradients")))  # type: ignore[misc]
        if len(check_idx):
            def saturated() -> np.ndarray | None:  # on the attack rows
                return grads().saturated[np.searchsorted(check_idx, attack_rows)] if model.has_gradients else None

            checks.append(("blackbox_stronger", lambda: self._blackbox(d, saturated(), ce_only)))
        flags: list[RedFlag] = []
        for _, check in ctx.progress(checks, desc=f"red flags ({ev.norm})", total=len(checks)):
            start = time.perf_counter()
            flag = check()
            flag.seconds = time.perf_counter() - start
            flags.append(self._norm_tag(flag, ev.norm))
        reasons: list[str] = []
        if cache and ce_only:
            share = float(cache[0].saturated.mean())
            if share > fp.zero_gradients_suspicious:
                reasons.append(f"{share:.0%} of the {ev.norm} check samples saturate cross-entropy (exactly zero "
                               "gradient) and every white-box attack of the headline uses cross-entropy: add apgd_dlr")
        return flags, reasons, d.nonfinite

    def _single_step(self, d: CheckData) -> RedFlag:
        ev, rows = d.ev, d.rows
        iterative = [a for a in ev.attacks if ev.white_box(a) and a != "fgsm"]
        if not iterative:
            return not_applicable("single_step_stronger", "no iterative white-box attack in the headline")
        robust = ~ev.fooled_under(d.eps, iterative)[rows]
        reuse = ev.runs[("fgsm", d.eps)].success[rows] if ("fgsm", d.eps) in ev.runs else None
        return check_single_step(d.model, d.x[rows], d.y[rows], robust, d.domain, eps=d.eps,
                                 batch_size=d.batch_size, params=d.params, fgsm_success=reuse, progress=d.progress)

    def _blackbox(self, d: CheckData, saturated: np.ndarray | None, ce_only: bool) -> RedFlag:
        ev, rows = d.ev, d.attack_rows
        white = [a for a in ev.attacks if ev.white_box(a)]
        if not white:
            return not_applicable("blackbox_stronger", "no white-box attack ran to compare with")
        robust = ~ev.fooled_under(d.eps, white)[rows]
        reuse = ev.runs[("square", d.eps)].success[rows] if ("square", d.eps) in ev.runs else None
        return check_blackbox(d.model, d.x[rows], d.y[rows], robust, d.domain, eps=d.eps, norm=ev.norm,
                              queries=self.params.check_queries, batch_size=d.batch_size, params=d.params,
                              square_success=reuse, saturated=saturated, ce_only=ce_only, progress=d.progress)

    @staticmethod
    def _norm_tag(flag: RedFlag, norm: Norm) -> RedFlag:
        flag.code = f"{flag.code}.{norm}"
        return flag

    def _record_flags(self, result: SectionResult, flags: list[RedFlag]) -> None:
        raised = [f for f in flags if f.raised]
        result.metric("red_flags.count", len(raised))
        result.metric("red_flags.likely_masked", sum(f.verdict == "likely masked" for f in flags))
        result.metric("red_flags.checks", sum(f.verdict != "n/a" for f in flags))
        for f in flags:
            if f.value is not None:
                result.metric(f"red_flags.{f.code}", f.value)
        result.table("red_flags", "Gradient-masking red flags",
                     ["check", "norm", "verdict", "value", "reason", "seconds"],
                     [[f.title, f.code.rsplit(".", 1)[-1], f.verdict, f.value, f.reason, round(f.seconds, 3)]
                      for f in flags],
                     description="ok / suspicious / likely masked; a raised flag means the robust accuracy above "
                     "may overstate robustness. Thresholds: red_flag_params (docs/robustness.md)")
        for f in raised:
            severity: Severity = "high" if f.verdict == "likely masked" else "medium"
            result.finding(severity, f"{f.title} ({f.verdict}): {f.reason}",
                           code=f"robustness.red_flag.{f.code}", metric=f"{self.section}.red_flags.{f.code}",
                           value=f.value)

    # -- trust -----------------------------------------------------------------------------------
    def _nonfinite_outputs(self, result: SectionResult, ev: NormEvaluation, rows: np.ndarray) -> list[str]:
        """Samples whose model outputs were NaN/inf somewhere under attack: counted as not robust."""
        count = int(rows.sum())
        result.metric(f"nonfinite_outputs.{ev.norm}", count)
        if count == 0:
            return []
        message = (f"{count} of {len(rows)} samples made the model return NaN or infinite scores under {ev.norm} "
                   "attack (perturbed inputs inside the threat model): each counts as not robust, and the model's "
                   "predictions there cannot be trusted; check its numerics on inputs near the data")
        result.finding("high", message, code=f"robustness.nonfinite_outputs.{ev.norm}",
                       metric=f"{self.section}.nonfinite_outputs.{ev.norm}", value=count)
        return [message]

    def _record_reliable(self, result: SectionResult, reasons: list[str], *, checked: bool,
                         escalated: bool = False) -> None:
        """``reliable``: 1 when the checks ran and nothing says the numbers overstate robustness, 0 with the
        reasons otherwise; absent (with a note) when nothing was checked."""
        key = f"{self.section}.reliable"
        if reasons:
            result.metric("reliable", 0)
            result.finding("high", "robustness numbers not reliable: " + "; ".join(reasons),
                           code="robustness.reliable", metric=key, value=0.0)
        elif checked:
            result.metric("reliable", 1)
            why = ("red flags said likely masked, and the worst case now includes adaptive attacks that pass the "
                   "masking sanity checks (see the escalation)") if escalated else "no red flag says likely masked"
            result.finding("info", f"robustness numbers reliable: {why}, and every model output under attack was "
                           "finite", code="robustness.reliable", metric=key, value=1.0)
        else:
            result.notes.append("robustness.reliable not recorded: red_flags is off, so nothing checked the numbers "
                                "for gradient masking")
