"""Artifacts: a gallery of adversarial images (PNG) and a per-feature perturbation summary (tabular)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _as_image(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) for imshow."""
    if x.ndim == 3 and x.shape[0] == 1:
        return x[0]
    if x.ndim == 3 and x.shape[0] == 3:
        return np.transpose(x, (1, 2, 0))
    if x.ndim == 3:
        return x.mean(axis=0)
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def write_gallery(path: Path, *, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, clean_logits: np.ndarray,
                  adv_logits: np.ndarray, class_names: list[str], title: str,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> None:
    """Rows: original (label, confidence), adversarial (prediction, confidence), perturbation (amplified)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(x)
    p_clean, p_adv = softmax(clean_logits), softmax(adv_logits)
    fig, axes = plt.subplots(3, n, figsize=(1.7 * n + 0.6, 5.6), squeeze=False)
    for j in range(n):
        delta = x_adv[j] - x[j]
        scale = float(np.abs(delta).max()) or 1.0
        c_pred, a_pred = int(p_clean[j].argmax()), int(p_adv[j].argmax())
        panels = [
            (_as_image(x[j]), f"{class_names[int(y[j])]}\n{p_clean[j, c_pred]:.0%} as {class_names[c_pred]}",
             "gray", bounds),
            (_as_image(x_adv[j]), f"adv: {class_names[a_pred]}\n{p_adv[j, a_pred]:.0%}", "gray", bounds),
            (_as_image(delta), f"perturbation\nmax {scale:.3g}", "seismic", (-scale, scale)),
        ]
        for i, (img, label, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(np.clip(img, lo, hi), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(label, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
