"""The contract checks for attack, defense and explainer plugins (sections: ``audit.testing.sections``).

Each ``check_*`` takes the plugin's class (or an instance), runs it on ``tiny_problem`` and raises
``ConformanceError`` naming the plugin and the broken promise; it returns a ``Report`` of what it checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from audit.testing.problem import Problem, tiny_problem

BOUND_TOL = 1e-6  # float32 rounding of a clipped input
EPS_TOL = 1e-5  # relative slack on the eps ball (float32 norms)


class ConformanceError(AssertionError):
    """A plugin breaks its kind's contract; the message names the plugin and the promise."""


@dataclass
class Report:
    """What a check verified (``passed``) and what did not apply to the plugin (``skipped``, with why)."""

    plugin: str
    kind: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _fail(kind: str, name: str, message: str) -> ConformanceError:
    return ConformanceError(f"{kind} '{name}': {message}")


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        return fn()


def _same_device(kind: str, name: str, out: Any, like: torch.Tensor, what: str) -> None:
    if isinstance(out, torch.Tensor) and out.device != like.device:
        raise _fail(kind, name, f"{what} returned a tensor on {out.device}, the input was on {like.device}: "
                                "keep outputs on the input's device (no host copies)")


# -- attacks ------------------------------------------------------------------------------------------------


def check_attack(attack: Any, *, norms: tuple[str, ...] | None = None, eps: float = 0.1, seed: int = 0,
                 steps: int = 5, queries: int = 50, params: dict[str, Any] | None = None,
                 problem: Problem | None = None) -> Report:
    """An attack plugin (an ``attacks.base.Attack`` subclass or instance) honours the contract:

    - its step (``_attack_batch``) returns a tensor of the input's shape on the input's device, finite, inside the
      input bounds and, for an eps-bounded attack, inside the eps ball of each norm it declares;
    - the full call returns one row per input, inside the bounds and the ball, with ``perturbation`` the norm of
      ``x_adv - x`` and ``success`` what the model says of ``x_adv``;
    - it is deterministic under a seed (same seed, same adversarial inputs);
    - bad input (a negative eps) is a clear ``AttackError``, not a crash.

    A class is built as the robustness section builds it (``audit.plugin.construct``): its ``section_defaults``
    for ``steps`` / ``queries`` (few, so the check is quick), then ``params`` (its own arguments), which win.
    Returns a ``Report``; raises ``ConformanceError``.
    """
    from attacks.base import Attack, AttackNotApplicable, Domain
    from audit.plugin import construct

    cls = attack if isinstance(attack, type) else type(attack)
    name = str(getattr(cls, "name", cls.__name__))
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise _fail("attack", name, "is not a subclass of attacks.base.Attack")
    report = Report(name, "attack")
    problem = problem or tiny_problem("image", n=6, seed=seed)
    domain = Domain.build(input_shape=problem.data.input_shape, lower=0.0, upper=1.0)
    for norm in norms or (cls.norms if isinstance(attack, type) else (attack.norm,)):
        try:
            defaults = cls.section_defaults(steps=steps, restarts=1, queries=queries, minimal_steps=steps)
            instance = construct(cls, name, key=f"attack_params.{name}", defaults=defaults, params=params or {},
                                 fixed={"norm": norm}) if isinstance(attack, type) else attack
        except AttackNotApplicable as err:
            report.skipped.append(f"{norm}: {err}")
            continue
        _check_attack_norm(report, cls, instance, norm, None if cls.minimal else eps, seed, problem, domain)
    if not report.passed:
        raise _fail("attack", name, f"applies to none of the checked norms: {report.skipped}")
    return report


