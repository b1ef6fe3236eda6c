"""Realistic, schema-valid results dicts and run directories for the reports, gate and app tests.

Nothing here runs a model: the numbers are made up but shaped like a real audit (several
sections, every figure kind, an errored and a skipped section, a class name holding markup).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from audit.results import ARTIFACTS_DIR, RESULTS_FILE, SCHEMA_VERSION

XSS = "<script>alert(1)</script>"
CLASS_NAMES = ["cat", "dog", XSS]
IMAGE_ARTIFACT = f"{ARTIFACTS_DIR}/explain/saliency_0.png"


def _manifest(title: str, seed: int) -> dict[str, Any]:
    return {
        "nnaudit_version": "0.1.0",
        "created_at": "2025-01-02T03:04:05Z",
        "finished_at": "2025-01-02T03:04:17Z",
        "status": "complete",
        "title": title,
        "python": "3.11.7",
        "platform": "Linux-x86_64",
        "libraries": {"torch": "2.3.0", "numpy": "1.26.4", "captum": None},
        "config": {"model": {"factory": "tests.zoo:mlp"}, "data": {"name": "toy"}, "seed": seed},
        "model": {
            "kind": "torch.nn.Module",
            "source": "tests.zoo:mlp",
            "sha256": "ab" * 32,
            "num_classes": 3,
            "output_kind": "logits",
            "has_gradients": True,
            "input_bounds": [0.0, 1.0],
            "num_parameters": 12_345,
        },
        "data": {
            "name": "toy",
            "sha256": "cd" * 32,
            "n_samples": 300,
            "modality": "tabular",
            "input_shape": [4],
            "class_names": list(CLASS_NAMES),
            "feature_names": ["f0", "f1", "f2", "f3"],
            "sensitive": ["group"],
        },
        "device": "cpu",
        "seed": seed,
        "timings": {"load": 0.5, "performance": 0.2, "imbalance": 0.3, "robustness": 4.0, "total": 12.0},
    }


def _section(name: str, title: str, **fields: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": name, "plugin": f"builtin.{name}", "title": title, "status": "ok", "params": {},
        "metrics": {}, "tables": [], "figures": [], "findings": [], "artifacts": {}, "notes": [],
        "duration_s": 0.25, "error": None,
    }
    section.update(fields)
    return section


def _performance(accuracy: float) -> dict[str, Any]:
    matrix = [[90, 5, 5], [10, 80, 10], [3, 7, 90]]
    return _section(
        "performance", "Performance",
        params={"top_k": 1},
        metrics={"performance.accuracy": accuracy, "performance.error_rate": round(1 - accuracy, 6),
                 "performance.loss": 0.31, "performance.n_samples": 300},
        tables=[{"name": "confusion_matrix", "title": "Confusion matrix",
                 "columns": ["true \\ predicted", *CLASS_NAMES],
                 "rows": [[CLASS_NAMES[i], *matrix[i]] for i in range(3)]}],
        figures=[{"name": "confusion_matrix", "title": "Confusion matrix", "kind": "heatmap", "matrix": matrix,
                  "x_labels": list(CLASS_NAMES), "y_labels": list(CLASS_NAMES),
                  "xlabel": "predicted", "ylabel": "true"}],
        findings=[{"severity": "info", "message": "accuracy beats the majority baseline",
                   "code": "performance.baseline", "metric": "performance.accuracy", "value": accuracy}],
    )


def _imbalance() -> dict[str, Any]:
    return _section(
        "imbalance", "Class imbalance and calibration",
        metrics={"imbalance.balanced_accuracy": 0.84, "imbalance.ece": 0.07, "imbalance.roc_auc_ovr": None},
        tables=[{"name": "per_class", "title": "Per-class metrics", "description": "precision and recall per class",
                 "columns": ["class", "precision", "recall", "support", "seen"],
                 "rows": [["cat", 0.87, 0.9, 100, True], ["dog", 0.87, 0.8, 100, True],
                          [XSS, 0.86, 0.9, 100, False]]}],
        figures=[
            {"name": "per_class_recall", "title": "Recall per class", "kind": "bar", "xlabel": "class",
             "ylabel": "recall",
             "series": [{"label": "recall", "x": list(CLASS_NAMES), "y": [0.9, 0.8, 0.9],
                         "yerr_low": [0.05, 0.06, 0.05], "yerr_high": [0.04, 0.05, 0.04]},
                        {"label": "precision", "x": list(CLASS_NAMES), "y": [0.87, 0.87, None]}]},
            {"name": "reliability", "title": "Reliability diagram", "kind": "line", "xlabel": "confidence",
             "ylabel": "accuracy", "diagonal": True,
             "series": [{"label": "model", "x": [0.35, 0.55, 0.75, 0.95], "y": [0.3, 0.5, 0.8, 0.97],
                         "style": "o-"}]},
        ],
        findings=[
            {"severity": "medium", "message": f"recall of class '{XSS}' is low", "code": "imbalance.recall_gap",
             "metric": "imbalance.balanced_accuracy", "value": 0.84},
            {"severity": "low", "message": "expected calibration error 0.070", "code": "imbalance.calibration"},
        ],
        notes=["ROC AUC is undefined for this toy data"],
    )


def _robustness(robust: float) -> dict[str, Any]:
    eps = [0.0, 0.05, 0.1, 0.2]
    return _section(
        "robustness", "Adversarial robustness",
        params={"attack": "pgd", "norm": "linf", "eps": eps},
        metrics={"robustness.pgd.linf.eps=0.1.robust_accuracy": robust,
                 "robustness.pgd.linf.eps=0.2.robust_accuracy": robust / 2},
        figures=[{"name": "robustness_curve", "title": "Robust accuracy vs. epsilon", "kind": "line",
                  "xlabel": "epsilon", "ylabel": "robust accuracy",
                  "series": [{"label": "PGD L-inf", "x": eps, "y": [0.9, 0.7, robust, robust / 2],
                              "yerr_low": [0.02, 0.03, 0.03, 0.02], "yerr_high": [0.02, 0.03, 0.03, 0.02]},
                             {"label": "FGSM", "x": eps, "y": [0.9, 0.75, 0.6, None]}]}],
        findings=[{"severity": "high", "message": "robust accuracy collapses at eps=0.2",
                   "code": "robustness.collapse", "metric": "robustness.pgd.linf.eps=0.2.robust_accuracy",
                   "value": robust / 2}],
        artifacts={"adversarial_examples": f"{ARTIFACTS_DIR}/robustness/adv.npz"},
        duration_s=4.0,
    )


def _explain() -> dict[str, Any]:
    return _section(
        "explain", "Explanations",
        metrics={"explain.saliency.faithfulness": 0.42},
        figures=[{"name": "saliency_0", "title": "Saliency, sample 0", "kind": "image",
                  "artifact": IMAGE_ARTIFACT}],
        artifacts={"saliency_0": IMAGE_ARTIFACT},
    )


def _fairness_error() -> dict[str, Any]:
    return _section(
        "fairness", "Fairness", status="error",
        error={"type": "DataError", "message": "sensitive attribute 'group' has a single value",
               "traceback": "Traceback (most recent call last):\n  File \"fairness.py\", line 3\nDataError: boom"},
    )


def _skipped() -> dict[str, Any]:
    return _section("shap", "SHAP values", status="skipped", notes=["shap is not installed"], duration_s=0.0)


def make_results(*, title: str = "Toy MLP audit", accuracy: float = 0.9, robust: float = 0.55,
                 seed: int = 0, with_error: bool = True) -> dict[str, Any]:
    """A valid results dict of a finished run: ``failed`` with its errored section, ``complete`` without it."""
    sections = [_performance(accuracy), _imbalance(), _robustness(robust), _explain()]
    if with_error:
        sections.append(_fairness_error())
    sections.append(_skipped())
    manifest = _manifest(title, seed)
    manifest["status"] = "failed" if with_error else "complete"
    manifest["config"]["sections"] = {s["name"]: {"plugin": s["plugin"], "enabled": True, "params": {}}
                                      for s in sections}
    return {
        "schema_version": SCHEMA_VERSION,
        "manifest": manifest,
        "sections": {s["name"]: s for s in sections},
    }


def unfinished_results(status: str, *, never_ran: tuple[str, ...] = ("fairness", "shap"),
                       in_flight: str | None = "fairness", interrupted_by: str | None = None) -> dict[str, Any]:
    """A run that did not finish: the sections in ``never_ran`` are planned (in the config) but absent."""
    data = make_results()
    for name in never_ran:
        data["sections"].pop(name, None)
    data["manifest"].update(status=status, finished_at=None, current_section=in_flight)
    if interrupted_by is not None:
        data["manifest"]["interrupted_by"] = interrupted_by
    return data


def minimal_results() -> dict[str, Any]:
    """A valid run with no sections at all."""
    data = make_results()
    data["sections"] = {}
    return data


def write_png(path: Path) -> Path:
    """A small real PNG (a gradient with a bright square), drawn with matplotlib."""
    import numpy as np
    from matplotlib import image as mpimg

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    pixels[4:8, 9:13] = 1.0
    mpimg.imsave(path, pixels, cmap="magma", format="png")
    return path


def write_run(root: Path, name: str = "run1", results: dict[str, Any] | None = None) -> Path:
    """A run directory ``root/name`` with results.json and the image artifact."""
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    data = copy.deepcopy(results) if results is not None else make_results()
    (run_dir / RESULTS_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")
    write_png(run_dir / IMAGE_ARTIFACT)
    return run_dir


# -- a review fixture: every figure kind, a carried policy, injection strings everywhere ----------

INJECTIONS = {
    "script": "<script>alert(1)</script>",
    "markdown_image": "![](http://host/x.png)",
    "cdata_end": "]]>",
    "html_image": "<img src=x onerror=alert(1)>",
    "markdown_link": "[click](http://host/)",
}
GROUP_NAMES = [INJECTIONS["markdown_image"], "b|c *d*"]
FEATURE_NAMES = [INJECTIONS["cdata_end"], INJECTIONS["html_image"], "f2", "f3"]
GRID_ARTIFACT = f"{ARTIFACTS_DIR}/explanations/heatmaps.npz"
REVIEW_TITLE = f"Review {INJECTIONS['markdown_image']} {INJECTIONS['script']}"
REVIEW_POLICY = {"rules": ["performance.accuracy >= 0.5", "imbalance.balanced_accuracy >= 0.9",
                           "robustness.reliable == 1"],
                 "max_findings": {"critical": 0}}


def _review_explanations() -> dict[str, Any]:
    tree = [
        {"depth": 0, "leaf": False, "samples": 300, "label": "cat", "feature": FEATURE_NAMES[0], "threshold": 0.5},
        {"depth": 1, "leaf": True, "samples": 180, "label": "cat"},
        {"depth": 1, "leaf": False, "samples": 120, "label": XSS, "feature": FEATURE_NAMES[1], "threshold": 0.25},
        {"depth": 2, "leaf": True, "samples": 70, "label": XSS},
        {"depth": 2, "leaf": True, "samples": 50, "label": "dog"},
    ]
    panel = {"kind": "bar", "horizontal": True, "xlabel": "feature", "ylabel": "share",
             "series": [{"label": g, "x": FEATURE_NAMES[:3], "y": [0.5, 0.3, 0.2]} for g in GROUP_NAMES]}
    return _section(
        "explanations", "Explanations",
        metrics={"explanations.ig.faithfulness_rank": 1, "explanations.saliency.faithfulness_rank": 2,
                 "explanations.ig.deletion_auc": 0.21, "explanations.saliency.deletion_auc": 0.34,
                 "explanations.surrogate.fidelity": 0.875},
        figures=[
            {"name": "heatmaps", "title": f"Attributions {INJECTIONS['script']}", "kind": "image_grid",
             "artifact": GRID_ARTIFACT, "array": "tiles", "column_labels": ["input", "ig", INJECTIONS["html_image"]],
             "row_labels": ["#1", "#2"], "tile_labels": [[f"class {XSS}", "", ""], ["class dog", "", ""]],
             "styles": ["image", "overlay", "signed"], "styles_by": "column", "bounds": [0.0, 1.0]},
            {"name": "surrogate_tree", "title": "Surrogate decision tree", "kind": "tree", "nodes": tree,
             "fidelity": 0.875},
            {"name": "explanation_group", "title": f"Importance share by {INJECTIONS['markdown_image']}",
             "kind": "small_multiples", "columns": 2,
             "panels": [{**panel, "title": "ig"}, {**panel, "title": INJECTIONS["script"]}]},
            {"name": "text_adversarial_examples", "title": "Adversarial texts", "kind": "text_pairs",
             "pairs": [{"caption": f"sample 3 · deepwordbug · label {XSS}",
                        "original": [["The ", 0], [XSS, 1], [" was great", 0]],
                        "adversarial": [["The ", 0], [INJECTIONS["markdown_image"], 1], [" was great", 0]]}]},
            {"name": "token_heatmap", "title": "Token attributions", "kind": "token_heatmap",
             "rows": [{"label": f"sample 3 · layer_ig · {XSS}", "tokens": ["the", XSS, "was", "great"],
                       "values": [0.1, -0.4, 0.0, 0.9]}]},
        ],
        artifacts={"heatmaps": GRID_ARTIFACT},
        notes=[f"surrogate decision tree:\n|--- {FEATURE_NAMES[0]} <= 0.5\n|   |--- class: cat"],
    )


def _review_fairness() -> dict[str, Any]:
    columns = ["grouping", "metric", "value", "ci_low", "ci_high", "enough_rows", "tolerance", "flagged"]
    rows = [["group", "demographic_parity_ratio", 0.72, 0.61, 0.86, 0.72, 0.8, True],
            ["group", "equalized_odds_difference", 0.04, 0.01, 0.09, 0.04, 0.1, False]]
    return _section(
        "fairness", "Fairness",
        metrics={"fairness.group.demographic_parity_ratio": 0.72},
        tables=[{"name": "disparities", "title": "Disparities between groups", "columns": columns, "rows": rows},
                {"name": "groups_group", "title": f"Groups of {INJECTIONS['markdown_link']}",
                 "columns": ["group", "selection_rate", "count"],
                 "rows": [[GROUP_NAMES[0], 0.25, 150], [GROUP_NAMES[1], 0.347, 150]]}],
        findings=[{"severity": "medium", "message": f"selection rate of '{GROUP_NAMES[0]}' is 0.72 of "
                   f"'{GROUP_NAMES[1]}': below the four-fifths rule", "code": "fairness.demographic_parity_ratio",
                   "metric": "fairness.group.demographic_parity_ratio", "value": 0.72},
                  {"severity": "info", "message": "rates rest on fewer than 30 rows for one group",
                   "code": "fairness.small_group"}],
    )


def review_results() -> dict[str, Any]:
    """A finished, gated run with every figure kind and markup in titles, classes, groups and features."""
    data = make_results(title=REVIEW_TITLE, with_error=False)
    sections = data["sections"]
    sections.pop("explain")
    robustness = sections["robustness"]
    robustness["metrics"].update({"robustness.worst_case.linf.eps=0.1.robust_accuracy": 0.55,
                                  "robustness.worst_case.linf.eps=0.2.robust_accuracy": 0.275,
                                  "robustness.reliable": 1.0})
    robustness["figures"][0]["ylim"] = [0.0, 1.0]
    robustness["findings"].append({"severity": "info", "message": "robustness numbers reliable",
                                   "code": "robustness.reliable", "metric": "robustness.reliable", "value": 1.0})
    ordered = {name: sections[name] for name in ("performance", "imbalance", "robustness")}
    ordered["explanations"] = _review_explanations()
    ordered["fairness"] = _review_fairness()
    ordered["shap"] = sections["shap"]
    data["sections"] = ordered
    data["manifest"]["data"]["feature_names"] = list(FEATURE_NAMES)
    data["manifest"]["data"]["sensitive"] = [INJECTIONS["markdown_image"]]
    data["manifest"]["config"]["sections"] = {name: {"plugin": s["plugin"], "enabled": True, "params": {}}
                                              for name, s in ordered.items()}
    data["manifest"]["config"]["gate"] = copy.deepcopy(REVIEW_POLICY)
    from audit.decide.verdict import evaluate_verdict

    data["verdict"] = evaluate_verdict(data, now="2025-01-02T03:04:17+00:00")
    return data


def write_review_run(root: Path, name: str = "review") -> Path:
    """``review_results()`` as a run directory, with the image grid's tiles (NPZ)."""
    import numpy as np

    run_dir = write_run(root, name, review_results())
    tiles = np.zeros((2, 3, 1, 8, 8), dtype=np.float32)
    tiles[:, 0, 0, 2:6, 2:6] = 1.0  # the inputs: a bright square
    tiles[:, 1, 0, 2:6, 2:6] = 0.5  # attributions for, on the square
    tiles[:, 2, 0, :, :4] = -0.25  # and against, on the left half
    (run_dir / GRID_ARTIFACT).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run_dir / GRID_ARTIFACT, tiles=tiles)
    return run_dir
