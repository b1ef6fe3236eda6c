"""The import contract in CI: layers only point down, sections are independent, no import cycles.

It reads the source (every import statement, lazy ones included; see tests/layers.py), and a planted
violation in a copy of the tree shows that it fails when the contract breaks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from layers import PACKAGES, cycles, layer_of, violations

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_points_down_and_sections_are_independent() -> None:
    found = violations(ROOT)
    assert not found, "import contract broken:\n" + "\n".join(map(str, found))


def test_no_import_cycles_among_the_package_modules() -> None:
    assert cycles(ROOT) == []


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "app.py", root / "app.py")
    return root


def _plant(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _planted() -> None:\n    {line}\n",
                    encoding="utf-8")


def test_a_planted_upward_import_fails_the_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    assert violations(root) == []
    _plant(root, "audit.runner", "from reports.html import write_report  # noqa")  # engine -> rendering, lazily
    found = violations(root)
    assert [(v.importer, v.imported) for v in found] == [("audit.runner", "reports.html")]
    assert "layer 1 (engine) imports layer 4 (rendering)" in str(found[0])


def test_a_planted_cross_section_import_and_cycle_fail(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _plant(root, "explain.stability", "import attacks.gradient  # noqa")
    _plant(root, "attacks.gradient", "import explain.stability  # noqa")
    found = {(v.importer, v.imported) for v in violations(root)}
    assert found == {("explain.stability", "attacks.gradient"), ("attacks.gradient", "explain.stability")}
    assert ["attacks.gradient", "explain.stability"] in cycles(root)


def test_layers_are_assigned_by_the_longest_prefix() -> None:
    assert layer_of("audit.cli") == (5, "application")
    assert layer_of("reports.dashboard.page") == (5, "application")
    assert layer_of("reports.ci") == (4, "rendering")
    assert layer_of("audit.decide.gate") == (3, "decisions")
    assert layer_of("audit.shift.noise") == (2, "sections")
    assert layer_of("audit.engine.chunks") == (1, "engine")
