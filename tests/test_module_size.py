"""Module sizes (DESIGN.md): no module in audit/, attacks/, explain/, reports/ above 450 lines and no section
module (``*/section.py``) above 350, so that a module reads in one sitting. Split a module that grows past
them by responsibility (the computing into modules that return dataclasses, the section records them)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "attacks", "explain", "reports")
MODULE_LIMIT = 450
SECTION_LIMIT = 350


def sizes() -> dict[str, int]:
    return {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def test_no_module_too_long() -> None:
    found = sizes()
    assert len(found) > 50 and any(name.endswith("section.py") for name in found)  # the walk saw the package
    over = {name: n for name, n in found.items() if n > MODULE_LIMIT}
    assert not over, f"modules above {MODULE_LIMIT} lines (split them): {over}"
    sections = {name: n for name, n in found.items() if Path(name).name == "section.py" and n > SECTION_LIMIT}
    assert not sections, f"section modules above {SECTION_LIMIT} lines (move the computing out): {sections}"
