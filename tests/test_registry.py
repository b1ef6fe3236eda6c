"""One registry: built-in and third-party attacks, explainers and defenses load from their entry points, with
their parameters from the config; ``nnaudit plugins`` lists them without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_helpers import registered_plugins

from audit.errors import ConfigError
from audit.plugin import ATTACKS_GROUP, DEFENSES_GROUP, EXPLAINERS_GROUP, available, describe, load_plugin

ROOT = Path(__file__).resolve().parents[1]


def test_plugins_command_lists_every_group_without_importing_torch() -> None:
    script = ("import sys\nfor name in ('torch', 'foolbox', 'captum', 'shap', 'lime'):\n    sys.modules[name] = None\n"
              "from audit.cli import main\nsys.argv = ['nnaudit', 'plugins']\ncode = main()\n"
              "print('TORCH' if 'torch' in sys.modules and sys.modules['torch'] is not None else 'NO TORCH', code)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.strip().endswith("NO TORCH 0"), out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "difference-of-logits-ratio" in lines["apgd_dlr"]  # the description, from the source, not imported
    assert "Integrated Gradients" in lines["ig"]
    for group in ("nnaudit.sections:", "nnaudit.attacks:", "nnaudit.defenses:", "nnaudit.explainers:"):
        assert group in out


def test_descriptions_match_the_loaded_docstrings() -> None:
    for group in (ATTACKS_GROUP, EXPLAINERS_GROUP, DEFENSES_GROUP):
        for name, (_, summary) in describe(group).items():
            doc = (load_plugin(name, group).__doc__ or "").strip().splitlines()
            assert summary == (doc[0].strip() if doc else ""), (group, name)


def test_builtin_attacks_come_from_their_entry_points() -> None:
    from attacks.apgd import APGDDLR
    from attacks.evaluate import BOUNDED_ATTACKS, MINIMAL_ATTACKS, make_attack

    registered = available(ATTACKS_GROUP)
    assert set(BOUNDED_ATTACKS) | set(MINIMAL_ATTACKS) <= set(registered)
    attack = make_attack("apgd_dlr", norm="l2", steps=7, restarts=2)
    assert isinstance(attack, APGDDLR) and attack.name == "apgd_dlr" and attack.loss == "dlr"
    assert (attack.steps, attack.restarts, attack.norm) == (7, 2, "l2")
    # the config's own parameters win over the section's shared settings
    pgd = make_attack("pgd", norm="linf", steps=7, params={"steps": 3, "rel_step_size": 0.5})
    assert pgd.settings()["steps"] == 3
    with pytest.raises(ConfigError) as err:
        make_attack("fgsm", norm="linf", params={"stepz": 3})
    assert err.value.key == "sections.robustness.attack_params.fgsm.stepz"


@pytest.fixture
def scaled_attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with registered_plugins(tmp_path / "site", monkeypatch, module="scaled_attack",
                            entry_points="[nnaudit.attacks]\nscaled_corner = scaled_attack:ScaledCorner\n",
                            source='''
        from attacks.base import Attack

        class ScaledCorner(Attack):
            """Moves every feature by fraction * eps toward +1 (a gradient-free attack with a parameter)."""
            name = "scaled_corner"
            needs_gradients = False

            def __init__(self, *, norm="linf", fraction=1.0, steps=1):
                super().__init__(norm=norm)
                self.fraction = fraction
                self.steps = steps

            def settings(self):
                return {**super().settings(), "steps": self.steps, "loss": f"fraction={self.fraction}"}

            def _attack_batch(self, forward, x, y, *, eps, domain, target):
                return x + self.fraction * eps
    '''):
        yield


def test_third_party_attack_gets_its_parameters_from_the_config(scaled_attack: Any, digits_cnn: Any,
                                                                digits_test: Any, make_context: Any) -> None:
    from attacks.section import RobustnessSection

    ctx = make_context(digits_cnn, digits_test, limit=40)
    common: dict[str, Any] = {"attacks": ["scaled_corner"], "eps": [0.3], "minimal_norm": [], "red_flags": False,
                              "steps": 9}
    result = RobustnessSection(**common, attack_params={"scaled_corner": {"fraction": 0.0}})(ctx)
    assert result.status == "ok", result.error
    row = next(r for r in next(t for t in result.tables if t.name == "settings").rows if r[0] == "scaled_corner")
    assert row[4] == 9 and row[8] == "fraction=0.0"  # steps from the section, fraction from attack_params
    # fraction 0 leaves every input unchanged: robust accuracy equals clean accuracy
    m = result.metrics
    assert m["robustness.scaled_corner.linf.eps=0.3.robust_accuracy"] == m["robustness.clean_accuracy"]
    with pytest.raises(ConfigError) as err:
        RobustnessSection(**common, attack_params={"scaled_corner": {"fractoin": 0.5}}).validate(ctx)
    assert err.value.key == "sections.robustness.attack_params.scaled_corner.fractoin"


def test_attack_params_for_an_unknown_attack_is_a_config_error() -> None:
    from attacks.section import RobustnessSection

    with pytest.raises(ConfigError) as err:
        RobustnessSection(attack_params={"pgdd": {"steps": 3}})
    assert err.value.key == "sections.robustness.attack_params"


def test_explainer_parameters_from_the_config(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    from explain.section import ExplanationsSection

    ctx = make_context(digits_cnn, digits_test, limit=20)
    section = ExplanationsSection(methods=["ig"], n_samples=4, quality=[], stability=False,
                                  method_params={"ig": {"n_steps": 5}})
    result = section(ctx)
    assert result.status == "ok", result.error
    # captum's IG evaluates the model n_steps times per sample
    assert result.metrics["explanations.ig.model_evaluations_per_sample"] == 5
    bad = ExplanationsSection(methods=["ig"], n_samples=4, quality=[], stability=False,
                              method_params={"ig": {"n_stepz": 5}})(ctx)
    assert bad.status == "error" and "sections.explanations.method_params.ig" in bad.error["message"]