def _check_attack_norm(report: Report, cls: Any, instance: Any, norm: Any, budget: float | None, seed: int,
                       problem: Problem, domain: Any) -> None:
    from attacks.base import AttackError, flat_norm

    name = report.plugin
    model, x, y = problem.adapter, problem.x, problem.y
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    forward = instance._forward(model)
    step = _seeded(seed, lambda: instance._attack_batch(forward, xt, yt, eps=budget, domain=domain, target=None))
    if not isinstance(step, torch.Tensor) or tuple(step.shape) != tuple(xt.shape):
        raise _fail("attack", name, f"_attack_batch must return a tensor shaped like its input {tuple(xt.shape)}, "
                                    f"got {type(step).__name__} {tuple(getattr(step, 'shape', ()))}")
    _same_device("attack", name, step, xt, "_attack_batch")
    _in_threat_model(name, norm, step.detach(), xt, budget, "its step (_attack_batch)", flat_norm)
    report.passed.append(f"{norm}: step in bounds{'' if budget is None else ' and eps ball'}, on the device")

    def run() -> Any:
        return instance(model, x, y, eps=budget, domain=domain, batch_size=4)

    out = _seeded(seed, run)
    if out.x_adv.shape != x.shape or len(out.success) != len(x) or len(out.perturbation) != len(x):
        raise _fail("attack", name, f"the output must hold one row per input ({len(x)})")
    adv = torch.as_tensor(out.x_adv)
    _in_threat_model(name, norm, adv, xt, budget, "its output", flat_norm)
    size = flat_norm(adv - xt, norm).numpy()
    if not np.allclose(size, out.perturbation, rtol=1e-5, atol=1e-6):
        raise _fail("attack", name, "perturbation is not the norm of x_adv - x")
    verified = model.predict(out.x_adv) != y
    clear = np.abs(np.nan_to_num(out.margin, nan=1.0)) > 1e-4 if out.margin is not None else slice(None)
    if not np.array_equal(verified[clear], out.success[clear]):
        raise _fail("attack", name, "success does not match the model's predictions on x_adv")
    again = _seeded(seed, run)
    if not (np.array_equal(again.x_adv, out.x_adv) and np.array_equal(again.success, out.success)):
        raise _fail("attack", name, f"not deterministic under a seed ({norm}): two runs with seed {seed} gave "
                                    "different adversarial inputs; draw randomness from torch's global generator")
    report.passed.append(f"{norm}: output in the threat model, verified, deterministic under a seed")
    if not cls.minimal:
        try:
            instance(model, x, y, eps=-1.0, domain=domain)
        except AttackError:
            report.passed.append(f"{norm}: a negative eps is a clear AttackError")
        else:
            raise _fail("attack", name, "accepted eps=-1 instead of raising AttackError")


def _in_threat_model(name: str, norm: str, adv: torch.Tensor, x: torch.Tensor, eps: float | None, what: str,
                     flat_norm: Callable[[torch.Tensor, Any], torch.Tensor]) -> None:
    if not bool(torch.isfinite(adv).all()):
        raise _fail("attack", name, f"{what} holds NaN or infinite values")
    if bool((adv < -BOUND_TOL).any() or (adv > 1.0 + BOUND_TOL).any()):
        raise _fail("attack", name, f"{what} leaves the input bounds [0, 1] "
                                    f"(min {float(adv.min()):.4g}, max {float(adv.max()):.4g})")
    if eps is not None:
        size = float(flat_norm(adv - x, norm).max())
        if size > eps * (1 + EPS_TOL) + BOUND_TOL:
            raise _fail("attack", name, f"{what} leaves the eps ball: largest {norm} perturbation {size:.4g} > "
                                        f"eps {eps:g}; project each iterate (Domain.project)")


# -- defenses -----------------------------------------------------------------------------------------------


def check_defense(defense: Any, *, params: dict[str, Any] | None = None, seed: int = 0,
                  problem: Problem | None = None) -> Report:
    """A defense plugin (an ``attacks.defenses.base.Defense`` subclass or instance) honours the contract:

    - ``transform`` returns a finite tensor of the input's shape on the input's device, inside the input bounds;
    - a deterministic defense (``randomized = False``) gives each row the same output alone or in a batch, and
      the same output twice; a randomized one gives the same output under the same seed;
    - ``prepare`` refuses a modality it does not list with a ConfigError.

    A defense with ``evaluation = "custom"`` (certification) must override ``evaluate``; its transform is not
    checked.
    """
    from attacks.defenses.base import Defense
    from audit.errors import ConfigError

    cls = defense if isinstance(defense, type) else type(defense)
    name = str(getattr(cls, "name", cls.__name__))
    if not (isinstance(cls, type) and issubclass(cls, Defense)):
        raise _fail("defense", name, "is not a subclass of attacks.defenses.base.Defense")
    report = Report(name, "defense")
    if cls.evaluation == "custom":
        if cls.evaluate is Defense.evaluate:
            raise _fail("defense", name, "has evaluation 'custom' but does not override evaluate()")
        report.passed.append("custom evaluation: overrides evaluate()")
        return report
    modality = "image" if "image" in cls.modalities else "tabular"
    problem = problem or tiny_problem(modality, n=8, seed=seed)
    instance = cls(**(params or {})) if isinstance(defense, type) else defense
    instance.prepare(problem.data, lower=0.0, upper=1.0, key=f"sections.defenses.defense_params.{name}")
    x = torch.as_tensor(problem.x)
    out = _seeded(seed, lambda: instance.transform(x))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        raise _fail("defense", name, f"transform must return a tensor shaped like its input {tuple(x.shape)}")
    _same_device("defense", name, out, x, "transform")
    if not bool(torch.isfinite(out).all()) or bool((out < -BOUND_TOL).any() or (out > 1 + BOUND_TOL).any()):
        raise _fail("defense", name, "transform leaves the input bounds [0, 1] or returns NaN/inf")
    report.passed.append("transform: shape, device, bounds")
    again = _seeded(seed, lambda: instance.transform(x))
    if not torch.equal(out, again):
        raise _fail("defense", name, "transform is not deterministic under a seed")
    if not cls.randomized:
        alone = torch.cat([instance.transform(x[i : i + 1]) for i in range(len(x))])
        if not torch.allclose(alone, out, atol=1e-6):
            raise _fail("defense", name, "a row's transform depends on the other rows of its batch")
        report.passed.append("deterministic and batch independent")
    else:
        report.passed.append("deterministic under a seed")
    other = "tabular" if modality == "image" else "image"
    if other not in cls.modalities:
        try:
            cls(**(params or {})).prepare(tiny_problem(other, n=4).data, lower=0.0, upper=1.0, key="k")
        except ConfigError:
            report.passed.append(f"refuses {other} data with a ConfigError")
        else:
            raise _fail("defense", name, f"prepare accepted {other} data, which its modalities do not list")
    return report


