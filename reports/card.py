"""The model card (``nnaudit card``): Mitchell et al. 2019's sections filled from a finished audit.

``card_view`` turns results.json into plain data: eight sections (model details, intended use, factors,
metrics, evaluation data, quantitative analyses, ethical considerations, caveats and recommendations),
each a list of blocks: ``fields`` (label / text pairs), ``text`` (a paragraph) and ``table`` (columns and rows
of text). ``render_markdown`` and ``render_card_html`` render that one view, so the two formats cannot
disagree. The numbers come from the views the report uses (``reports.headline``, ``reports.views``), the
narrative from the config's ``card:`` block (``audit.config.CardConfig``), each field left out reading
"not provided". Text from data and configs stays text: ``escape_markdown`` in Markdown, jinja2's autoescaping
in HTML. Never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audit.results import atomic_write_text, decode_number, load_results, resolve_results_path
from reports.headline import headline_view, verdict_view
from reports.text import escape_markdown
from reports.views import all_findings, format_value, run_summary

NOT_PROVIDED = "not provided"
CARD_FORMATS = ("md", "html")
SECTION_TITLES: tuple[tuple[str, str], ...] = (
    ("model-details", "Model details"),
    ("intended-use", "Intended use"),
    ("factors", "Factors"),
    ("metrics", "Metrics"),
    ("evaluation-data", "Evaluation data"),
    ("quantitative-analyses", "Quantitative analyses"),
    ("ethical-considerations", "Ethical considerations"),
    ("caveats", "Caveats and recommendations"),
)
GROUP_COLUMNS = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
FAITHFULNESS_ROWS = 5
Block = dict[str, Any]


def _fields(*rows: tuple[str, Any]) -> Block:
    """Label / text rows; None or empty reads "not provided" (``provided`` False, so renderers can mute it)."""
    out = []
    for label, value in rows:
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) if value else None
        provided = value is not None and str(value).strip() != ""
        out.append({"label": label, "text": str(value) if provided else NOT_PROVIDED, "provided": provided})
    return {"kind": "fields", "rows": out}


def _text(text: str) -> Block:
    return {"kind": "text", "text": text}


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str | None = None) -> Block:
    return {"kind": "table", "title": title, "columns": list(columns),
            "rows": [[c if isinstance(c, str) else format_value(c) for c in row] for row in rows], "note": note}


def _interval(metrics: Mapping[str, Any], name: str) -> str | None:
    low, high = metrics.get(f"{name}.ci_low"), metrics.get(f"{name}.ci_high")
    if low is None or high is None:
        return None
    return f"[{format_value(decode_number(low))}, {format_value(decode_number(high))}]"


def _all_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in results.get("sections", {}).values():
        if section.get("status", "ok") == "ok":
            out.update(section.get("metrics", {}))
    return out


def _section_table(results: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any] | None:
    data = results.get("sections", {}).get(section, {})
    if data.get("status", "ok") != "ok":
        return None
    return next((t for t in data.get("tables", []) if t.get("name") == name), None)


# -- the verdict, with waivers and ungated findings when the record has them -----------------------------


def verdict_lines(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The verdict as the card states it: ``label``, ``summary`` (one line), ``waivers`` and ``ungated``.

    Reads the stored record defensively: checks may be ``waived`` with a ``waiver`` {reason, by, until}, a
    top-level ``waivers`` list (each with a ``state``) and ``ungated_findings`` {severity: count} may be absent.
    """
    view = verdict_view(results, run_dir)
    stored = results.get("verdict")
    record: Mapping[str, Any] = stored if isinstance(stored, Mapping) else {}
    checks = [c for c in record.get("checks", []) if isinstance(c, Mapping)]
    waivers = []
    for check in checks:
        waiver = check.get("waiver")
        if check.get("status") == "waived" and isinstance(waiver, Mapping):
            waivers.append({"check": str(check.get("name", "")), "reason": str(waiver.get("reason", "")),
                            "by": str(waiver.get("by", "")), "until": str(waiver.get("until", "")),
                            "state": "active"})
    listed = {w["check"] for w in waivers}
    for waiver in record.get("waivers", []) or []:
        if not isinstance(waiver, Mapping):
            continue
        name = str(waiver.get("check") or waiver.get("finding") or waiver.get("metric") or "")
        if name in listed and waiver.get("state", "active") == "active":
            continue
        waivers.append({"check": name, "reason": str(waiver.get("reason", "")), "by": str(waiver.get("by", "")),
                        "until": str(waiver.get("until", "")), "state": str(waiver.get("state", "active"))})
    ungated_raw = record.get("ungated_findings")
    ungated = {str(k): int(v) for k, v in ungated_raw.items() if isinstance(v, int) and v > 0} \
        if isinstance(ungated_raw, Mapping) else {}
    summary = view["label"]
    if view["n_checks"]:
        summary += f": {view['n_passed']} of {view['n_checks']} checks passed"
        n_waived = sum(1 for c in checks if c.get("status") == "waived")
        if n_waived:
            summary += f", {n_waived} waived"
    if ungated:
        summary += "; " + ", ".join(f"{n} {severity}" for severity, n in ungated.items()) + \
            f" finding{'s' if sum(ungated.values()) > 1 else ''} not gated"
    return {"status": view["status"], "label": view["label"], "summary": summary, "text": view["text"],
            "failing": view["failing"], "checks": view["checks"], "waivers": waivers, "ungated": ungated}


