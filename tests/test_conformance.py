"""Conformance suite: every registered section plugin (built-in or third-party) must pass it.

It constructs with default parameters, runs on small real contexts (digits images, ResumeNames
tabular), returns a result that serialises and validates against the results schema, is
deterministic for a seed, and prints nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from plugin_helpers import validate_section

from audit.plugin import SECTIONS_GROUP, SectionPlugin, available, load_plugin

PLUGINS = sorted(available(SECTIONS_GROUP))




@pytest.mark.parametrize("name", PLUGINS)
@pytest.mark.parametrize("dataset", ["digits", "resume"])
def test_plugin_conforms(name: str, dataset: str, request: pytest.FixtureRequest, make_context: Any,
                         capfd: pytest.CaptureFixture[str]) -> None:
    cls = load_plugin(name, SECTIONS_GROUP)
    assert isinstance(cls, type) and issubclass(cls, SectionPlugin)
    assert cls.__doc__, f"plugin '{name}' needs a docstring (nnaudit plugins shows its first line)"
    model, data, limit = (("digits_cnn", "digits_test", 60) if dataset == "digits"
                          else ("resume_mlp", "resume_test", 200))
    runs = []
    for _ in range(2):
        ctx = make_context(request.getfixturevalue(model), request.getfixturevalue(data), limit=limit)
        plugin = cls()
        results = []
        # sections that read earlier ones (explanations, fairness read robustness) get them run first
        for prior in cls.reads_sections:
            if prior in PLUGINS:
                ctx.results[prior] = load_plugin(prior, SECTIONS_GROUP)()(ctx)
        result = plugin(ctx)
        results.append(result)
        assert result.status in ("ok", "skipped"), result.error
        if result.status == "skipped":
            assert result.notes, "a skipped section must say why in its notes"
        validate_section(result, ctx)
        runs.append(result.to_dict())
    first, second = runs
    assert first["metrics"] == second["metrics"], "not deterministic for a fixed seed"
    assert [f["message"] for f in first["findings"]] == [f["message"] for f in second["findings"]]
    captured = capfd.readouterr()
    assert captured.out == "", f"plugin '{name}' printed to stdout"
