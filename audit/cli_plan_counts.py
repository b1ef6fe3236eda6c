"""How many model evaluations each section of a config asks for, counted from its parameters before any work.

A section's work is a list of ``Work`` items: ``calls`` batched calls of ``batch`` rows each through the network,
forward only or forward and backward (``grad``). ``nnaudit plan`` (``audit/cli_plan.py``) prices them with a probe
of the real model. The counts are what the parameters ask for; where a section stops early the count is the most it
can do, scaled by what the probe measured (``Probe.active``: the share of attack iterations spent on samples not yet
fooled), and the notes say so:

- robustness: every eps-bounded attack at every (norm, eps): ``steps x restarts`` forward+backward per sample
  (FGSM one, Square ``square_queries`` forward), plus a forward to score it; minimal-norm attacks
  ``minimal_samples x minimal_steps``; the red-flag checks' re-attacks on ``attack_samples``;
- explanations: per method its evaluations per sample (ig ``n_steps``, lime ``n_samples``, ...) on ``n_samples``,
  the deletion / insertion curves, infidelity, and on ``check_samples`` sensitivity-max and the randomization cascade;
- defenses: per transform defense and (norm, eps) APGD-CE and APGD-DLR twice (naive, adaptive; EOT draws each);
  randomized smoothing: ``(n0 + n)`` noisy copies per sample per sigma, EOT-PGD and its ``n_eval`` vote per radius;
- corruptions: every corruption at every severity on every sample (plus the image grid);
- performance, imbalance, fairness: the shared clean pass (``clean``, counted once per run).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

CLEAN = "clean predictions (shared by the sections, once per run)"


@dataclass(frozen=True)
class Work:
    what: str
    grad: bool  # forward and backward (else forward only)
    calls: int
    batch: int  # rows per call

    @property
    def rows(self) -> int:
        return self.calls * self.batch


@dataclass
class SectionCount:
    section: str
    plugin: str
    work: list[Work] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counted: bool = True  # False: no counting rule for this plugin

    def rows(self, grad: bool) -> int:
        return sum(w.rows for w in self.work if w.grad == grad)

    def add(self, what: str, rows: float, batch: float, *, grad: bool = False) -> None:
        """``rows`` rows in calls of at most ``batch`` (the last call shorter)."""
        rows, batch = round(rows), max(1, int(batch))
        if rows <= 0:
            return
        full, rest = divmod(rows, batch)
        if full:
            self.work.append(Work(what, grad, full, batch))
        if rest:
            self.work.append(Work(what, grad, 1, rest))


@dataclass
class Setting:
    """What the counting needs to know about the model and data (``nnaudit plan`` loads both)."""

    n: int  # audited samples
    batch_size: int
    modality: str
    input_shape: tuple[int, ...]
    has_gradients: bool
    active: float = 1.0  # share of an attack's iterations spent on samples not yet fooled (the probe measures it)
    data: Any = None


def _batched(section: SectionCount, what: str, samples: int, per_sample: float, batch: int, *,
             grad: bool) -> None:
    """``per_sample`` evaluations of each of ``samples`` samples in one call per ``batch`` samples (the
    perturbations of an explainer: one call evaluates every perturbation of its samples)."""
    section.add(what, samples * per_sample, round(max(1, batch) * max(1.0, per_sample)), grad=grad)


def _iterated(section: SectionCount, what: str, samples: int, iterations: float, batch: int, *,
              grad: bool) -> None:
    """``iterations`` steps of an attack on ``samples`` samples: each step one call per ``batch`` samples."""
    batch = max(1, int(batch))
    full, rest = divmod(int(samples), batch)
    for size, batches in ((batch, full), (rest, 1 if rest else 0)):
        calls = round(batches * iterations)
        if calls and size:
            section.work.append(Work(what, grad, calls, size))


# -- robustness ----------------------------------------------------------------------------------------------


def _attack(section: SectionCount, name: str, params: Any, n: int, s: Setting, where: str) -> None:
    own = params.attack_params.get(name, {})
    steps, restarts = int(own.get("steps", params.steps)), int(own.get("restarts", params.restarts))
    if name == "fgsm":
        iterations: float = 1
    elif name == "square":
        _iterated(section, f"{name} {where}", n, int(own.get("n_queries", params.square_queries)) * s.active,
                  s.batch_size, grad=False)
        return
    else:
        iterations = steps * restarts * s.active
    _iterated(section, f"{name} {where}", n, iterations, s.batch_size, grad=True)
    section.add(f"{name} {where} (scoring)", n, s.batch_size)


def text_robustness(section: SectionCount, p: Any, s: Setting) -> None:
    """Text attacks (docs/text-attacks.md): per sample, one scoring of each word left out (the importance order),
    then up to ``max_words_fraction`` of the words edited with a few candidates each, within ``query_budget``; an
    upper count, since an attack stops at the first success. HotFlip: one gradient and one scoring per flip."""
    texts = getattr(s.data, "texts", None) or [""]
    words = max(1.0, sum(len(t.split()) for t in texts) / len(texts))
    edits = max(1.0, p.text.max_words_fraction * words)
    for name in p.text.attacks:
        if name == "hotflip":
            _iterated(section, "hotflip (gradients)", s.n, edits, s.batch_size, grad=True)
            _batched(section, "hotflip (scoring)", s.n, edits, s.batch_size, grad=False)
            continue
        from audit.plugin import TEXT_ATTACKS_GROUP, load_plugin

        default = getattr(load_plugin(name, TEXT_ATTACKS_GROUP), "max_candidates", None) or 1
        candidates = int(p.text.attack_params.get(name, {}).get("max_candidates", default))
        queries = min(float(p.text.query_budget), words + edits * candidates)
        _batched(section, f"{name} (queries)", s.n, queries, 1, grad=False)


def robustness(section: SectionCount, p: Any, s: Setting) -> None:
    if s.modality == "text":
        text_robustness(section, p, s)
        return
    n = min(s.n, p.max_samples or s.n)
    attacks = list(p.attacks)
    if not s.has_gradients:
        attacks = [a for a in attacks if a == "square"]
    if p.square == "always" or (p.square == "auto" and not s.has_gradients):
        attacks.append("square")
    for norm in p.norms():
        for eps in p.eps_for(norm) or []:
            for name in dict.fromkeys(attacks):
                _attack(section, name, p, n, s, f"{norm} eps={eps:g}")
        if s.has_gradients:
            for name in p.minimal_norm:
                _iterated(section, f"{name} {norm} (minimal norm)", min(n, p.minimal_samples), p.minimal_steps,
                         s.batch_size, grad=True)
    if p.red_flags and s.has_gradients:
        r = p.red_flag_params
        m = min(n, p.check_samples, r.attack_samples)
        per = r.unbounded_steps + p.steps * (r.convergence_steps + r.restart_checks * r.restart_steps)
        _iterated(section, "red-flag checks", m, per * s.active, s.batch_size, grad=True)
        _iterated(section, "red-flag checks (black box)", m, p.check_queries * s.active, s.batch_size, grad=False)
    section.notes.append("attacks stop on fooled samples: iterations scaled by the probe's share still active "
                         f"({s.active:.2f})")


# -- explanations ------------------------------------------------------------------------------------------


def _default(cls: Any, name: str, fallback: float) -> float:
    try:
        value = inspect.signature(cls.__init__).parameters[name].default
    except (KeyError, TypeError, ValueError):
        return fallback
    return fallback if value is inspect.Parameter.empty else float(value)


def method_cost(method: str, params: dict[str, Any], s: Setting, background: int) -> tuple[float, bool]:
    """(evaluations per explained sample, with a backward pass) of one explainer."""
    from audit.plugin import load_plugin

    try:
        cls = load_plugin(method, "nnaudit.explainers")
    except Exception:  # an unknown method is the section's error to report, not the plan's
        cls = None

    def param(name: str, fallback: float) -> float:
        return float(params.get(name, _default(cls, name, fallback)))

    features = math.prod(s.input_shape)
    if method == "ig":
        return param("n_steps", 32), True
    if method in ("gradient_shap", "shap_gradient"):
        return param("n_samples", 16), True
    if method == "shap_deep":
        return 2.0 * background, True
    if method == "occlusion":
        window = int(param("window", 2))
        spatial = s.input_shape[-2:] if s.modality == "image" and len(s.input_shape) >= 2 else (features,)
        return float(math.prod(math.ceil(d / window) for d in spatial) + 1), False
    if method == "shap_kernel":
        return param("n_samples", 256) * param("n_background", 10), False
    if method == "lime":
        return param("n_samples", 100), False
    return 1.0, True  # saliency, deeplift, lrp and other one-pass gradient methods


def explanations(section: SectionCount, p: Any, s: Setting) -> None:
    n = min(s.n, p.n_samples)
    check = min(n, p.check_samples)
    quality = set(p.quality)
    batch = p.batch_size
    methods = [m for m in p.methods if s.has_gradients or method_cost(m, {}, s, p.background_size)[1] is False]
    for method in methods:
        per, grad = method_cost(method, p.method_params.get(method, {}), s, p.background_size)
        _batched(section, f"{method}: attributions", n, per, batch, grad=grad)
        if "sensitivity" in quality:
            _batched(section, f"{method}: sensitivity-max", check * p.sensitivity_samples, per, batch, grad=grad)
        if "randomization" in quality and s.has_gradients:
            _batched(section, f"{method}: randomization cascade", check * p.randomization_steps, per, batch,
                     grad=grad)
        if "infidelity" in quality:
            _batched(section, f"{method}: infidelity", n, p.infidelity_samples + 1, batch, grad=False)
    if quality & {"deletion", "insertion"}:
        curves = len({"deletion", "insertion"} & quality)
        _batched(section, "deletion / insertion curves", n * (len(methods) + 1), curves * (p.quality_steps + 1),
                 batch, grad=False)
    if s.modality != "image":
        features = math.prod(s.input_shape)
        section.add("permutation importance", n * features * p.permutation_repeats, s.batch_size)
    section.notes.append(f"{len(methods)} method(s) on {n} samples ({check} for the costly checks)")


# -- defenses ----------------------------------------------------------------------------------------------


def defenses(section: SectionCount, p: Any, s: Setting, config: Any) -> None:
    from attacks.defenses.section import registered_defenses
    from audit.plugin import load_plugin

    names = p.defenses if p.defenses is not None else list(registered_defenses())
    robust = config.sections.get("robustness")
    rparams = None
    if robust is not None and robust.enabled:
        from attacks.section import RobustnessParams

        rparams = RobustnessParams(**robust.params)
    n = min(s.n, p.max_samples, (rparams.max_samples or s.n) if rparams else s.n)
    for name in names:
        cls = load_plugin(name, "nnaudit.defenses")
        own = p.defense_params.get(name, {})
        if getattr(cls, "evaluation", "transform") != "transform":
            if name == "smoothing":
                smoothing(section, cls(**own), s)
            continue
        if rparams is None or not s.has_gradients:
            continue
        draws = p.eot_samples if getattr(cls, "randomized", False) else 1
        for norm in rparams.norms():
            eps_list = [e for e in rparams.eps_for(norm) or [] if p.eps is None or e in p.eps]
            for eps in eps_list:
                where = f"{name} {norm} eps={eps:g}"
                _iterated(section, f"{where}: naive APGD-CE, -DLR", n, 2 * p.steps * s.active, s.batch_size,
                         grad=True)
                _iterated(section, f"{where}: adaptive APGD-CE, -DLR", n, 2 * p.steps * draws * s.active,
                         s.batch_size, grad=True)
                votes = p.eval_draws if getattr(cls, "randomized", False) else 1
                section.add(f"{where}: scoring", n * 5 * votes, s.batch_size)
    if p.detection and rparams is not None and s.has_gradients and s.modality == "image":
        squeezers = len(p.detection_squeezers) + 1
        for norm in rparams.norms():
            for eps in rparams.eps_for(norm) or []:
                _iterated(section, f"detector {norm} eps={eps:g}: adaptive attack", n, p.steps * squeezers * s.active,
                         s.batch_size, grad=True)
                section.add(f"detector {norm} eps={eps:g}: scores", 2 * n * squeezers, s.batch_size)


def smoothing(section: SectionCount, d: Any, s: Setting) -> None:
    """Randomized smoothing: exact (no early stop)."""
    n = min(s.n, d.max_samples)
    for sigma in d.sigmas:
        rows = n * (d.n0 + d.n)
        section.add(f"smoothing sigma={sigma:g}: CERTIFY (n0 + n per sample)", rows, d.batch)
        if d.empirical and s.has_gradients:
            attacked = [r for r in d.radii if r > 0]
            for r in attacked:
                for start in range(0, n, d.attack_batch):
                    rows_b = min(d.attack_batch, n - start) * d.eot_samples
                    section.work.append(Work(f"smoothing sigma={sigma:g}: EOT-PGD radius={r:g}", True, d.steps,
                                             rows_b))
            radii = len({0.0, *(float(r) for r in d.radii)})
            section.add(f"smoothing sigma={sigma:g}: majority votes", radii * n * d.n_eval, d.batch)


# -- corruptions and the light sections --------------------------------------------------------------------


def corruptions(section: SectionCount, p: Any, s: Setting) -> None:
    from audit.shift import planning

    names = planning.resolve_names(p.corruptions, s.data, p.tabular.shift_features, "corruptions")
    plans = planning.make_plans(names, p.severities, s.data, p.tabular.shift_features, "tabular.shift_features")
    n = min(s.n, p.max_samples or s.n)
    for plan in plans:
        for severity in plan.severities:
            for start in range(0, n, p.chunk_size):  # each chunk in batches of batch_size
                section.add(f"{plan.name} severity {severity}", min(p.chunk_size, n - start), s.batch_size)
    if s.modality == "image":
        grid = sum(1 for plan in plans if p.grid_severity in plan.severities)
        section.work.extend(Work("image grid", False, 1, 1) for _ in range(grid + 1))
    section.notes.append(f"{sum(len(pl.severities) for pl in plans)} (corruption, severity) pairs on {n} samples")


def count(plugins: list[Any], config: Any, s: Setting) -> tuple[list[SectionCount], SectionCount]:
    """Each section's evaluations, and the shared clean pass (counted once)."""
    out: list[SectionCount] = []
    for plugin in plugins:
        section = SectionCount(plugin.section, plugin.name)
        p = plugin.params
        if plugin.name == "robustness":
            robustness(section, p, s)
        elif plugin.name == "explanations":
            explanations(section, p, s)
        elif plugin.name == "defenses":
            defenses(section, p, s, config)
        elif plugin.name == "corruptions":
            corruptions(section, p, s)
        elif plugin.name in ("performance", "imbalance", "fairness"):
            section.notes.append("the shared clean predictions only")
        else:
            section.counted = False
            section.notes.append(f"no counting rule for the '{plugin.name}' plugin: not estimated")
        out.append(section)
    clean = SectionCount("clean", "clean")
    clean.add(CLEAN, s.n, s.batch_size)
    return out, clean
