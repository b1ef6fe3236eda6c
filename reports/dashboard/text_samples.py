"""The sample explorer on text data: the robustness section's adversarial texts of one sample, each attack's
original and adversarial text side by side with the changed words in bold.

Read from ``artifacts/<robustness>/text_adversarial.jsonl`` (``attacks/text/run.py`` writes it, each line with
its texts as [text, changed] ``segments``). Every segment goes through the one Markdown escaper
(``reports.text.escape_markdown``): a review is never markup. No torch here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reports.dashboard.samples import SamplesUnavailable, _inside, _section_by_plugin
from reports.text import escape_markdown

ARTIFACT = "text_adversarial"


def load_text_examples(run: Path, results: Mapping[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Sample row -> its jsonl lines (one per attack); empty when the run attacked no text."""
    section = _section_by_plugin(results, "robustness")
    rel = (section or {}).get("artifacts", {}).get(ARTIFACT)
    if not rel:
        return {}
    path = _inside(Path(run), str(rel))
    out: dict[int, list[dict[str, Any]]] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                out.setdefault(int(entry["sample"]), []).append(entry)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SamplesUnavailable(f"cannot read {rel}: {err}") from err
    return out


def _piece(text: str) -> str:
    """One segment escaped, keeping a space at either end (the escaper folds whitespace and trims it)."""
    body = escape_markdown(text)
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() and body else ""
    return f"{lead}{body}{trail}"


def segments_markdown(segments: list[list[Any]]) -> str:
    """[text, changed] segments as one Markdown line: every segment escaped, the changed ones in bold."""
    out = []
    for text, changed in segments:
        piece = _piece(str(text))
        if changed and piece.strip():
            inner = piece.strip()
            piece = piece.replace(inner, f"**{inner}**", 1)
        out.append(piece)
    return "".join(out)


def example_lines(entry: Mapping[str, Any], class_names: list[str]) -> list[str]:
    """Markdown lines for one attack on one sample: the verdict, then the original and the adversarial text."""
    def name(i: Any) -> str:
        return escape_markdown(class_names[int(i)] if 0 <= int(i) < len(class_names) else i)

    verdict = "fooled" if entry.get("success") else "not fooled"
    head = (f"**{escape_markdown(entry.get('attack', '?'))}**: {verdict}, prediction {name(entry['clean_prediction'])}"
            f" → {name(entry['adversarial_prediction'])}, {len(entry.get('changed', []))} of "
            f"{entry.get('n_units', '?')} {escape_markdown(entry.get('unit', 'word'))}s changed, "
            f"{entry.get('queries', '?')} queries")
    segments = entry.get("segments") or {}
    original = segments_markdown(segments["original"]) if "original" in segments else escape_markdown(
        entry.get("original", ""))
    adversarial = segments_markdown(segments["adversarial"]) if "adversarial" in segments else escape_markdown(
        entry.get("adversarial", ""))
    return [head, f"original: {original}", f"adversarial: {adversarial}"]


def show_text_sample(run: Path, results: Mapping[str, Any], row: int, class_names: list[str]) -> None:
    import streamlit as st

    try:
        examples = load_text_examples(run, results)
    except SamplesUnavailable as err:
        st.info(f"No adversarial texts: {escape_markdown(err)}")
        return
    if not examples:
        st.info("This run attacked no text (no robustness section, or it ran no text attack).")
        return
    entries = examples.get(int(row))
    if not entries:
        st.info("This sample was not attacked: only clean-correct samples are (and at most max_samples).")
        return
    st.markdown("**Adversarial texts** (changed words in bold)")
    for entry in entries:
        for line in example_lines(entry, class_names):
            st.markdown(line)
