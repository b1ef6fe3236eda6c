"""Helpers shared by the plugin tests (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from audit.plugin import refresh_registry
from audit.results import SCHEMA_VERSION, validate_results


def section_document(result: Any, ctx: Any) -> dict[str, Any]:
    """A whole results document holding one section result, as the runner would write it."""
    return {"schema_version": SCHEMA_VERSION,
            "manifest": {"nnaudit_version": "test", "created_at": "2026-01-01T00:00:00+00:00", "status": "complete",
                         "libraries": {}, "config": {}, "model": ctx.model.describe(), "data": ctx.data.describe(),
                         "device": "cpu", "seed": ctx.seed, "timings": {}},
            "sections": {result.name: result.to_dict()}}


def validate_section(result: Any, ctx: Any) -> None:
    """The section result serialises to strict JSON and validates against the results schema."""
    validate_results(json.loads(json.dumps(section_document(result, ctx), allow_nan=False)))


def write_plugin_dist(root: Path, *, module: str, entry_points: str, source: str) -> None:
    """A plugin module and its dist-info (METADATA, entry_points.txt) in ``root``: on ``sys.path`` or
    ``PYTHONPATH``, its entry points are found like an installed package's."""
    info = root / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@contextmanager
def registered_plugins(root: Path, monkeypatch: pytest.MonkeyPatch, *, module: str, entry_points: str,
                       source: str) -> Iterator[None]:
    """Register plugins through a real entry point (a dist-info on sys.path), installing nothing.

    ``entry_points`` is the text of entry_points.txt; ``source`` the module's code.
    """
    write_plugin_dist(root, module=module, entry_points=entry_points, source=source)
    monkeypatch.syspath_prepend(str(root))
    refresh_registry()
    try:
        yield
    finally:
        monkeypatch.undo()
        sys.modules.pop(module, None)
        refresh_registry()
