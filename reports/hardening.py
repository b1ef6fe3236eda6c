"""``nnaudit harden``'s before/after comparison as Markdown: the table the command prints and ``comparison.md``.

Reads what ``attacks.defenses.hardening.harden`` returns (the rows also stored in ``comparison.json``);
numbers go through ``audit.numbers`` (fixed style: 3 decimals for fractions). Never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.numbers import format_number
from audit.results import atomic_write_text

if TYPE_CHECKING:
    from attacks.defenses.hardening import Hardening

COMPARISON_MD = "comparison.md"


def markdown_table(rows: list[list[Any]]) -> str:
    """[measure, before, after, change] rows as a Markdown table (``n/a`` where a side has no number)."""
    lines = ["| measure (robustness section) | before | after | change |", "|---|---:|---:|---:|"]
    for key, vb, va, change in rows:
        cells = [format_number(vb, style="fixed"), format_number(va, style="fixed"),
                 format_number(change, style="fixed", signed=True)]
        lines.append(f"| {key} | {' | '.join(cells)} |")
    return "\n".join(lines)


def comparison_markdown(hardening: Hardening) -> str:
    """How it trained, any warnings, then the before/after table."""
    h, p = hardening, hardening.params
    head = [f"# nnaudit harden: {p.method}", "",
            f"Trained {p.epochs} epoch(s) on {h.n_train} samples ({h.origin}), {p.norm} eps "
            f"{format_number(p.eps, style='general')}, in {h.seconds:.1f} s. Both models audited with the same "
            f"settings: `{h.out / 'before'}` and `{h.out / 'after'}`.",
            ""]
    for note in h.notes:
        head += [f"**Warning:** {note}.", ""]
    return "\n".join(head) + markdown_table(h.rows) + "\n"


def write_comparison_markdown(hardening: Hardening) -> Path:
    path = hardening.out / COMPARISON_MD
    atomic_write_text(path, comparison_markdown(hardening))
    return path