# -- sections -------------------------------------------------------------------------------------------


def _model_details(results: Mapping[str, Any], card: Mapping[str, Any], summary: Mapping[str, Any]) -> list[Block]:
    manifest = results.get("manifest", {})
    config_model = manifest.get("config", {}).get("model", {}) or {}
    git = manifest.get("git") or {}
    version = config_model.get("version") or (git.get("commit", "")[:12] if isinstance(git, Mapping) else None)
    model = summary["model"]
    return [_fields(("Name", config_model.get("name") or summary["title"]), ("Version", version),
                    ("Description", card.get("description")), ("Owners", card.get("owners")),
                    ("License", card.get("license")), ("References", card.get("references"))),
            _fields(("Model", model["source"]), ("Kind", model["kind"]), ("Output", model["output_kind"]),
                    ("Classes", model["num_classes"]), ("Parameters", model["num_parameters"]),
                    ("Weights SHA-256", model["sha256"]),
                    ("Audited", f"run {manifest.get('run_id') or '-'} on {summary['created_at']} by nnaudit "
                                f"{summary['nnaudit_version']} (seed {summary['seed']}, status {summary['status']})"))]


def _metrics_section(results: Mapping[str, Any], verdict: Mapping[str, Any]) -> list[Block]:
    sections = ", ".join(results.get("sections", {})) or "none"
    blocks = [_text(f"Sections audited: {sections}. Intervals are 95% bootstrap intervals where the audit "
                    "computed them; a number without one had none computed."),
              _fields(("Verdict", verdict["summary"]), ("Meaning", verdict["text"]))]
    checks = verdict["checks"]
    if checks:
        blocks.append(_table("Decision thresholds (the run's gate policy)", ["check", "status", "value"],
                             [[c["name"], str(c["status"]).upper(), c["value_text"] or "-"] for c in checks]))
    if verdict["waivers"]:
        blocks.append(_table("Waivers in force", ["check", "state", "reason", "by", "until"],
                             [[w["check"], w["state"], w["reason"], w["by"], w["until"]] for w in verdict["waivers"]]))
    return blocks


def _evaluation_data(summary: Mapping[str, Any], card: Mapping[str, Any], config: Mapping[str, Any]) -> list[Block]:
    data = summary["data"]
    data_config = config.get("data", {}) or {}
    return [_fields(("Dataset", data["name"]), ("Samples", data["n_samples"]), ("Modality", data["modality"]),
                    ("Input shape", data["input_shape_text"]), ("Classes", data["class_names"]),
                    ("Sensitive attributes", data["sensitive"]), ("Split", data_config.get("split")),
                    ("Data SHA-256", data["sha256"]), ("Why this data, preprocessing", card.get("evaluation_data")),
                    ("Training data", card.get("training_data")))]


