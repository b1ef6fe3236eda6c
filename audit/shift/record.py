"""What the corruptions section records besides metrics: figure data (drawn by ``reports/``), tables, and the
comparison with the robustness section. Pure functions of the section's numbers; the image grid writes an NPZ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audit.keys import parse_metric_key
from audit.shift.catalog import FAMILIES, TABULAR_FAMILY, family

Accuracy = Mapping[str, Mapping[int, float]]  # corruption -> severity -> accuracy


def mean_over_severities(accuracy: Accuracy) -> dict[str, float]:
    return {name: float(np.mean([by[s] for s in sorted(by)])) for name, by in accuracy.items()}


def family_figure(accuracy: Accuracy, clean: float, severities: list[int]) -> dict[str, Any]:
    """Accuracy vs severity, one line panel per family (noise, blur, weather, digital; or tabular), severity 0 being
    the clean accuracy: a small_multiples spec of line panels on a shared 0..1 axis."""
    panels = []
    groups: dict[str, list[str]] = {}
    for name in accuracy:
        groups.setdefault(family(name), []).append(name)
    order = [*FAMILIES, TABULAR_FAMILY]
    for fam in sorted(groups, key=order.index):
        series = [{"label": name, "x": [0, *severities], "y": [clean, *[accuracy[name][s] for s in severities]]}
                  for name in groups[fam]]
        panels.append({"kind": "line", "title": fam, "series": series, "xlabel": "severity (0: clean)",
                       "ylabel": "accuracy", "ylim": [0.0, 1.0]})
    return {"name": "accuracy_vs_severity", "title": "Accuracy vs corruption severity, by family",
            "kind": "small_multiples", "columns": min(4, len(panels)), "panels": panels}


def heatmap_figure(accuracy: Accuracy, severities: list[int]) -> dict[str, Any]:
    names = list(accuracy)
    return {"name": "corruption_heatmap", "title": "Accuracy by corruption and severity", "kind": "heatmap",
            "matrix": [[accuracy[n][s] for s in severities] for n in names],
            "x_labels": [f"severity {s}" for s in severities], "y_labels": names,
            "xlabel": "severity", "ylabel": "corruption"}


def accuracy_rows(accuracy: Accuracy, severities: list[int], clean: float, ce: Mapping[str, float] | None,
                  relative_ce: Mapping[str, float] | None) -> list[list[Any]]:
    means = mean_over_severities(accuracy)
    rows = []
    for name, by in accuracy.items():
        row: list[Any] = [name, family(name), *[by[s] for s in severities], means[name], clean - means[name]]
        if ce is not None and relative_ce is not None:
            row += [ce[name], relative_ce[name]]
        rows.append(row)
    return rows


def grid_figure(path: Path, rel: str, *, clean: np.ndarray, corrupted: Mapping[str, np.ndarray],
                captions: Mapping[str, str], clean_caption: str, bounds: tuple[float, float], severity: int,
                title: str) -> dict[str, Any]:
    """One sample under each corruption at ``severity``: a row per family, the clean image first in each row,
    blank (white) tiles where a family has fewer corruptions. Tiles go to ``path`` (NPZ)."""
    rows: list[list[str]] = []
    for fam, members in FAMILIES.items():
        chosen = [n for n in members if n in corrupted]
        if chosen:
            rows.append([fam, *chosen])
    width = max(len(r) for r in rows)  # family label slot = the clean tile
    blank = np.full_like(clean, bounds[1])
    tiles = np.stack([np.stack([clean, *[corrupted[n] for n in r[1:]], *[blank] * (width - len(r))])
                      for r in rows]).astype(np.float32)
    labels = [[clean_caption, *[f"{n}\n{captions[n]}" for n in r[1:]], *[""] * (width - len(r))] for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, tiles=tiles)
    return {"name": "corruption_examples", "title": title, "kind": "image_grid", "artifact": rel, "array": "tiles",
            "row_labels": [r[0] for r in rows], "column_labels": ["clean", *[""] * (width - 1)],
            "tile_labels": labels, "styles": ["image"] * len(rows), "styles_by": "row",
            "bounds": [float(bounds[0]), float(bounds[1])], "severity": severity}


def robust_accuracies(results: Mapping[str, Any]) -> list[tuple[str, str, str, float]]:
    """(section, norm, eps, worst-case robust accuracy) from every robustness section that ran before."""
    found = []
    for section, result in results.items():
        if getattr(result, "plugin", None) != "robustness" or getattr(result, "status", "") != "ok":
            continue
        for metric, value in result.metrics.items():
            match = parse_metric_key(metric).matches(section, "worst_case", None, "eps=", "robust_accuracy")
            if match and value is not None and math.isfinite(value):
                found.append((section, match["2"], match["eps"], float(value)))
    return sorted(found, key=lambda r: (r[0], r[1], float(r[2])))


def robustness_rows(robust: list[tuple[str, str, str, float]], mean_corrupted: float, worst: tuple[str, float],
                    clean: float) -> list[list[Any]]:
    return [[f"{section}: worst case {norm} eps={eps}", value, mean_corrupted, worst[0], worst[1], clean,
             "yes" if mean_corrupted < value else "no"] for section, norm, eps, value in robust]
