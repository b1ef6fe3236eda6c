"""Temperature scaling (Guo et al. 2017) and calibration summaries, clean and under corruption.

One scalar T > 0 divides the logits; it is fitted by L-BFGS on the negative log-likelihood of a held-out part
of the clean data (optimizing log T, so T stays positive). Dividing by a positive T keeps every argmax, so it
changes confidence, never a prediction; ``CalibrationSummary.predictions_changed`` counts them (0 by
construction, recorded as a check).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.calibration import brier_score, expected_calibration_error


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, max_iter: int = 200) -> float:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))


@dataclass(frozen=True)
class CalibrationSummary:
    """ECE, Brier and NLL before and after temperature scaling on one set of logits."""

    ece: float
    ece_scaled: float
    brier: float
    brier_scaled: float
    nll: float
    nll_scaled: float
    accuracy: float
    predictions_changed: int
    rows: list[list[float]]  # reliability rows before scaling
    rows_scaled: list[list[float]]


def summarize(logits: np.ndarray, y: np.ndarray, temperature: float, n_bins: int) -> CalibrationSummary:
    before, after = softmax(logits), softmax(logits, temperature)
    ece, rows = expected_calibration_error(before, y, n_bins)
    ece_t, rows_t = expected_calibration_error(after, y, n_bins)
    changed = int(np.sum(before.argmax(axis=1) != after.argmax(axis=1)))
    return CalibrationSummary(ece=ece, ece_scaled=ece_t, brier=brier_score(before, y),
                              brier_scaled=brier_score(after, y), nll=nll(logits, y),
                              nll_scaled=nll(logits, y, temperature),
                              accuracy=float(np.mean(before.argmax(axis=1) == y)), predictions_changed=changed,
                              rows=rows, rows_scaled=rows_t)