def _robustness_blocks(results: Mapping[str, Any], headline: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if headline["robustness"]:
        reliable = headline["reliability"]
        note = None if reliable is None else (reliable.get("reason") or f"numbers {reliable['text']}")
        blocks.append(_table("Robustness: worst-case robust accuracy over the attacks run", ["norm", "eps",
                             "robust accuracy"], [[r["norm"], r["eps"], r["text"]] for r in headline["robustness"]],
                             note))
    defenses = _section_table(results, "defenses", "summary")
    if defenses is not None:
        blocks.append(_table("Defenses, each attacked naively and adaptively", defenses.get("columns", []),
                             defenses.get("rows", []), defenses.get("description")))
    return blocks


def _explanation_blocks(results: Mapping[str, Any]) -> list[Block]:
    table = _section_table(results, "explanations", "faithfulness")
    if table is None:
        return []
    columns = list(table.get("columns", []))
    keep = [i for i, c in enumerate(columns) if c in ("rank", "method", "deletion AUC", "95% interval")][:4]
    rows = [[row[i] for i in keep] for row in table.get("rows", [])[:FAITHFULNESS_ROWS]]
    return [_table("Explanation faithfulness (deletion AUC, lower is better)", [columns[i] for i in keep], rows,
                   table.get("title"))]


def _fairness_blocks(results: Mapping[str, Any], headline: Mapping[str, Any]) -> list[Block]:
    section = results.get("sections", {}).get("fairness", {})
    if section.get("status", "ok") != "ok":
        return []
    blocks: list[Block] = []
    for table in section.get("tables", []):
        if not str(table.get("name", "")).startswith("groups_"):
            continue
        columns = list(table.get("columns", []))
        index = {c: i for i, c in enumerate(columns)}
        shown = [c for c in GROUP_COLUMNS if c in index]
        rows = []
        for row in table.get("rows", []):
            cells = [row[index["group"]] if "group" in index else "", row[index["count"]] if "count" in index else ""]
            for column in shown:
                value, low, high = (row[index[k]] if k in index else None
                                    for k in (column, f"{column}_ci_low", f"{column}_ci_high"))
                text = format_value(value)
                if low is not None and high is not None:
                    text += f" [{format_value(low)}, {format_value(high)}]"
                cells.append(text)
            rows.append(cells)
        blocks.append(_table(str(table.get("title", table.get("name"))), ["group", "rows",
                             *(c.replace("_", " ") for c in shown)], rows))
    worst = headline.get("disparity")
    if worst is not None:
        blocks.append(_fields(("Worst disparity", f"{worst['grouping']}: {worst['label']} {worst['text']}"
                                                  + (f" (95% CI {worst['interval_text']})" if worst["interval_text"]
                                                     else "")
                                                  + (", flagged" if worst["flagged"] else ""))))
    return blocks


def _quantitative(results: Mapping[str, Any], headline: Mapping[str, Any]) -> list[Block]:
    metrics = _all_metrics(results)
    rows = [[card["label"], card["text"], _interval(metrics, card["metric"]) or "none computed"]
            for card in headline["cards"]]
    faithful = headline.get("faithful")
    if faithful is not None:
        name = f"explanations.{faithful['methods'][0]}.deletion_auc"
        rows.append([f"Most faithful explanation: {faithful['text']} (deletion AUC)",
                     faithful["deletion_auc_text"] or "-", _interval(metrics, name) or "none computed"])
    blocks = [_table("Headline numbers", ["measure", "value", "95% interval"], rows)] if rows else []
    blocks += _robustness_blocks(results, headline) + _explanation_blocks(results) + \
        _fairness_blocks(results, headline)
    counts = headline["finding_counts"]
    blocks.append(_fields(("Findings", ", ".join(f"{n} {severity}" for severity, n in counts.items()))))
    return blocks or [_text("The audit computed no quantitative analyses.")]


def _factors(card: Mapping[str, Any], summary: Mapping[str, Any]) -> list[Block]:
    sensitive = summary["data"]["sensitive"]
    audited = (f"Groups audited: {', '.join(sensitive)} (see fairness by group under Quantitative analyses)."
               if sensitive else "No sensitive attribute was given to the audit: performance across groups was "
               "not measured.")
    return [_fields(("Relevant factors", card.get("factors"))), _text(audited)]


def _caveats(results: Mapping[str, Any], card: Mapping[str, Any], verdict: Mapping[str, Any]) -> list[Block]:
    blocks = [_fields(("Caveats and recommendations", card.get("caveats")))]
    serious = all_findings(results, min_severity="high")
    if serious:
        blocks.append(_table("High and critical findings of the audit", ["severity", "section", "finding"],
                             [[f["severity"].upper(), f["section"] or "", f["message"]] for f in serious]))
    if verdict["ungated"]:
        blocks.append(_text("Not covered by the gate policy: " + ", ".join(
            f"{n} {severity}" for severity, n in verdict["ungated"].items()) + " finding(s)."))
    return blocks


def card_view(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The whole card: ``title``, ``verdict`` (see ``verdict_lines``) and ``sections`` (id, title, blocks)."""
    config = results.get("manifest", {}).get("config", {}) or {}
    card: Mapping[str, Any] = config.get("card") or {}
    summary = run_summary(results)
    headline = headline_view(results)
    verdict = verdict_lines(results, run_dir)
    blocks = {
        "model-details": _model_details(results, card, summary),
        "intended-use": [_fields(("Primary intended uses", card.get("intended_use")),
                                 ("Primary intended users", card.get("intended_users")),
                                 ("Out-of-scope uses", card.get("out_of_scope")))],
        "factors": _factors(card, summary),
        "metrics": _metrics_section(results, verdict),
        "evaluation-data": _evaluation_data(summary, card, config),
        "quantitative-analyses": _quantitative(results, headline),
        "ethical-considerations": [_fields(("Ethical considerations", card.get("ethical_considerations")))],
        "caveats": _caveats(results, card, verdict),
    }
    return {"title": summary["title"], "verdict": verdict,
            "sections": [{"id": key, "title": title, "blocks": blocks[key]} for key, title in SECTION_TITLES]}


# -- rendering ------------------------------------------------------------------------------------------


def render_markdown(view: Mapping[str, Any]) -> str:
    """The card as Markdown; every value from results or config through ``escape_markdown``."""
    lines = [f"# Model card: {escape_markdown(view['title'])}", "",
             f"**Verdict:** {escape_markdown(view['verdict']['summary'])}", ""]
    for section in view["sections"]:
        lines += [f"## {section['title']}", ""]
        for block in section["blocks"]:
            if block["kind"] == "fields":
                lines += [f"- **{row['label']}:** " + (escape_markdown(row["text"]) if row["provided"]
                                                       else f"_{NOT_PROVIDED}_") for row in block["rows"]]
            elif block["kind"] == "text":
                lines.append(escape_markdown(block["text"]))
            else:
                lines += [f"**{escape_markdown(block['title'])}**", "",
                          "| " + " | ".join(escape_markdown(c) for c in block["columns"]) + " |",
                          "|" + "---|" * len(block["columns"])]
                lines += ["| " + " | ".join(escape_markdown(c) or " " for c in row) + " |" for row in block["rows"]]
                if block.get("note"):
                    lines += ["", f"_{escape_markdown(block['note'])}_"]
            lines.append("")
    lines.append("_Written by `nnaudit card` from the audit's results.json; sections after Mitchell et al. 2019, "
                 "Model Cards for Model Reporting._")
    return "\n".join(lines) + "\n"


def render_card_html(view: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML page (no script, no external URL), every value autoescaped."""
    from reports.html import _environment

    text: str = _environment().get_template("card.html.j2").render(view=view, not_provided=NOT_PROVIDED)
    return text


def render_card(results: Mapping[str, Any], *, fmt: str = "md", run_dir: str | os.PathLike[str] | None = None) -> str:
    if fmt not in CARD_FORMATS:
        raise ValueError(f"card format must be one of {', '.join(CARD_FORMATS)}, got {fmt!r}")
    view = card_view(results, run_dir)
    return render_markdown(view) if fmt == "md" else render_card_html(view)


def write_card(run_dir: str | os.PathLike[str], *, fmt: str = "md", out: str | os.PathLike[str] | None = None) -> Path:
    """Render ``run_dir/results.json`` to ``run_dir/model_card.{md,html}`` (or ``out``), atomically."""
    results_file = resolve_results_path(run_dir)
    results = load_results(results_file, validate=True)
    target = Path(out) if out is not None else results_file.parent / f"model_card.{fmt}"
    atomic_write_text(target, render_card(results, fmt=fmt, run_dir=results_file.parent))
    return target
