"""The ``robustness`` section: robust accuracy under the strongest attacks, curves, minimal eps, gradient-masking
red flags, a gallery; regression/multi-label: ``attacks/tasks.py``; text: ``attacks/text/``. It orchestrates (which
attacks, in chunks; which checks) and records: attacks run in ``attacks/chunks.py`` (``NormEvaluation`` per norm),
red flags in ``attacks/redflags/``, escalation in ``attacks/escalate.py``; ``attacks/records.py`` records."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from attacks.base import NORMS, Attack, AttackError, AttackNotApplicable, Domain, Norm
from attacks.blackbox import BlackBoxParams, black_box, budget_note
from attacks.blackbox import record as record_black_box
from attacks.chunks import ChunkInputs, NormPlan, evaluate_chunk, reduce_chunks
from attacks.escalate import EscalationParams, escalate
from attacks.escalate import record as record_escalation
from attacks.evaluate import BOUNDED_ATTACKS, MINIMAL_ATTACKS, attack_class, make_attack, registered_attacks
from attacks.precision import precision_check
from attacks.records import RobustnessRecord, fmt
from attacks.redflags import RedFlag, RedFlagParams, run_red_flags
from attacks.tasks import DIRECTIONS as TASK_DIRECTIONS
from attacks.tasks import run_task_robustness
from attacks.text.run import TextParams, check_text_config, run_text
from audit.data import stratified_subset
from audit.engine.chunks import CHUNKS_DIR, DEFAULT_CHUNK_SIZE, ChunkStore, chunk_seed, plan, run_chunks, seed_all
from audit.errors import ConfigError, NNAuditError, PluginError
from audit.model.onnx_convert import model_notes
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult

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
    square_queries: int | None = Field(None, ge=1, description="queries per sample of the square attack; default "
                                       "5,000 (AutoAttack's) for a model without gradients, else 1,000")
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
    black_box: BlackBoxParams = Field(
        default_factory=BlackBoxParams, description="models without gradients: per-query success curves, the "
        "transfer attack from a surrogate, when the headline counts as converged (attacks/blackbox.py)")
    escalation: EscalationParams = Field(
        default_factory=EscalationParams, description="adaptive attacks (Square, BPDA, transfer, EOT) run when a red "
        "flag says likely masked, folded into the worst case (docs/defenses.md)")
    attack_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-attack constructor parameters, e.g. {pgd: {rel_step_size: 0.1}}; they "
        "override steps / restarts / square_queries for that attack (built-in and third-party attacks alike)")
    text: TextParams = Field(default_factory=TextParams, description="text data: attacks/text/run.py")

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

    def queries(self, gradients: bool) -> int:
        """Square's budget: ``square_queries``, else AutoAttack's 5,000 without gradients, 1,000 beside them."""
        return self.square_queries if self.square_queries is not None else (1000 if gradients else 5000)

    def norms(self) -> list[Norm]:
        chosen = [self.norm] if isinstance(self.norm, str) else list(dict.fromkeys(self.norm))
        return [n for n in NORMS if n in chosen]

    def eps_for(self, norm: Norm) -> list[float] | None:
        if isinstance(self.eps, dict):
            return sorted(self.eps[norm]) if norm in self.eps else None
        return sorted(self.eps)


class RobustnessSection(SectionPlugin):
    """Adversarial robustness: worst-case robust accuracy over strong attacks, curves, red flags."""

    name = "robustness"
    title = "Adversarial robustness"
    ParamsModel = RobustnessParams
    params: RobustnessParams
    input_kinds: ClassVar[tuple[str, ...]] = ("continuous", "tokens")
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")  # attacks/tasks.py
    metric_directions: ClassVar[dict[str, Direction]] = {
        "*.robust_accuracy": "higher", "*.worst_class_robust_accuracy": "higher", "clean_accuracy": "higher",
        "*.attack_success_rate": "lower", "*.success_rate": "lower",  # a minimal-norm attack's
        "*.median_min_eps": "higher", "*.mean_min_eps": "higher",
        # escalation: the worst case before the adaptive attacks were folded in; how many of them ran
        "escalation.*.robust_accuracy_before": "higher", "escalation.*.attacks": None,
        "reliable": "higher", "black_box_only": None, "query_curve.*": None, "transfer.*": None,
        "red_flags.count": "lower", "red_flags.likely_masked": "lower",
        "nonfinite_outputs.*": "lower", "*.mean_words_changed": None, "*.queries_per_sample": None,  # text attacks
        # sizes of the successful perturbations, the checks' own values, counts: no better direction
        "*.mean_perturbation": None, "*.max_perturbation": None, "red_flags.*": None, "n_samples": None,
        "n_attacked": None, **TASK_DIRECTIONS}

    def validate(self, ctx: AuditContext) -> None:
        """Before any section runs: eps within the input range, valid attack_params; text: attacks/text/run.py."""
        if ctx.data.input_kind == "tokens":
            return check_text_config(self.params, self.section)
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

    def check_precision(self, ctx: AuditContext, precision: str, *, configured: bool = True) -> dict[str, Any] | None:
        """The mixed-precision check (``attacks.precision``); not configured: L-inf PGD at 1/32 of the range."""
        return precision_check(ctx, precision, self.params if configured else None)

    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        if ctx.data.task != "classification":
            return run_task_robustness(ctx, result, self.params, self.section)
        p = self.params
        data = ctx.data
        if data.input_kind == "tokens":
            return run_text(ctx, result, p.text, section=self.section, max_samples=p.max_samples)
        index = np.arange(data.n_samples)
        if p.max_samples is not None and p.max_samples < data.n_samples:
            index = stratified_subset(data.y, p.max_samples, ctx.seed)
            result.notes.append(f"attacked a stratified subset of {len(index)} of {data.n_samples} samples "
                                "(max_samples)")
        x, y = (data.x[index] if len(index) < data.n_samples else data.x), data.y[index]
        pred = ctx.clean_predictions()[index]
        clean_correct = pred == y
        try:
            domain = Domain.from_model_data(ctx.model, data)
        except AttackNotApplicable as err:
            result.status = "skipped"
            result.notes.append(str(err))
            return
        result.notes += model_notes(ctx.model)  # an ONNX model: converted graph or black box, and why
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
        record = RobustnessRecord(ctx, result, self.section, x=x, y=y, index=index, pred=pred, steps=p.steps,
                                  restarts=p.restarts, gallery_size=p.gallery_size)
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
                checked = run_red_flags(ctx, ev, x, y, index, norm_plan.keep, domain, steps=p.steps,
                                        check_queries=p.check_queries, params=p.red_flag_params)
                flags += checked.flags
                unreliable += checked.reasons
                nonfinite = nonfinite | checked.nonfinite
                # a likely-masked flag: adaptive attacks join the worst case before it is recorded (attacks/escalate.py)
                esc = escalate(ctx, ev, x, y, domain, checked.flags, norm_plan.keep, params=p.escalation,
                               steps=p.steps, square_queries=p.queries(ctx.model.has_gradients),
                               red_flag_params=p.red_flag_params, section=self.section)
                record_escalation(result, esc, ev, section=self.section)
                unreliable += esc.reasons
                resolved |= esc.resolved
            bb = black_box(ctx, ev, x, y, domain, params=p.black_box, escalation=p.escalation, steps=p.steps,
                           section=self.section)
            unreliable += record_black_box(result, bb, section=self.section)
            record.norm(ev)
            unreliable += record.nonfinite(ev, nonfinite)
        record.tables()
        if not ctx.model.has_gradients:
            result.metric("black_box_only", 1)  # the headline card says "upper bound"
        if p.red_flags:
            record.flags(flags)
            unreliable = [f"red flag {f.code} says likely masked ({f.title.lower()})" for f in flags
                          if f.verdict == "likely masked" and f.code not in resolved] + unreliable
        record.reliable(unreliable, checked=p.red_flags and bool(flags), escalated=bool(resolved))
        record.save_outcomes()

    def _check_attack_params(self) -> None:
        """Build each attack per norm: a wrong ``attack_params`` entry is a ConfigError now (a plugin's bug: run())."""
        p = self.params
        for norm in p.norms():
            for name in dict.fromkeys([*p.attacks, *p.minimal_norm, *p.attack_params]):
                try:
                    self._build(name, norm)
                except (AttackNotApplicable, PluginError):
                    continue
                except AttackError as err:  # settings the attack refuses
                    raise ConfigError(f"sections.{self.section}.attack_params.{name}", str(err)) from err

    def _build(self, name: str, norm: Norm, gradients: bool = True) -> Attack:
        """One configured attack for ``norm``. AttackNotApplicable, ConfigError and AttackError pass through;
        anything else is a bug of the attack plugin: a PluginError that names it (the section's error)."""
        p = self.params
        try:
            return make_attack(name, norm=norm, steps=p.steps, restarts=p.restarts, queries=p.queries(gradients),
                               minimal_steps=p.minimal_steps, params=p.attack_params.get(name),
                               key=f"sections.{self.section}.attack_params")
        except NNAuditError:
            raise
        except Exception as err:
            raise PluginError(f"attack '{name}' ({registered_attacks().get(name, '?')}) raised "
                              f"{type(err).__name__} while being built for norm {norm}: {err}") from err

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
                attack = self._build(name, norm, ctx.model.has_gradients)
                if attack.needs_gradients and not ctx.model.has_gradients:
                    raise AttackNotApplicable(f"the model ({ctx.model.kind}) has no gradients; remove it from "
                                              f"sections.{self.section}.attacks")
            except AttackNotApplicable as err:
                result.notes.append(f"{name} ({norm}) skipped: {err}")
                continue
            out.append(attack)
        if "square" in names and p.square_queries is None:
            result.notes.append(budget_note(p.queries(ctx.model.has_gradients), ctx.model.has_gradients,
                                            f"sections.{self.section}.square_queries"))
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
