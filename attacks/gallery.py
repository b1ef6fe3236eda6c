"""Artifacts: a gallery of adversarial images (tiles as NPZ + an image_grid figure spec; reports/ draws it)
and a per-feature perturbation summary (tabular)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


GALLERY_ROWS = ("original", "adversarial", "perturbation")


def gallery_figure(path: Path, rel: str, *, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray,
                   clean_logits: np.ndarray, adv_logits: np.ndarray, class_names: list[str], title: str,
                   name: str, bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Save the gallery's tiles to ``path`` (NPZ) and return its ``image_grid`` figure spec.

    Rows: the original ("true" label; the model's confidence and prediction), the adversarial
    example ("now": its prediction and confidence), the perturbation (diverging colours, its largest
    component). One column per example. ``reports/`` draws it, tiles at full resolution.
    """
    p_clean, p_adv = softmax(clean_logits), softmax(adv_logits)
    delta = x_adv - x
    tiles = np.stack([x, x_adv, delta]).astype(np.float32)  # (3, n, C, H, W)
    labels: list[list[str]] = [[], [], []]
    for j in range(len(x)):
        c_pred, a_pred = int(p_clean[j].argmax()), int(p_adv[j].argmax())
        labels[0].append(f"true {class_names[int(y[j])]}\n{p_clean[j, c_pred]:.0%} {class_names[c_pred]}")
        labels[1].append(f"now {class_names[a_pred]}\n{p_adv[j, a_pred]:.0%} {class_names[a_pred]}")
        labels[2].append(f"max {float(np.abs(delta[j]).max()):.3g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, tiles=tiles)
    return {"name": name, "title": title, "kind": "image_grid", "artifact": rel, "array": "tiles",
            "row_labels": list(GALLERY_ROWS), "tile_labels": labels, "styles": ["image", "image", "signed"],
            "styles_by": "row", "bounds": [float(bounds[0]), float(bounds[1])]}


def feature_summary(x: np.ndarray, x_adv: np.ndarray, success: np.ndarray,
                    feature_names: list[str]) -> list[list[object]]:
    """Per feature over successful adversarial examples: [name, mean |delta|, max |delta|, share changed]."""
    rows: list[list[object]] = []
    if not success.any():
        return rows
    delta = (x_adv[success] - x[success]).reshape(int(success.sum()), -1)
    size = np.abs(delta)
    for i, name in enumerate(feature_names):
        rows.append([name, float(size[:, i].mean()), float(size[:, i].max()), float((size[:, i] > 1e-7).mean())])
    rows.sort(key=lambda r: -float(r[1]))  # type: ignore[arg-type]
    return rows