# -- explainers ---------------------------------------------------------------------------------------------


def check_explainer(explainer: type, *, params: dict[str, Any] | None = None, seed: int = 0,
                    modality: str = "image", n: int = 4, problem: Problem | None = None) -> Report:
    """An explainer plugin (an ``explain.base.Explainer`` subclass) honours the contract:

    - ``explain`` returns finite attributions of the inputs' shape, one row per input;
    - its step (``_attribute``) returns numpy or a tensor on the input's device;
    - it is deterministic for a seed (a new instance with the same seed gives the same attributions);
    - a sample's attributions do not depend on the other samples explained with it (alone, or with others, in
      any batch size): randomness is keyed per sample id (``row_seeds``).
    """
    from explain.base import Explainer

    name = str(getattr(explainer, "method", getattr(explainer, "__name__", explainer)))
    if not (isinstance(explainer, type) and issubclass(explainer, Explainer)):
        raise _fail("explainer", name, "is not a subclass of explain.base.Explainer")
    report = Report(name, "explainer")
    if tuple(getattr(explainer, "input_kinds", ())) == ("tokens",):  # a text explainer: audit.testing.text
        from audit.testing.text import check_text_explainer

        return check_text_explainer(explainer, report, _fail, params=params, seed=seed, n=n)
    problem = problem or tiny_problem(modality, n=12, seed=seed)
    x, ids = problem.x[:n], np.arange(100, 100 + n)
    target = problem.y[:n]
    background = problem.x[n:]

    def build(batch_size: int) -> Any:
        defaults = explainer.section_defaults(batch_size=batch_size, seed=seed, background=background,
                                              modality=problem.data.modality, memory_mb=64.0,
                                              feature_names=problem.data.feature_names)
        return explainer(problem.adapter, **{**defaults, **(params or {})})

    instance = build(n)
    seen: list[Any] = []
    original = instance._attribute

    def spy(xb: torch.Tensor, tb: torch.Tensor) -> Any:
        out = original(xb, tb)
        _same_device("explainer", name, out, xb, "_attribute")
        seen.append(out)
        return out

    instance._attribute = spy
    attributions = instance.explain(x, target, ids)
    if not seen:
        raise _fail("explainer", name, "explain() never called _attribute")
    if attributions.shape != x.shape or not np.isfinite(attributions).all():
        raise _fail("explainer", name, f"attributions must be finite and shaped like the inputs {x.shape}, got "
                                       f"{attributions.shape}")
    report.passed.append("attributions: shape, finite, on the device")
    again = build(n).explain(x, target, ids)
    if not np.allclose(again, attributions, rtol=1e-5, atol=1e-7):
        raise _fail("explainer", name, f"not deterministic for a seed: two instances with seed {seed} differ by "
                                       f"{np.abs(again - attributions).max():.3g}")
    report.passed.append("deterministic for a seed")
    one_by_one = build(1).explain(x, target, ids)
    alone = build(n).explain(x[:1], target[:1], ids[:1])
    worst = max(np.abs(one_by_one - attributions).max(), np.abs(alone[0] - attributions[0]).max())
    scale = max(float(np.abs(attributions).max()), 1e-12)
    if worst > 1e-4 * scale:
        raise _fail("explainer", name, f"a sample's attributions depend on the other samples explained with it "
                                       f"(up to {worst:.3g}, {worst / scale:.1%} of the largest): key randomness "
                                       "per sample id (Explainer.row_seeds)")
    report.passed.append("batch independent")
    return report
