"""Headline cards of regression and multi-label runs (``manifest.data.task``): what replaces clean and balanced
accuracy, which such a model does not have. Plain data for ``reports.headline.headline_view``; no HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.results import decode_number
from reports.views import format_value

# (label, metric) per task, in the order the card shows them
CARDS: dict[str, tuple[tuple[str, str], ...]] = {
    "regression": (("RMSE", "performance.rmse"), ("MAE", "performance.mae"), ("R²", "performance.r2")),
    "multilabel": (("Subset accuracy", "performance.subset_accuracy"), ("Micro F1", "performance.micro_f1"),
                   ("Macro F1", "performance.macro_f1"), ("Hamming loss", "performance.hamming_loss")),
}

# the robustness card per task: (metric at the largest eps of each norm, label)
ROBUSTNESS_CARD = {"regression": ("adversarial_mae", "Adversarial MAE"),
                   "multilabel": ("any_label_flip_rate", "Any-label flip rate")}


def task_of(results: Mapping[str, Any]) -> str:
    """The run's task (runs written before tasks existed are classification)."""
    return str(results.get("manifest", {}).get("data", {}).get("task") or "classification")


def task_cards(results: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The headline cards of a regression or multi-label run; None for a classifier (its accuracy cards)."""
    task = task_of(results)
    if task not in CARDS:
        return None
    sections = results.get("sections", {})
    cards = []
    for label, metric in CARDS[task]:
        cards.append(_card(label, _number(sections, metric), metric))
    robustness = sections.get("robustness", {})
    if robustness.get("status") == "ok":
        cards += _robustness(robustness.get("metrics", {}), *ROBUSTNESS_CARD[task])
    return cards


def _robustness(metrics: Mapping[str, Any], quantity: str, label: str) -> list[dict[str, Any]]:
    """Per norm, ``quantity`` at the largest eps (``robustness.<norm>.eps=<e>.<quantity>``)."""
    largest: dict[str, tuple[float, str]] = {}
    suffix = f".{quantity}"
    for name in metrics:
        parts = name.split(".")
        if name.endswith(suffix) and len(parts) >= 4 and parts[2].startswith("eps="):
            eps_text = name[len(f"robustness.{parts[1]}.eps="):-len(suffix)]
            try:
                eps = float(eps_text)
            except ValueError:
                continue
            if parts[1] not in largest or eps > largest[parts[1]][0]:
                largest[parts[1]] = (eps, name)
    return [_card(f"{label} ({norm}, eps {eps:g})", decode_number(metrics[name]), name)
            for norm, (eps, name) in sorted(largest.items())]


def _number(sections: Mapping[str, Any], metric: str) -> float | None:
    section = sections.get(metric.split(".")[0], {})
    if section.get("status", "ok") != "ok":
        return None
    return decode_number(section.get("metrics", {}).get(metric))


def _card(label: str, value: float | None, metric: str) -> dict[str, Any]:
    return {"label": label, "value": value, "text": format_value(value), "detail": None, "metric": metric,
            "tone": "plain"}
