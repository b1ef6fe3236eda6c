"""Third-party attacks and explainers, registered through entry points (nothing installed), run in their sections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plugin_helpers import registered_plugins

from audit.plugin import available


@pytest.fixture
def noise_attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with registered_plugins(tmp_path / "site", monkeypatch, module="noise_attack",
                            entry_points="[nnaudit.attacks]\ncorner_noise = noise_attack:CornerNoise\n",
                            source='''
        import torch
        from attacks.base import Attack

        class CornerNoise(Attack):
            """Pushes every feature to the far corner of the eps ball (a weak, gradient-free attack)."""
            name = "corner_noise"
            needs_gradients = False

            def _attack_batch(self, forward, x, y, *, eps, domain, target):
                g = torch.Generator().manual_seed(0)
                sign = torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1
                return x + eps * sign
    '''):
        yield


def test_third_party_attack_runs_in_the_section(noise_attack: Any, digits_cnn: Any, digits_test: Any,
                                                make_context: Any) -> None:
    from attacks.section import RobustnessSection

    assert available("nnaudit.attacks")["corner_noise"] == "noise_attack:CornerNoise"
    ctx = make_context(digits_cnn, digits_test, limit=60)
    section = RobustnessSection(attacks=["corner_noise", "apgd_ce"], eps=[0.1], minimal_norm=[], red_flags=False,
                                steps=10)
    result = section(ctx)
    assert result.status == "ok", result.error
    noise = result.metrics["robustness.corner_noise.linf.eps=0.1.robust_accuracy"]
    apgd = result.metrics["robustness.apgd_ce.linf.eps=0.1.robust_accuracy"]
    worst = result.metrics["robustness.worst_case.linf.eps=0.1.robust_accuracy"]
    assert worst <= min(noise, apgd) + 1e-12
    outcome = ctx.adversarial["linf:0.1"]
    assert np.abs(outcome.x_adv - ctx.data.x).max() <= 0.1 + 1e-6


def test_unknown_attack_names_the_registered_ones() -> None:
    from attacks.section import RobustnessSection
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown attacks") as info:
        RobustnessSection(attacks=["nope"])
    assert info.value.key == "sections.robustness.attacks"


@pytest.fixture
def grad_x_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with registered_plugins(tmp_path / "site", monkeypatch, module="gxi",
                            entry_points="[nnaudit.explainers]\ngrad_x_input = gxi:GradTimesInput\n",
                            source='''
        import torch
        from explain.base import Explainer

        class GradTimesInput(Explainer):
            """Gradient x input."""
            method = "grad_x_input"

            def _attribute(self, x, target):
                x = x.detach().requires_grad_(True)
                out = self.forward(x).gather(1, target.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(out, x)
                return grad * x
    '''):
        yield


def test_third_party_explainer_runs_in_the_section(grad_x_input: Any, digits_cnn: Any, digits_test: Any,
                                                   make_context: Any) -> None:
    from explain.section import ExplanationsSection

    ctx = make_context(digits_cnn, digits_test, limit=60)
    result = ExplanationsSection(methods=["grad_x_input", "saliency"], n_samples=10)(ctx)
    assert result.status == "ok", result.error
    assert result.metrics["explanations.grad_x_input.deletion_auc"] is not None
    values = ctx.attributions["grad_x_input"].values
    assert values.shape == (10, 1, 8, 8) and np.abs(values).sum() > 0
    assert np.all(values[ctx.data.x[ctx.attributions["grad_x_input"].index] == 0] == 0)  # zero pixels: zero


@pytest.fixture
def buggy_attacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two attacks whose constructor has a plain bug (ZeroDivisionError): one eps-bounded, one minimal-norm."""
    with registered_plugins(tmp_path / "site", monkeypatch, module="buggy_attack",
                            entry_points="[nnaudit.attacks]\nbuggy = buggy_attack:Buggy\n"
                            "buggy_minimal = buggy_attack:BuggyMinimal\n",
                            source='''
        from attacks.base import Attack

        class Buggy(Attack):
            name = "buggy"
            needs_gradients = False

            def __init__(self, *, norm="linf", steps=10):
                super().__init__(norm=norm)
                self.step_size = 1 / (steps - steps)  # the bug

            def _attack_batch(self, forward, x, y, *, eps, domain, target):
                return x

        class BuggyMinimal(Buggy):
            name = "buggy_minimal"
            minimal = True
    '''):
        yield


@pytest.mark.parametrize("params", [{"attacks": ["buggy"], "minimal_norm": []},
                                    {"attacks": ["apgd_ce"], "minimal_norm": ["buggy_minimal"]}],
                         ids=["bounded", "minimal"])
def test_a_bug_in_an_attack_plugin_is_the_sections_error_not_a_skip(
        buggy_attacks: Any, params: dict[str, Any], digits_cnn: Any, digits_test: Any, make_context: Any,
        tmp_path: Path) -> None:
    """Only 'does not apply' (a norm the attack lacks) is a note; a bug building the attack fails the section,
    naming the attack, while the rest of the audit goes on."""
    from attacks.section import RobustnessSection
    from audit.config import parse_config
    from audit.runner import run_audit

    ctx = make_context(digits_cnn, digits_test, limit=20)
    name = params["attacks"][0] if not params["minimal_norm"] else params["minimal_norm"][0]
    common: dict[str, Any] = {"eps": [0.1], "red_flags": False, "steps": 5, "minimal_samples": 5}
    section = RobustnessSection(**common, **params)
    section.validate(ctx)  # not the config's fault: run() records it
    result = section(ctx)
    assert result.status == "error", result.notes
    assert result.error is not None and result.error["type"] == "PluginError"
    assert f"attack '{name}'" in result.error["message"] and "ZeroDivisionError" in result.error["message"]
    assert not any(name in note for note in result.notes)
    # a whole run: the robustness section records the error, the other sections go on
    config = parse_config({"model": {"factory": "audit.zoo:digits_cnn"}, "data": {"source": "digits", "limit": 20},
                           "device": "cpu", "report": False,
                           "sections": {"performance": {}, "robustness": {**common, **params}}})
    sections = run_audit(config, tmp_path / "run")["sections"]
    assert sections["performance"]["status"] == "ok"
    assert sections["robustness"]["status"] == "error" and "ZeroDivisionError" in sections["robustness"]["error"][
        "message"]
    # the expected refusal stays a note: DDN has no L-inf version
    ok = RobustnessSection(**common, attacks=["apgd_ce"], minimal_norm=["ddn"])
    ok.validate(ctx)
    fine = ok(ctx)
    assert fine.status == "ok", fine.error
    assert any(note.startswith("ddn (linf) skipped: foolbox attack 'ddn' supports norms ['l2']") for note in fine.notes)
