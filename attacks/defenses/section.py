"""The ``defenses`` section: each inference-time defense evaluated the naive way and the adaptive way, side by side.

It runs after ``robustness`` and reuses its per-sample worst case (``ctx.adversarial``): the same samples, the same
threat models, and its adversarial inputs replayed on the defended model (transfer from the undefended model); the
undefended model is never attacked again. Per defense and (norm, eps):

- clean accuracy and its cost against the undefended model;
- naive robust accuracy: APGD-CE and APGD-DLR through the defended model's own gradients (what a defense's author
  who ran a standard attack would report);
- adaptive robust accuracy: the per-sample worst case of the naive attacks, BPDA (deterministic defenses) or EOT
  (randomized ones, with BPDA inside when not differentiable), and the transfer from the undefended model;
- a verdict: ``broken`` when the adaptive number is within ``broken_margin`` of the undefended model's, ``holds``
  when it is within ``holds_margin`` of the naive one, ``partial`` otherwise.

A randomized defense predicts by majority over ``eval_draws`` draws, everywhere (clean, naive, adaptive), so a
worst case over several attacks does not count the defense's own noise as the attacker's success.

The feature-squeezing detector is evaluated on the robustness section's adversarial inputs and against an adaptive
attack on classifier and detector together (attacks/defenses/detection.py). The section builds the defenses and
records; the evaluation itself is attacks/defenses/evaluate.py (``Evaluated``) and detection.py
(``DetectorEvaluation``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from attacks.base import AttackNotApplicable, Domain, Norm
from attacks.defenses.base import DEFENSES_GROUP, Defense
from attacks.defenses.detection import evaluate_detector
from attacks.defenses.evaluate import VERDICT_CODES, DefenseEvaluator, Evaluated, verdict
from audit.errors import ConfigError
from audit.keys import metric_key
from audit.model.onnx_convert import model_notes
from audit.plugin import Params, SectionPlugin
from audit.results import Direction, SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AdversarialOutcome, AuditContext


def registered_defenses() -> dict[str, str]:
    from audit.plugin import available

    return available(DEFENSES_GROUP)


class DefensesParams(Params):
    defenses: list[str] | None = Field(
        default=None, description="defenses to evaluate (nnaudit plugins lists them); default: every registered "
        "transform defense that applies to the data")
    defense_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-defense parameters, e.g. {bit_depth: {bits: 3}, jpeg: {quality: 75}}")
    eps: list[float] | None = Field(default=None, description="evaluate at these eps of the robustness section "
                                    "(default: all of them)")
    max_samples: int = Field(default=200, ge=1, description="of the robustness section's samples, evaluate at most "
                             "this many")
    steps: int = Field(default=50, ge=2, le=10_000, description="iterations of each APGD run (naive and adaptive)")
    eot_samples: int = Field(default=8, ge=1, le=1000, description="draws averaged per gradient (EOT)")
    eval_draws: int = Field(default=5, ge=1, le=101, description="draws a randomized defense votes over per "
                            "prediction (odd: no ties between two classes)")
    holds_margin: float = Field(default=0.05, ge=0, le=1, description="verdict holds: adaptive robust accuracy "
                                "within this of the naive one")
    broken_margin: float = Field(default=0.02, ge=0, le=1, description="verdict broken: adaptive robust accuracy "
                                 "within this of the undefended model's")
    detection: bool = Field(default=True, description="evaluate the feature-squeezing detector")
    detection_fpr: float = Field(default=0.05, gt=0, lt=1, description="false-positive rate on clean data that sets "
                                 "the detector's threshold")
    detection_squeezers: list[str] = Field(default_factory=lambda: ["bit_depth", "median"],
                                           description="squeezers of the detector (defenses of this section)")

    @field_validator("defenses", "detection_squeezers")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = [d for d in value if d not in registered_defenses()]
        if unknown:
            raise ValueError(f"unknown defenses {unknown}; installed: {sorted(registered_defenses())} (nnaudit "
                             "plugins lists them)")
        return list(dict.fromkeys(value))

    @field_validator("defense_params")
    @classmethod
    def _known_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [d for d in value if d not in registered_defenses()]
        if unknown:
            raise ValueError(f"parameters for unknown defenses {unknown}; installed: {sorted(registered_defenses())}")
        return value


class DefensesSection(SectionPlugin):
    """Inference-time defenses (feature squeezing, JPEG, noise) and a detector, each attacked naively and adaptively."""

    name = "defenses"
    title = "Defenses: naive vs adaptive evaluation"
    ParamsModel = DefensesParams
    params: DefensesParams
    reads_sections: ClassVar[tuple[str, ...]] = ("robustness",)
    metric_directions: ClassVar[dict[str, Direction]] = {
        # what a naive evaluation reports: a rise is no sign of robustness (the adaptive number is)
        "*.naive_robust_accuracy": None,
        "*robust_accuracy": "higher",  # adaptive, bpda, eot, transfer, undefended; smoothing's empirical
        "*.clean_accuracy": "higher", "*.clean_accuracy_cost": "lower",
        "*verdict": "higher",  # 0 broken, 1 partial, 2 holds
        # the feature-squeezing detector
        "*roc_auc": "higher", "*tpr_at_5pct_fpr": "higher", "*.adaptive_evasion_rate": "lower",
        "*.clean_false_positive_rate": "lower", "*.threshold": None,
        # randomized smoothing
        "*.certified_accuracy": "higher", "*.abstain_rate": "lower", "*.certificate_violations": "lower",
        "*.sigma": None,
    }

    # -- building the defenses -------------------------------------------------------------------
    def _build(self, ctx: AuditContext, name: str, *, key: str) -> Defense:
        from audit.plugin import construct, plugin_class

        cls = plugin_class(name, DEFENSES_GROUP, Defense, key=key)
        params_key = f"sections.{self.section}.defense_params.{name}"
        defense: Defense = construct(cls, name, key=params_key, defaults={},
                                     params=self.params.defense_params.get(name, {}))
        defense.config_key = params_key
        lower, upper = self._bounds(ctx)
        defense.prepare(ctx.data, lower=lower, upper=upper, key=key)
        return defense

    @staticmethod
    def _bounds(ctx: AuditContext) -> tuple[float, float]:
        try:
            return Domain.from_model_data(ctx.model, ctx.data).scalar_bounds
        except AttackNotApplicable:
            return -math.inf, math.inf

    def validate(self, ctx: AuditContext) -> None:
        """Named defenses must apply to this data and model, before any section runs."""
        key = f"sections.{self.section}.defenses"
        for name in self.params.defenses or []:
            defense = self._build(ctx, name, key=key)
            defense.check_model(ctx.model)
            if defense.randomized and not ctx.model.has_gradients:
                raise ConfigError(key, f"defense '{name}' is randomized, so its adaptive evaluation is EOT, which "
                                  f"needs input gradients; the model ({ctx.model.kind}) has none. Remove '{name}' or "
                                  "audit a torch model")

    def _defenses(self, ctx: AuditContext, result: SectionResult) -> list[Defense]:
        key = f"sections.{self.section}.defenses"
        if self.params.defenses is not None:
            return [self._build(ctx, name, key=key) for name in self.params.defenses]
        out: list[Defense] = []
        for name in registered_defenses():
            try:
                defense = self._build(ctx, name, key=key)
            except ConfigError as err:
                result.notes.append(f"{name}: not evaluated: {err.message}")
                continue
            if defense.evaluation != "transform":
                continue  # evaluated only when named (e.g. certification)
            if defense.randomized and not ctx.model.has_gradients:
                result.notes.append(f"{name}: not evaluated: EOT needs input gradients and the model has none")
                continue
            out.append(defense)
        return out

    # -- run -------------------------------------------------------------------------------------
    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        p = self.params
        result.notes += model_notes(ctx.model)  # an ONNX model: the adaptive attacks' gradients come from its graph
        keys = [k for k, o in sorted(ctx.adversarial.items(), key=lambda kv: (kv[1].norm, kv[1].eps))
                if p.eps is None or any(math.isclose(o.eps, e, rel_tol=1e-9) for e in p.eps)]
        if not keys and self._custom_only(ctx, result):
            return
        if not keys:
            result.status = "skipped"
            result.notes.append("no adversarial examples: put the robustness section before defenses (same eps)")
            return
        defenses = self._defenses(ctx, result)
        custom = [d for d in defenses if d.evaluation != "transform"]
        defenses = [d for d in defenses if d.evaluation == "transform"]
        if not defenses and not custom and not p.detection:
            result.status = "skipped"
            result.notes.append("no defense applies to this model and data")
            return
        domain = Domain.from_model_data(ctx.model, ctx.data)
        rows = self._data_rows(ctx, ctx.adversarial[keys[0]], self._rows(ctx, ctx.adversarial[keys[0]]))
        summary_rows: list[list[Any]] = []
        for i, defense in enumerate(ctx.progress(defenses, desc="defenses", total=len(defenses))):
            torch.manual_seed(ctx.seed + i)
            self._defense(ctx, result, defense, keys, domain, summary_rows)
        for defense in custom:  # e.g. randomized smoothing: its own evaluation
            defense.evaluate(ctx, result, rows)
        if summary_rows:
            result.table("summary", "Defenses at a glance", ["defense", "clean accuracy", "clean accuracy cost",
                         "verdict", "weakest point"], summary_rows,
                         description="verdict: broken = adaptive robust accuracy within broken_margin of the "
                         "undefended model's; holds = within holds_margin of the naive one; partial otherwise")
        if p.detection:
            self._detection(ctx, result, keys, domain)

    def _custom_only(self, ctx: AuditContext, result: SectionResult) -> bool:
        """Without the robustness section's adversarial examples, the named custom defenses (certification needs
        none) still run, on at most ``max_samples`` rows of the data; False when there are none."""
        key = f"sections.{self.section}.defenses"
        custom = [d for d in (self._build(ctx, name, key=key) for name in self.params.defenses or [])
                  if d.evaluation != "transform"]
        if not custom:
            return False
        n = ctx.data.n_samples
        rows = np.arange(n) if n <= self.params.max_samples else \
            np.sort(np.random.default_rng(ctx.seed).permutation(n)[: self.params.max_samples])
        result.notes.append("no adversarial examples from the robustness section: only "
                            f"{', '.join(d.name for d in custom)} evaluated (put robustness before defenses for "
                            "the others)")
        for defense in custom:
            defense.evaluate(ctx, result, rows)
        return True

    def _rows(self, ctx: AuditContext, outcome: AdversarialOutcome) -> np.ndarray:
        """Positions in the outcome's arrays to evaluate (the same for every eps: the outcomes share their rows)."""
        n = len(outcome.clean_correct)
        if n <= self.params.max_samples:
            return np.arange(n)
        return np.sort(np.random.default_rng(ctx.seed).permutation(n)[: self.params.max_samples])

    def _data_rows(self, ctx: AuditContext, outcome: AdversarialOutcome, pos: np.ndarray) -> np.ndarray:
        return pos if outcome.index is None else outcome.index[pos]

    # -- one defense ---------------------------------------------------------------------------------
    def _defense(self, ctx: AuditContext, result: SectionResult, defense: Defense, keys: list[str], domain: Domain,
                 summary_rows: list[list[Any]]) -> None:
        p = self.params
        name = defense.name
        evaluator = DefenseEvaluator(ctx.model, defense, domain, steps=p.steps, eot_samples=p.eot_samples,
                                     eval_draws=p.eval_draws, batch_size=ctx.batch_size)
        outcome0 = ctx.adversarial[keys[0]]
        pos = self._rows(ctx, outcome0)
        data_rows = self._data_rows(ctx, outcome0, pos)
        x, y = ctx.data.x[data_rows], ctx.data.y[data_rows]
        clean_ok = evaluator.predict(x) == y
        undefended_clean = float((ctx.clean_predictions()[data_rows] == y).mean())
        result.metric(metric_key(name, "clean_accuracy"), clean_ok.mean())
        result.metric(metric_key(name, "clean_accuracy_cost"), undefended_clean - float(clean_ok.mean()))
        table: list[list[Any]] = []
        verdicts: list[tuple[str, Evaluated]] = []
        for key in keys:
            outcome = ctx.adversarial[key]
            norm: Norm = outcome.norm  # type: ignore[assignment]
            ev = evaluator.evaluate(x, y, clean_ok, norm=norm, eps=outcome.eps,
                                    undefended_robust=outcome.robust_correct[pos], x_transfer=outcome.x_adv[pos])
            v = verdict(ev, holds_margin=p.holds_margin, broken_margin=p.broken_margin)
            verdicts.append((v, ev))
            prefix = metric_key(name, norm, ("eps", float(ev.eps)))
            result.metric(metric_key(prefix, "undefended_robust_accuracy"), ev.undefended)
            result.metric(metric_key(prefix, "naive_robust_accuracy"), ev.naive)
            result.metric(metric_key(prefix, "adaptive_robust_accuracy"), ev.adaptive)
            for kind, fooled in ev.adaptive_fooled.items():
                result.metric(metric_key(prefix, f"{kind}_robust_accuracy"), ev.accuracy(fooled))
            result.metric(metric_key(prefix, "verdict"), VERDICT_CODES[v])
            table.append([norm, ev.eps, ev.undefended, ev.naive,
                          *[ev.accuracy(ev.adaptive_fooled[k]) if k in ev.adaptive_fooled else None
                            for k in ("bpda", "eot", "transfer")], ev.adaptive, v])
        worst_v, worst_ev = min(verdicts, key=lambda item: (VERDICT_CODES[item[0]], item[1].adaptive - item[1].naive))
        result.metric(metric_key(name, "verdict"), VERDICT_CODES[worst_v])
        settings = ", ".join(f"{k}={v}" for k, v in defense.settings().items() if k not in ("defense",))
        result.table(f"defense_{name}", f"{name}: naive vs adaptive robust accuracy",
                     ["norm", "eps", "undefended", "naive", "BPDA", "EOT", "transfer", "adaptive (worst case)",
                      "verdict"], table,
                     description=f"{settings}. naive: APGD-CE/DLR through the defended model's own gradients; "
                     "BPDA / EOT: the same attacks with the defense's approximation / averaged over draws; transfer: "
                     "the robustness section's adversarial inputs replayed; adaptive: correct under all of them")
        result.figure({"name": f"defense_{name}", "title": f"{name}: robust accuracy vs eps", "kind": "line",
                       "xlabel": "eps", "ylabel": "robust accuracy",
                       "series": [{"label": f"{label} ({norm})", "x": [r[1] for r in table if r[0] == norm],
                                   "y": [r[col] for r in table if r[0] == norm],
                                   **({"style": "dashed"} if label == "naive" else {})}
                                  for norm in dict.fromkeys(r[0] for r in table)
                                  for label, col in (("undefended", 2), ("naive", 3), ("adaptive", 7))]})
        weakest = f"{worst_ev.norm} eps={worst_ev.eps:g}: naive {worst_ev.naive:.3f}, adaptive " \
            f"{worst_ev.adaptive:.3f}, undefended {worst_ev.undefended:.3f}"
        summary_rows.append([name, float(clean_ok.mean()), undefended_clean - float(clean_ok.mean()), worst_v,
                             weakest])
        severity: Severity = {"broken": "high", "partial": "medium", "holds": "info"}[worst_v]  # type: ignore[assignment]
        what = {"broken": "is broken by adaptive attacks", "partial": "holds only partly under adaptive attacks",
                "holds": "holds under adaptive attacks"}[worst_v]
        result.finding(severity, f"defense '{name}' {what}: at {weakest} (robust accuracy; clean accuracy "
                       f"{float(clean_ok.mean()):.3f} vs {undefended_clean:.3f} undefended)",
                       code=f"defenses.{name}.verdict", metric=metric_key(self.section, name, "verdict"),
                       value=float(VERDICT_CODES[worst_v]))

    # -- detection ------------------------------------------------------------------------------------
    def _detection(self, ctx: AuditContext, result: SectionResult, keys: list[str], domain: Domain) -> None:
        p = self.params
        squeezers: list[Defense] = []
        for name in p.detection_squeezers:
            try:
                squeezer = self._build(ctx, name, key=f"sections.{self.section}.detection_squeezers")
            except ConfigError as err:
                result.notes.append(f"detector: squeezer {name} left out: {err.message}")
                continue
            if squeezer.evaluation != "transform":
                result.notes.append(f"detector: {name} left out: it is not an input transform")
                continue
            squeezers.append(squeezer)
        if not squeezers:
            result.notes.append("detector: no squeezer applies to this data; detection not evaluated")
            return
        outcome0 = ctx.adversarial[keys[0]]
        pos = self._rows(ctx, outcome0)
        data_rows = self._data_rows(ctx, outcome0, pos)
        x, y = ctx.data.x[data_rows], ctx.data.y[data_rows]
        ok = ctx.clean_predictions()[data_rows] == y
        outcomes = [(ctx.adversarial[k].norm, ctx.adversarial[k].eps, ctx.adversarial[k].x_adv[pos],
                     ctx.adversarial[k].robust_correct[pos]) for k in keys]
        det = evaluate_detector(ctx.model, squeezers, x, y, ok, outcomes,  # type: ignore[arg-type]
                                fpr=p.detection_fpr, domain=domain, steps=p.steps, batch_size=ctx.batch_size)
        name = "squeezing_detector"
        result.metric(metric_key(name, "threshold"), det.threshold)
        result.metric(metric_key(name, "clean_false_positive_rate"), det.clean_false_positive_rate)
        for r in det.rows:
            prefix = metric_key(name, r.norm, ("eps", float(r.eps)))
            result.metric(metric_key(prefix, "roc_auc"), r.auc)
            result.metric(metric_key(prefix, "tpr_at_5pct_fpr"), r.tpr5)
            if r.adaptive:
                result.metric(metric_key(prefix, "adaptive_roc_auc"), r.adaptive_auc)
                result.metric(metric_key(prefix, "adaptive_tpr_at_5pct_fpr"), r.adaptive_tpr5)
                result.metric(metric_key(prefix, "adaptive_evasion_rate"), r.evasion)
        rows: list[list[Any]] = [[r.norm, r.eps, r.adversarial, r.auc, r.tpr5, r.adaptive_auc, r.adaptive_tpr5,
                                  r.evasion] for r in det.rows]
        threshold = det.threshold
        result.table("detector", "Feature-squeezing detector: on the robustness section's adversarial inputs and "
                     "against an adaptive attack", ["norm", "eps", "adversarial inputs", "ROC AUC", "TPR at 5% FPR",
                     "adaptive ROC AUC", "adaptive TPR at 5% FPR", "adaptive evasion rate"], rows,
                     description=f"score: largest L1 distance between softmax outputs on the input and on its "
                     f"squeezed versions ({', '.join(s.name for s in squeezers)}); threshold {threshold:.4g} flags "
                     f"{p.detection_fpr:.0%} of clean inputs. Adaptive: PGD on classifier and detector together (BPDA "
                     "through the squeezers); evasion rate: share of clean-correct samples misclassified and not "
                     "flagged")
        result.figure({"name": "detector_roc", "title": "Feature-squeezing detector ROC", "kind": "line",
                       "xlabel": "false-positive rate (clean)", "ylabel": "true-positive rate (adversarial)",
                       "series": det.curves})
        worst = max((r.evasion for r in det.rows if not math.isnan(r.evasion)), default=math.nan)
        if not math.isnan(worst) and worst > 0.5:
            result.finding("high", f"the feature-squeezing detector is evaded: an adaptive attack on classifier and "
                           f"detector together fools the model undetected on {worst:.0%} of the samples",
                           code="defenses.squeezing_detector.evaded")

