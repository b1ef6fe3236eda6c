"""What the ``ood`` section records besides metrics: figure data (drawn by ``reports/``) and table rows. Pure
functions of the section's numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from audit.shift.calibration import CalibrationSummary
from audit.shift.ood_metrics import DetectionMetrics, histogram, roc_points, thin_curve

Metrics = Mapping[str, Mapping[str, DetectionMetrics]]  # OOD set -> detector -> metrics


def summary(metrics: Metrics, detectors: list[str]) -> dict[str, dict[str, float]]:
    """Per detector, each metric's unweighted mean over the OOD sets."""
    out: dict[str, dict[str, float]] = {}
    for det in detectors:
        rows = [metrics[s][det].as_dict() for s in metrics if det in metrics[s]]
        out[det] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
    return out


def metric_rows(metrics: Metrics, confident: Mapping[str, float]) -> list[list[Any]]:
    return [[name, det, m.auroc, m.aupr_in, m.aupr_out, m.fpr_at_95_tpr, confident[name]]
            for name, by in metrics.items() for det, m in by.items()]


def roc_figure(scores: Mapping[str, Mapping[str, np.ndarray]], detectors: list[str]) -> dict[str, Any]:
    """One ROC panel per OOD set (in-distribution positive), a curve per detector."""
    panels = []
    for name, by in scores.items():
        if name == "in":
            continue
        series = []
        for det in detectors:
            fpr, tpr = roc_points(scores["in"][det], by[det])
            x, y = thin_curve(fpr, tpr)
            series.append({"label": det, "x": x, "y": y, "style": "-"})
        panels.append({"kind": "line", "title": name, "series": series, "xlabel": "FPR (OOD accepted)",
                       "ylabel": "TPR (in-distribution accepted)", "ylim": [0.0, 1.0]})
    return {"name": "ood_roc", "title": "ROC curves: in-distribution vs each OOD set", "kind": "small_multiples",
            "columns": min(4, len(panels)), "panels": panels}


def histogram_figure(scores: Mapping[str, Mapping[str, np.ndarray]], detector: str) -> dict[str, Any]:
    """The ``detector``'s outlier scores, in-distribution against each OOD set: one histogram panel per set."""
    panels = []
    for name, by in scores.items():
        if name == "in":
            continue
        hist = histogram(scores["in"][detector], by[detector])
        panels.append({"kind": "histogram", "title": name, "edges": hist["edges"], "xlabel": f"{detector} score",
                       "ylabel": "density", "series": [{"label": "in-distribution", "y": hist["in"]},
                                                       {"label": "OOD", "y": hist["out"]}]})
    return {"name": "ood_histograms", "title": f"{detector} outlier scores: in-distribution vs OOD (higher = more "
            "out-of-distribution)", "kind": "small_multiples", "columns": min(4, len(panels)), "panels": panels}


def reliability_figure(clean: CalibrationSummary, shifted: Mapping[int, CalibrationSummary],
                       temperature: float) -> dict[str, Any]:
    def points(rows: list[list[float]]) -> tuple[list[float], list[float]]:
        filled = [r for r in rows if r[2] > 0]
        return [r[3] for r in filled], [r[4] for r in filled]

    series = []
    for label, rows in (("clean", clean.rows), (f"clean, T = {temperature:.2f}", clean.rows_scaled)):
        x, y = points(rows)
        series.append({"label": f"{label} (ECE {clean.ece if rows is clean.rows else clean.ece_scaled:.3f})",
                       "x": x, "y": y, "style": "o-"})
    keys = list(shifted)
    shown = sorted({keys[0], keys[len(keys) // 2], keys[-1]}) if keys else []  # lowest, middle, highest severity
    for s in shown:
        cal = shifted[s]
        x, y = points(cal.rows)
        series.append({"label": f"corrupted, severity {s} (ECE {cal.ece:.3f})", "x": x, "y": y, "style": "o-"})
    return {"name": "ood_reliability", "title": "Reliability diagrams: clean, temperature-scaled, under corruption "
            "(lowest, middle and highest severity)",
            "kind": "line", "xlabel": "confidence", "ylabel": "accuracy", "diagonal": True, "series": series}


def ece_figure(clean: CalibrationSummary, shifted: Mapping[int, CalibrationSummary]) -> dict[str, Any]:
    xs = [0, *shifted]
    return {"name": "ood_ece_vs_severity", "title": "Expected calibration error vs corruption severity",
            "kind": "line", "xlabel": "severity (0: clean)", "ylabel": "ECE",
            "series": [{"label": "before temperature scaling", "x": xs,
                        "y": [clean.ece, *[c.ece for c in shifted.values()]]},
                       {"label": "after temperature scaling", "x": xs,
                        "y": [clean.ece_scaled, *[c.ece_scaled for c in shifted.values()]]}]}


def calibration_rows(clean: CalibrationSummary, shifted: Mapping[int, CalibrationSummary]) -> list[list[Any]]:
    rows = [["clean", clean.accuracy, clean.ece, clean.ece_scaled, clean.brier, clean.brier_scaled, clean.nll,
             clean.nll_scaled]]
    rows += [[f"severity {s}", c.accuracy, c.ece, c.ece_scaled, c.brier, c.brier_scaled, c.nll, c.nll_scaled]
             for s, c in shifted.items()]
    return rows
