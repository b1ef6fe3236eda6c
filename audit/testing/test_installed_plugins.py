"""``pytest --pyargs audit.testing``: the conformance suite on every installed plugin, found through the
``nnaudit.attacks``, ``nnaudit.defenses``, ``nnaudit.explainers`` and ``nnaudit.sections`` entry points.

Settings that keep each check to seconds (fewer steps and queries) are passed where a plugin takes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from audit.plugin import ATTACKS_GROUP, DEFENSES_GROUP, EXPLAINERS_GROUP, SECTIONS_GROUP, available, load_plugin
from audit.testing import check_attack, check_defense, check_explainer, check_section

QUICK_SECTION: dict[str, dict[str, Any]] = {
    "robustness": {"attacks": ["fgsm", "pgd"], "steps": 3, "minimal_norm": ["fmn"], "minimal_steps": 5,
                   "minimal_samples": 6, "square": "never", "check_samples": 8, "eps": [0.05]},
    "explanations": {"methods": ["saliency", "occlusion"], "n_samples": 8, "check_samples": 4,
                     "bootstrap_resamples": 100, "stability_samples": 4},
    "defenses": {"steps": 3, "eot_samples": 1, "max_samples": 8, "defenses": ["bit_depth"]},
    "corruptions": {"severities": [1, 3]},
}


@pytest.mark.parametrize("name", sorted(available(ATTACKS_GROUP)))
def test_attack_conforms(name: str) -> None:
    check_attack(load_plugin(name, ATTACKS_GROUP))


@pytest.mark.parametrize("name", sorted(available(DEFENSES_GROUP)))
def test_defense_conforms(name: str) -> None:
    check_defense(load_plugin(name, DEFENSES_GROUP))


@pytest.mark.parametrize("name", sorted(available(EXPLAINERS_GROUP)))
def test_explainer_conforms(name: str) -> None:
    check_explainer(load_plugin(name, EXPLAINERS_GROUP))


@pytest.mark.parametrize("name", sorted(available(SECTIONS_GROUP)))
def test_section_conforms(name: str) -> None:
    check_section(load_plugin(name, SECTIONS_GROUP), params=QUICK_SECTION.get(name),
                         prior_params=QUICK_SECTION)
