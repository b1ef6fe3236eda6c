"""The feature-squeezing detector (Xu, Evans & Qi 2018) and an adaptive attack on classifier and detector together.

Score of an input: the largest L1 distance between the model's softmax on it and on each squeezed version
(bit depth, median smoothing). An input is flagged adversarial when its score exceeds a threshold set on clean data
at a chosen false-positive rate. The adaptive attack (He et al. 2017; Carlini & Wagner 2017) maximizes the
classification margin while pushing the score under the threshold, with BPDA (identity) through the squeezers; it
succeeds on a sample only when the model is fooled and the detector stays silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.adaptive import bpda
from attacks.base import Domain, Norm, margin_loss, random_start, step_direction
from attacks.defenses.base import Defense
from audit.model import ModelAdapter


def squeeze_scores(model: ModelAdapter, squeezers: list[Defense], x: np.ndarray, *,
                   batch_size: int = 256) -> np.ndarray:
    """(N,) detector score: max over squeezers of ||softmax(f(x)) - softmax(f(squeeze(x)))||_1."""
    p = torch.softmax(model.logits(x, batch_size=batch_size).double(), dim=1)
    score = torch.zeros(len(x), dtype=torch.float64)
    xt = torch.as_tensor(x, dtype=torch.float32)
    for s in squeezers:
        squeezed = torch.cat([s.transform(xt[i: i + batch_size].to(model.device)).cpu()
                              for i in range(0, len(xt), batch_size)]) if len(xt) else xt
        q = torch.softmax(model.logits(squeezed, batch_size=batch_size).double(), dim=1)
        score = torch.maximum(score, (p - q).abs().sum(dim=1))
    return score.numpy()


def threshold_at(clean_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold flagging at most ``fpr`` of the clean inputs (flagged: score > threshold)."""
    if len(clean_scores) == 0:
        return float("inf")
    return float(np.quantile(clean_scores, 1 - fpr, method="higher"))


def roc_auc(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """P(score of an adversarial input > score of a clean one), ties counting half (Mann-Whitney)."""
    if len(clean) == 0 or len(adversarial) == 0:
        return float("nan")
    both = np.concatenate([clean, adversarial])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks of ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    r_adv = ranks[len(clean):].sum()
    return float((r_adv - len(adversarial) * (len(adversarial) + 1) / 2) / (len(clean) * len(adversarial)))


def tpr_at_fpr(clean: np.ndarray, adversarial: np.ndarray, fpr: float) -> float:
    """True-positive rate at the threshold that flags ``fpr`` of the clean inputs."""
    if len(adversarial) == 0:
        return float("nan")
    return float((adversarial > threshold_at(clean, fpr)).mean())


@dataclass
class JointAttackOutput:
    x_adv: np.ndarray
    fooled: np.ndarray  # (N,) model misclassifies x_adv
    undetected: np.ndarray  # (N,) the detector's score at x_adv is at or below the threshold
    scores: np.ndarray  # (N,)

    @property
    def success(self) -> np.ndarray:
        return self.fooled & self.undetected


def joint_attack(model: ModelAdapter, squeezers: list[Defense], x: np.ndarray, y: np.ndarray, *, eps: float,
                 norm: Norm, domain: Domain, threshold: float, steps: int = 50, weight: float = 10.0,
                 batch_size: int = 256) -> JointAttackOutput:
    """PGD on min(margin, 1) - weight * relu(score - 0.8 threshold): fool the model and keep the detector silent.
    Keeps, per sample, the first iterate that does both (else the last)."""
    device = model.device
    dom = domain.to(device)
    outs = []
    step = 2.5 * eps / steps
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i: i + batch_size], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[i: i + batch_size], dtype=torch.long, device=device)
        best = xb.clone()
        done = torch.zeros(len(xb), dtype=torch.bool, device=device)
        adv = random_start(xb, eps, norm, dom)
        for _ in range(steps):
            adv = adv.detach().requires_grad_(True)
            logits = model.forward(adv)
            p = torch.softmax(logits, dim=1)
            score = torch.zeros(len(adv), device=device)
            for s in squeezers:
                q = torch.softmax(model.forward(bpda(s.transform, s.approximation)(adv)), dim=1)
                score = torch.maximum(score, (p - q).abs().sum(dim=1))
            margin = margin_loss(logits, yb)
            win = (margin > 0) & (score <= threshold) & ~done
            best[win] = adv.detach()[win]
            done |= win
            if bool(done.all()):
                break
            loss = margin.clamp(max=1.0) - weight * torch.relu(score - 0.8 * threshold)
            (grad,) = torch.autograd.grad(loss.sum(), adv)
            adv = dom.project(adv.detach() + step * step_direction(grad, norm, dom), xb, eps, norm)
        best[~done] = adv.detach()[~done]
        outs.append(best.cpu())
    x_adv = torch.cat(outs).numpy() if outs else x[:0]
    fooled = model.predict(x_adv) != y
    scores = squeeze_scores(model, squeezers, x_adv, batch_size=batch_size)
    return JointAttackOutput(x_adv, fooled, scores <= threshold, scores)


