"""What the robustness section writes: per norm its metrics, the shared adversarial outcome, the per-class table,
the robustness curve, the gallery (images) or the per-feature perturbation (tabular); then the settings and
robust-accuracy tables, the red flags, the verdict on trust (``reliable``) and the per-sample outcomes.

``RobustnessRecord`` holds the rows the tables gather over the norms; the section calls it in order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attacks.evaluate import BOUNDED_ATTACKS, NormEvaluation, per_class_accuracy
from attacks.gallery import feature_summary, gallery_figure
from attacks.redflags import RedFlag
from audit.engine.chunks import copy_on_write
from audit.keys import metric_key
from audit.results import SectionResult, Severity

if TYPE_CHECKING:
    from audit.context import AuditContext


def fmt(eps: float) -> str:
    return f"{eps:g}"


def batch_cell(settings: dict[str, Any]) -> Any:
    """The batch size an attack ran at; after out-of-memory halvings, how it got there."""
    chain = settings.get("out_of_memory_backoff")
    return f"{chain} (out of memory)" if chain else settings.get("batch_size")


@dataclass
class Outcomes:
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


@dataclass
class RobustnessRecord:
    """Writes the section's results into ``result`` (and the shared outcomes into ``ctx.adversarial``) for the
    evaluated samples ``x``, ``y`` (rows ``index`` of the data; ``pred``: their clean predictions)."""

    ctx: AuditContext
    result: SectionResult
    section: str
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    pred: np.ndarray
    steps: int
    restarts: int
    gallery_size: int
    settings_rows: list[list[Any]] = field(default_factory=list)
    curve_rows: list[list[Any]] = field(default_factory=list)
    outcomes: Outcomes = field(init=False)

    def __post_init__(self) -> None:
        self.outcomes = Outcomes(values={"clean_accuracy": self.pred == self.y},
                                 meta={"clean_accuracy": {"kind": "correct"}},
                                 extra={"label": self.y, "prediction": self.pred})

    # -- one norm --------------------------------------------------------------------------------
    def norm(self, ev: NormEvaluation) -> None:
        """Metrics per attack and eps and of the worst case, the shared outcome, the per-class table, the
        minimal-norm numbers, the curve, and the gallery (images) or per-feature perturbation (tabular)."""
        from audit.context import AdversarialOutcome

        ctx, result, outcomes = self.ctx, self.result, self.outcomes
        norm, n_ok = ev.norm, max(int(ev.clean_correct.sum()), 1)
        attacked = int(ev.clean_correct.sum())
        order = list(BOUNDED_ATTACKS)
        names = sorted({a for a, _ in ev.runs}, key=lambda a: (order.index(a) if a in order else len(order), a))
        for e in ev.eps:
            for name in names:
                run = ev.runs[(name, e)]
                key = metric_key(name, norm, ("eps", float(e)))
                success_rate = run.success.sum() / n_ok
                mean_size = float(run.perturbation[run.success].mean()) if run.success.any() else math.nan
                robust_key = metric_key(key, "robust_accuracy")
                result.metric(robust_key, ev.robust_accuracy(name, e))
                outcomes.add(robust_key, ev.clean_correct & run.robust, kind="robust", norm=norm, eps=e, attack=name)
                result.metric(metric_key(key, "attack_success_rate"), success_rate)
                self.curve_rows.append([norm, e, name, ev.robust_accuracy(name, e), float(success_rate), mean_size])
                s = run.settings
                self.settings_rows.append([name, s.get("library"), norm, e, s.get("steps"), s.get("step_size"),
                                           s.get("restarts"), s.get("random_start"), s.get("loss"), attacked,
                                           run.queries or None, batch_cell(s), round(run.seconds, 3)])
            robust = ev.worst_robust[e]
            fooled = ev.clean_correct & ~robust
            size = ev.worst_size[e]
            mean_size = float(size[fooled].mean()) if fooled.any() else math.nan
            key = metric_key("worst_case", norm, ("eps", float(e)))
            robust_key = metric_key(key, "robust_accuracy")
            result.metric(robust_key, robust.mean())
            outcomes.add(robust_key, robust, kind="robust", norm=norm, eps=e, attack="worst_case")
            outcomes.add_adversarial(ctx, ev, e)
            result.metric(metric_key(key, "attack_success_rate"), fooled.sum() / n_ok)
            result.metric(metric_key(key, "mean_perturbation"), mean_size)
            result.metric(metric_key(key, "max_perturbation"), size[fooled].max() if fooled.any() else 0.0)
            per_class = per_class_accuracy(self.y, robust, ctx.data.num_classes)
            result.metric(metric_key(key, "worst_class_robust_accuracy"), np.nanmin(per_class))
            self.curve_rows.append([norm, e, "worst case", float(robust.mean()), float(fooled.sum() / n_ok),
                                    mean_size])
            outcome_attack = "worst of " + ", ".join(names + list(ev.minimal)) + f" ({self.steps} steps, " \
                f"{self.restarts} restart(s))"
            subset = None if len(self.index) == ctx.data.n_samples else self.index
            result.artifacts[f"x_adv_{norm}_eps={fmt(e)}"] = ctx.artifact_path(self.section,
                                                                              f"x_adv_{norm}_eps={fmt(e)}.npy")[1]
            ctx.adversarial[f"{norm}:{e}"] = AdversarialOutcome(
                norm=norm, eps=e, attack=outcome_attack, x_adv=copy_on_write(ev.worst_x_adv[e]),
                clean_correct=ev.clean_correct,
                robust_correct=robust, min_eps=ev.min_eps, index=subset)
        if ev.min_eps is not None:
            outcomes.extra[f"min_eps/{norm}"] = ev.min_eps
        self._per_class(ev)
        self._minimal(ev)
        self._curve(ev, names)
        middle = ev.middle_eps()
        if ctx.data.modality == "image":
            self._gallery(ev, middle)
        else:
            self._features(ev, middle)

    def _per_class(self, ev: NormEvaluation) -> None:
        y = self.y
        k, names = self.ctx.data.num_classes, self.ctx.data.class_names
        clean = per_class_accuracy(y, ev.clean_correct, k)
        cols = {e: per_class_accuracy(y, ev.worst_robust[e], k) for e in ev.eps}
        counts = np.bincount(y, minlength=k)
        rows = []
        for c in range(k):
            ok = int((ev.clean_correct & (y == c)).sum())
            rates = [float(((~ev.worst_robust[e]) & ev.clean_correct & (y == c)).sum() / ok) if ok else None
                     for e in ev.eps]
            rows.append([names[c], int(counts[c]), float(clean[c]), *[float(cols[e][c]) for e in ev.eps], *rates])
        self.result.table(f"per_class_{ev.norm}", f"Per-class robust accuracy ({ev.norm}, worst case)",
                          ["class", "samples", "clean accuracy", *[f"robust eps={fmt(e)}" for e in ev.eps],
                           *[f"success rate eps={fmt(e)}" for e in ev.eps]], rows)

    def _minimal(self, ev: NormEvaluation) -> None:
        result = self.result
        for name, (idx, out) in ev.minimal.items():
            norms = np.where(out.success, out.perturbation, np.inf)
            ok = ev.clean_correct[idx]
            found = norms[ok & out.success]
            median = float(np.median(norms[ok])) if ok.any() else math.nan
            result.metric(metric_key(name, ev.norm, "median_min_eps"), median)
            result.metric(metric_key(name, ev.norm, "success_rate"),
                          float(out.success[ok].mean()) if ok.any() else math.nan)
            result.metric(metric_key(name, ev.norm, "mean_min_eps"), float(found.mean()) if len(found) else math.nan)
            s = out.settings
            self.settings_rows.append([name, s.get("library"), ev.norm, "minimal", s.get("steps"),
                                       s.get("step_size"), s.get("restarts"), s.get("random_start"), s.get("loss"),
                                       len(idx), out.queries or None, batch_cell(s), round(out.seconds, 3)])
            for e, acc in zip(ev.eps, ev.minimal_curve(name, ev.eps), strict=True):
                self.curve_rows.append([ev.norm, e, f"{name} (minimal norm, {len(idx)} samples)", acc, None, None])
        if ev.min_eps is not None:
            ok = ev.clean_correct
            result.metric(metric_key("worst_case", ev.norm, "median_min_eps"),
                          float(np.median(ev.min_eps[ok])) if ok.any() else math.nan)

    def _curve(self, ev: NormEvaluation, names: list[str]) -> None:
        xs = [0.0, *ev.eps]
        clean = float(ev.clean_correct.mean())
        series = [{"label": name, "x": xs, "y": [clean, *[ev.robust_accuracy(name, e) for e in ev.eps]],
                   "style": "dashed"} for name in names]
        series.append({"label": "worst case", "x": xs, "y": [clean, *[ev.worst_accuracy(e) for e in ev.eps]]})
        for name, (idx, _) in ev.minimal.items():
            grid = list(np.linspace(0.0, max(ev.eps) * 1.5, 31))
            series.append({"label": f"{name} (minimal norm, {len(idx)} samples)", "x": [float(g) for g in grid],
                           "y": ev.minimal_curve(name, grid), "style": "dotted"})
        self.result.figure({"name": f"robustness_curve_{ev.norm}", "title": f"Robust accuracy vs eps ({ev.norm})",
                            "kind": "line", "series": series, "xlabel": f"eps ({ev.norm})",
                            "ylabel": "robust accuracy", "ylim": [0.0, 1.0]})

    def _gallery(self, ev: NormEvaluation, eps: float) -> None:
        if self.gallery_size == 0:
            return
        ctx, x, y = self.ctx, self.x, self.y
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
        picked = sorted(picked[: self.gallery_size])
        x_adv = ev.worst_x_adv[eps][picked]
        lo, hi = ctx.model.bounds if ctx.model.bounds is not None else (float(x.min()), float(x.max()))
        path, rel = ctx.artifact_path(self.section, f"gallery_{ev.norm}.npz")
        clean_logits = ctx.clean_logits()[self.index[picked]].numpy()  # computed once for every section
        self.result.artifacts[f"gallery_{ev.norm}"] = rel
        self.result.figure(gallery_figure(path, rel, x=x[picked], x_adv=x_adv, y=y[picked], clean_logits=clean_logits,
                                          adv_logits=ctx.model.logits(x_adv).numpy(),
                                          class_names=ctx.data.class_names,
                                          title=f"Adversarial examples ({ev.norm}, eps={fmt(eps)})",
                                          name=f"gallery_{ev.norm}", bounds=(float(lo), float(hi))))

    def _features(self, ev: NormEvaluation, eps: float) -> None:
        data = self.ctx.data
        names = data.feature_names or [f"x{i}" for i in range(int(np.prod(data.input_shape)))]
        fooled = ev.clean_correct & ~ev.worst_robust[eps]
        rows = feature_summary(self.x, ev.worst_x_adv[eps], fooled, names)
        if data.perturbable is not None:
            allowed = {n for n, m in zip(names, np.asarray(data.perturbable).reshape(-1), strict=True) if m}
            rows = [r for r in rows if r[0] in allowed]
        self.result.table(f"feature_perturbation_{ev.norm}", f"Per-feature perturbation ({ev.norm}, eps={fmt(eps)})",
                          ["feature", "mean |delta|", "max |delta|", "share changed"], rows,
                          description=f"over the {int(fooled.sum())} successful adversarial examples; only "
                          "perturbable features")
        top = rows[:20]
        self.result.figure({"name": f"feature_perturbation_{ev.norm}", "kind": "bar",
                            "title": f"Mean |perturbation| per feature ({ev.norm}, eps={fmt(eps)})",
                            "series": [{"label": "mean |delta|", "x": [r[0] for r in top], "y": [r[1] for r in top]}],
                            "xlabel": "feature", "ylabel": "mean |delta| (raw units)"})

    def nonfinite(self, ev: NormEvaluation, rows: np.ndarray) -> list[str]:
        """Samples whose model outputs were NaN/inf somewhere under attack: counted as not robust. Returns the
        reason the numbers cannot be trusted (none when every output was finite)."""
        count = int(rows.sum())
        self.result.metric(metric_key("nonfinite_outputs", ev.norm), count)
        if count == 0:
            return []
        message = (f"{count} of {len(rows)} samples made the model return NaN or infinite scores under {ev.norm} "
                   "attack (perturbed inputs inside the threat model): each counts as not robust, and the model's "
                   "predictions there cannot be trusted; check its numerics on inputs near the data")
        self.result.finding("high", message, code=f"robustness.nonfinite_outputs.{ev.norm}",
                            metric=metric_key(self.section, "nonfinite_outputs", ev.norm), value=count)
        return [message]

    # -- over the norms ----------------------------------------------------------------------------
    def tables(self) -> None:
        """The settings behind every number, and robust accuracy by attack and eps."""
        self.result.table("settings", "Attack settings behind every number", ["attack", "library", "norm", "eps",
                          "steps", "step size", "restarts", "random start", "loss", "samples", "queries/sample",
                          "batch size", "seconds"],
                          self.settings_rows, description="each robust accuracy in this section comes from the row "
                          "with the same attack, norm and eps")
        self.result.table("robust_accuracy", "Robust accuracy by attack and eps",
                          ["norm", "eps", "attack", "robust accuracy", "attack success rate", "mean perturbation"],
                          self.curve_rows, description="attack success rate: share of clean-correct samples fooled; "
                          "worst case: correct under every attack at that eps (and every smaller eps)")

    def flags(self, flags: list[RedFlag]) -> None:
        result = self.result
        raised = [f for f in flags if f.raised]
        result.metric("red_flags.count", len(raised))
        result.metric("red_flags.likely_masked", sum(f.verdict == "likely masked" for f in flags))
        result.metric("red_flags.checks", sum(f.verdict != "n/a" for f in flags))
        for f in flags:
            if f.value is not None:
                result.metric(metric_key("red_flags", f.code), f.value)
        result.table("red_flags", "Gradient-masking red flags",
                     ["check", "norm", "verdict", "value", "reason", "seconds"],
                     [[f.title, f.code.rsplit(".", 1)[-1], f.verdict, f.value, f.reason, round(f.seconds, 3)]
                      for f in flags],
                     description="ok / suspicious / likely masked; a raised flag means the robust accuracy above "
                     "may overstate robustness. Thresholds: red_flag_params (docs/robustness.md)")
        for f in raised:
            severity: Severity = "high" if f.verdict == "likely masked" else "medium"
            result.finding(severity, f"{f.title} ({f.verdict}): {f.reason}",
                           code=f"robustness.red_flag.{f.code}", metric=metric_key(self.section, "red_flags", f.code),
                           value=f.value)

    def reliable(self, reasons: list[str], *, checked: bool, escalated: bool = False) -> None:
        """``reliable``: 1 when the checks ran and nothing says the numbers overstate robustness, 0 with the
        reasons otherwise; absent (with a note) when nothing was checked."""
        result = self.result
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

    def save_outcomes(self) -> None:
        from audit.outcomes import save_outcomes

        save_outcomes(self.ctx, self.result, sample_id=self.index, values=self.outcomes.values,
                      meta=self.outcomes.meta, extra=self.outcomes.extra)
