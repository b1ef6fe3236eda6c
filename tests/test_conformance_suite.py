"""The shipped conformance suite (audit/testing): the built-in plugins pass it, a third-party plugin that honours
the contract passes it, one that breaks it fails with a message naming the plugin and the promise, and
``pytest --pyargs audit.testing`` runs it on plugins installed through entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from plugin_helpers import registered_plugins, write_plugin_dist

from audit.plugin import ATTACKS_GROUP, DEFENSES_GROUP, EXPLAINERS_GROUP, SECTIONS_GROUP, available, load_plugin
from audit.testing import ConformanceError, check_attack, check_defense, check_explainer, check_section
from audit.testing.test_installed_plugins import QUICK_SECTION

ROOT = Path(__file__).resolve().parents[1]

THIRD_PARTY = '''
    import numpy as np
    import torch
    from attacks.base import Attack
    from explain.base import Explainer

    class CornerNoise(Attack):
        """A random corner of the eps ball, projected into the threat model (honours the contract)."""
        name = "corner_noise"
        needs_gradients = False

        def _attack_batch(self, forward, x, y, *, eps, domain, target):
            sign = torch.randint(0, 2, x.shape, device=x.device).to(x) * 2 - 1
            return domain.project(x + eps * sign, x, eps, self.norm)

    class WideNoise(CornerNoise):
        """Steps twice eps away: leaves the eps ball (breaks the contract)."""
        name = "wide_noise"

        def _attack_batch(self, forward, x, y, *, eps, domain, target):
            sign = torch.randint(0, 2, x.shape, device=x.device).to(x) * 2 - 1
            return domain.clip(x + 2 * eps * sign)

    class GradientTimesInput(Explainer):
        """Gradient x input of the explained class (honours the contract)."""
        method = "grad_x_input"

        def _attribute(self, x, target):
            (grad,) = torch.autograd.grad(self.class_score_sum(x, target), x)
            return grad * x

    class BatchMean(GradientTimesInput):
        """Subtracts the batch's mean attribution: a sample's result depends on its batch mates (breaks it)."""
        method = "batch_mean"

        def _attribute(self, x, target):
            out = super()._attribute(x, target)
            return out - out.mean(dim=0, keepdim=True)
'''
ENTRY_POINTS = """
[nnaudit.attacks]
corner_noise = thirdparty_plugins:CornerNoise
wide_noise = thirdparty_plugins:WideNoise
[nnaudit.explainers]
grad_x_input = thirdparty_plugins:GradientTimesInput
batch_mean = thirdparty_plugins:BatchMean
"""


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with registered_plugins(tmp_path / "site", monkeypatch, module="thirdparty_plugins", entry_points=ENTRY_POINTS,
                            source=THIRD_PARTY):
        yield


def test_third_party_plugins_that_honour_the_contract_pass(third_party: Any) -> None:
    report = check_attack(load_plugin("corner_noise", ATTACKS_GROUP))
    assert any("deterministic" in p for p in report.passed) and len(report.passed) == 6  # 3 checks x 2 norms
    assert "batch independent" in check_explainer(load_plugin("grad_x_input", EXPLAINERS_GROUP)).passed


def test_third_party_plugins_that_break_it_fail_with_a_clear_message(third_party: Any) -> None:
    with pytest.raises(ConformanceError, match=r"attack 'wide_noise': its step \(_attack_batch\) leaves the eps "
                                               r"ball: largest linf perturbation 0\.2 > eps 0\.1"):
        check_attack(load_plugin("wide_noise", ATTACKS_GROUP))
    with pytest.raises(ConformanceError, match="explainer 'batch_mean': a sample's attributions depend on the "
                                               "other samples explained with it"):
        check_explainer(load_plugin("batch_mean", EXPLAINERS_GROUP))


def test_a_section_that_prints_or_is_not_deterministic_fails() -> None:
    from audit.plugin import SectionPlugin

    class Loud(SectionPlugin):
        """Prints its result."""
        name = "loud"

        def run(self, ctx: Any, result: Any) -> None:
            print("hello")
            result.metric("value", 1.0)

    class Drifting(SectionPlugin):
        """A metric from an unseeded generator."""
        name = "drifting"

        def run(self, ctx: Any, result: Any) -> None:
            import numpy as np

            result.metric("value", float(np.random.default_rng().random()))

    with pytest.raises(ConformanceError, match="section 'loud': printed to stdout"):
        check_section(Loud)
    with pytest.raises(ConformanceError, match="section 'drifting': not deterministic for seed 0"):
        check_section(Drifting)


@pytest.mark.parametrize("name", sorted(available(ATTACKS_GROUP)))
def test_builtin_attacks_conform(name: str) -> None:
    report = check_attack(load_plugin(name, ATTACKS_GROUP), steps=3, queries=30)
    assert report.passed


@pytest.mark.parametrize("name", sorted(available(DEFENSES_GROUP)))
def test_builtin_defenses_conform(name: str) -> None:
    assert check_defense(load_plugin(name, DEFENSES_GROUP)).passed


@pytest.mark.parametrize("name", sorted(available(EXPLAINERS_GROUP)))
def test_builtin_explainers_conform(name: str) -> None:
    assert check_explainer(load_plugin(name, EXPLAINERS_GROUP)).passed


@pytest.mark.parametrize("name", sorted(available(SECTIONS_GROUP)))
def test_builtin_sections_conform(name: str) -> None:
    assert check_section(load_plugin(name, SECTIONS_GROUP), params=QUICK_SECTION.get(name),
                         prior_params=QUICK_SECTION).passed


def test_pytest_pyargs_runs_the_suite_on_an_installed_third_party_plugin(tmp_path: Path) -> None:
    """The suite as a third party runs it: from the installed package, on a plugin package in a temporary
    directory on PYTHONPATH (found through its entry points), in a fresh process outside the repository."""
    site = tmp_path / "site"
    write_plugin_dist(site, module="thirdparty_plugins", entry_points=ENTRY_POINTS, source=THIRD_PARTY)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "audit.testing", "-q", "-p", "no:cacheprovider",
                          "-k", "corner_noise or wide_noise", "-W", "ignore::DeprecationWarning"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # one test failed
    assert "1 failed, 1 passed" in out, out
    assert "test_attack_conforms[wide_noise]" in out and "leaves the eps ball" in out, out