# --- the detector on the robustness section's adversarial inputs and against the joint attack ------------------


@dataclass
class DetectorRow:
    """The detector at one (norm, eps); the adaptive numbers are NaN when the model has no gradients."""

    norm: Norm
    eps: float
    adversarial: int  # the robustness section's successful adversarial inputs scored
    auc: float
    tpr5: float
    adaptive_auc: float = math.nan
    adaptive_tpr5: float = math.nan
    evasion: float = math.nan  # share of clean-correct samples misclassified and not flagged (joint attack)
    adaptive: bool = False  # the joint attack ran


@dataclass
class DetectorEvaluation:
    threshold: float
    clean_false_positive_rate: float
    rows: list[DetectorRow] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)  # ROC series, for the figure


def evaluate_detector(model: ModelAdapter, squeezers: list[Defense], x: np.ndarray, y: np.ndarray, ok: np.ndarray,
                      outcomes: list[tuple[Norm, float, np.ndarray, np.ndarray]], *, fpr: float, domain: Domain,
                      steps: int, batch_size: int = 256) -> DetectorEvaluation:
    """The threshold at ``fpr`` on the clean-correct rows (``ok``) of ``x``; per (norm, eps, x_adv, robust) of the
    robustness section (rows of ``x``): ROC AUC and TPR at 5% FPR on its successful adversarial inputs and, with
    gradients, against the joint attack on classifier and detector."""
    clean = squeeze_scores(model, squeezers, x[ok], batch_size=batch_size)
    threshold = threshold_at(clean, fpr)
    out = DetectorEvaluation(threshold, float((clean > threshold).mean()) if len(clean) else math.nan)
    for norm, eps, x_adv, robust in outcomes:
        fooled = ok & ~robust
        adv = squeeze_scores(model, squeezers, x_adv[fooled], batch_size=batch_size)
        row = DetectorRow(norm, eps, int(fooled.sum()), roc_auc(clean, adv), tpr_at_fpr(clean, adv, 0.05))
        if model.has_gradients and ok.any():
            att = np.flatnonzero(ok)
            joint = joint_attack(model, squeezers, x[att], y[att], eps=eps, norm=norm, domain=domain,
                                 threshold=threshold, steps=steps, batch_size=batch_size)
            row.adaptive_auc = roc_auc(clean, joint.scores[joint.fooled])
            row.adaptive_tpr5 = tpr_at_fpr(clean, joint.scores[joint.fooled], 0.05)
            row.evasion = float(joint.success.mean())
            row.adaptive = True
            out.curves.append(roc_series(clean, joint.scores[joint.fooled], f"adaptive ({norm}, eps={eps:g})"))
        out.curves.append(roc_series(clean, adv, f"robustness section ({norm}, eps={eps:g})"))
        out.rows.append(row)
    return out


def roc_series(clean: np.ndarray, adv: np.ndarray, label: str, points: int = 41) -> dict[str, Any]:
    """ROC curve points (fpr, tpr) at thresholds spread over the scores' quantiles."""
    if len(clean) == 0 or len(adv) == 0:
        return {"label": label, "x": [], "y": []}
    both = np.concatenate([clean, adv])
    thresholds = np.unique(np.quantile(both, np.linspace(0, 1, points)))
    fpr = [1.0] + [float((clean > t).mean()) for t in thresholds] + [0.0]
    tpr = [1.0] + [float((adv > t).mean()) for t in thresholds] + [0.0]
    return {"label": label, "x": fpr[::-1], "y": tpr[::-1]}
