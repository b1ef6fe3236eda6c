"""Cascading model-parameter randomization (Adebayo et al. 2018): does the explanation depend on the model at all?

The user's layers with parameters are re-initialized from the top (output) layer down, one more at each step, and
the same inputs explained again by the same explainer (the same constructor arguments, on the randomized model).
The attributions are compared with the original ones by the Spearman correlation of |attribution| on the
informative features (those where the input differs from the attribution baseline; an input-multiplied method
gives 0 elsewhere under any weights) and, for images, the SSIM of the normalized |attribution| maps. After full
randomization the check passes when the interval of the similarity lies below a threshold, fails when it lies at
or above it, and is inconclusive otherwise; a control with random signs, which does not depend on the model, must
fail.

``cascade_similarity`` computes the per-sample similarities of some samples (one chunk's check samples);
``judge_randomization`` turns those of all check samples into a ``Randomization``: intervals, verdicts, the control.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from audit.model import ModelAdapter, TorchModelAdapter
from explain.base import Explainer, ExplainerError
from explain.quality import rank_correlation
from explain.ranking import Estimate, intervals
from explain.seeds import sample_rng, sample_seed

CONTROL = "control"  # the first method's attributions with random signs: must fail the check


@dataclass
class CascadeSimilarity:
    """Per cascade step and sample, each method's similarity to its original attributions."""

    similarity: dict[str, np.ndarray]  # method -> (steps, n) Spearman of |attribution| on the informative features
    ssim: dict[str, np.ndarray]  # method -> (steps, n) SSIM of the |attribution| maps (NaN but for images)
    errors: dict[str, str]  # method -> why its explainer could not explain on a randomized model


@dataclass
class Randomization:
    """The check over every check sample: per-method intervals after full randomization, verdicts, the control."""

    layers: int  # layers with parameters, all randomized at the last step
    steps: list[str]  # the cascade's points: the first layer randomized, then '+ <next layer>', ...
    threshold: float  # the similarity below which the check passes
    image: bool  # SSIM measured
    control_method: str  # whose attributions the control flips
    control: np.ndarray  # per-sample similarity of the control
    control_signed: float  # mean signed Spearman of the control with the original
    final: dict[str, np.ndarray]  # method (and CONTROL) -> per-sample similarity after full randomization
    estimates: dict[str, Estimate]  # the same keys: mean and interval
    ssim: dict[str, Estimate]  # method -> SSIM after full randomization (images)
    verdicts: dict[str, str]  # the same keys as estimates: passes, fails or inconclusive
    per_step: dict[str, list[Estimate]]  # method -> similarity at each step


def cascade_layers(adapter: ModelAdapter, row: np.ndarray) -> list[str]:
    """The user's layers with parameters, in the order the cascade randomizes them: the output layer first.
    Order from one traced forward pass; layers that never run are left out."""
    if not isinstance(adapter, TorchModelAdapter):
        raise ExplainerError("the randomization check re-initializes the network's weights and needs a torch model; "
                             "a black-box model has none to reset")
    order: list[str] = []
    handles = []
    for name, module in adapter.module.named_modules():
        if list(module.children()) or not callable(getattr(module, "reset_parameters", None)):
            continue
        if not any(True for _ in module.parameters()):
            continue

        def hook(_m: torch.nn.Module, _i: object, _o: object, name: str = name) -> None:
            if name not in order:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            adapter.forward(torch.as_tensor(np.asarray(row[:1], np.float32), device=adapter.device))
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ExplainerError("the randomization check found no layer with parameters and reset_parameters() to "
                             "re-initialize")
    return order[::-1]


def randomized_adapter(adapter: ModelAdapter, seed: int, layers: list[str] | None = None) -> TorchModelAdapter:
    """The same model with ``layers`` of the user's network re-initialized (all layers with parameters when
    None: Adebayo et al.'s full randomization). Each layer's new weights come from its own key (run seed,
    layer name), so the layers randomized at one cascade step keep their weights at the next."""
    if not isinstance(adapter, TorchModelAdapter):
        raise ExplainerError("the randomization check re-initializes the network's weights and needs a torch model; "
                             "a black-box model has none to reset")
    network = copy.deepcopy(adapter.network)
    user = network.network
    names = layers if layers is not None else [name for name, m in user.named_modules()
                                               if not list(m.children()) and callable(getattr(m, "reset_parameters",
                                                                                              None))]
    if not names:
        raise ExplainerError("the randomization check found no layer with reset_parameters() to re-initialize")
    for name in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(seed, f"randomization:{name}", 0))
            reset: Callable[[], None] = user.get_submodule(name).reset_parameters  # type: ignore[assignment]
            reset()
    return TorchModelAdapter(network, num_classes=adapter.num_classes, output_kind=adapter.output_kind,
                             bounds=adapter.bounds, device=adapter.device, batch_size=adapter.batch_size,
                             source=adapter.source + " (randomized)", sha256=adapter.sha256)


def cascade_steps(layers: list[str], steps: int) -> list[int]:
    """How many top layers are randomized at each step: ``steps`` points from 1 to all, evenly spread."""
    total = len(layers)
    return sorted({int(np.rint(v)) for v in np.linspace(1, total, min(steps, total))})


def cascade(layers: list[str], steps: int) -> Iterator[tuple[int, list[str]]]:
    for count in cascade_steps(layers, steps):
        yield count, layers[:count]


def masked_rank_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spearman correlation per row of |a| and |b| over the features where ``mask`` holds and at least one of
    the two attributions is not 0 (NaN where fewer than 3 such features or a row is constant there).

    A feature with attribution 0 under both models carries no evidence either way: an input-multiplied method
    gives 0 wherever the input sits at the method's own reference (0 for LRP, which has no baseline), under any
    weights, and such ties would count as agreement."""
    from scipy.stats import rankdata

    fa, fb = np.abs(a.reshape(len(a), -1)), np.abs(b.reshape(len(b), -1))
    keep = np.broadcast_to(mask, a.shape).reshape(len(a), -1) & ((fa != 0) | (fb != 0))
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if keep[i].sum() < 3:
            continue
        ra, rb = rankdata(fa[i, keep[i]]), rankdata(fb[i, keep[i]])
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
        if denom > 0:
            out[i] = float((ra * rb).sum()) / denom
    return out


def attribution_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per image of the |attribution| maps (summed over channels, each scaled to [0, 1] by its maximum),
    as Adebayo et al. compare them (scikit-image's SSIM, 7x7 window or the image side if smaller; NaN for
    images under 3 pixels a side or an all-zero map)."""
    from skimage.metrics import structural_similarity

    out = np.full(len(a), np.nan)
    if a.ndim != 4 or min(a.shape[2:]) < 3:
        return out
    side = min(a.shape[2:])
    window = min(7, side if side % 2 else side - 1)
    for i in range(len(a)):
        ma, mb = np.abs(a[i]).sum(axis=0), np.abs(b[i]).sum(axis=0)
        if ma.max() == 0 or mb.max() == 0:
            continue
        out[i] = structural_similarity(ma / ma.max(), mb / mb.max(), data_range=1.0, win_size=window)
    return out


def sign_randomized(attributions: np.ndarray, ids: np.ndarray, seed: int) -> np.ndarray:
    """The control that must fail the randomization check: the same magnitudes with random signs (keyed per
    sample). It does not depend on the model's weights at all, yet its signed Spearman correlation with the
    original is near 0, which a check on signed attributions would call a pass."""
    out = np.empty_like(attributions)
    for i, sample_id in enumerate(ids):
        signs = sample_rng(seed, "sign_control", int(sample_id)).choice([-1.0, 1.0], size=attributions.shape[1:])
        out[i] = attributions[i] * signs
    return out


def step_labels(layers: list[str], steps: int) -> list[str]:
    """The cascade's points as the figure labels them: the first layer randomized, then '+ <next layer>'."""
    return [layers[count - 1] if count == 1 else f"+ {layers[count - 1]}" for count in cascade_steps(layers, steps)]


def cascade_similarity(adapter: ModelAdapter, explainers: dict[str, Callable[[ModelAdapter], Explainer]],
                       originals: dict[str, np.ndarray], x: np.ndarray, target: np.ndarray, ids: np.ndarray, *,
                       layers: list[str], steps: int, seed: int, mask: np.ndarray, image: bool,
                       progress: Callable[..., Any]) -> CascadeSimilarity:
    """Explain ``x`` again on the model randomized at each cascade step; ``explainers``: method -> build the
    method's explainer on a model; ``originals``: the attributions on the trained model; ``mask``: the informative
    features. A method whose explainer fails on a randomized model is left out (``errors``)."""
    similarity: dict[str, list[np.ndarray]] = {m: [] for m in originals}
    ssim: dict[str, list[np.ndarray]] = {m: [] for m in originals}
    errors: dict[str, str] = {}
    plan = list(cascade(layers, steps))
    for _count, randomized_layers in progress(plan, desc="explanations: randomization cascade", total=len(plan)):
        model = randomized_adapter(adapter, seed, randomized_layers)
        for method, build in explainers.items():
            if method in errors:
                continue
            original = originals[method]
            try:
                other = build(model).explain(x, target, ids)
            except ExplainerError as err:
                errors[method] = str(err)
                continue
            similarity[method].append(masked_rank_correlation(original, other, mask))
            ssim[method].append(attribution_ssim(original, other) if image else np.full(len(other), np.nan))
    kept = [m for m in originals if m not in errors]
    return CascadeSimilarity({m: np.stack(similarity[m]) for m in kept}, {m: np.stack(ssim[m]) for m in kept}, errors)


def judge_randomization(cascade: CascadeSimilarity, originals: dict[str, np.ndarray], ids: np.ndarray,
                        mask: np.ndarray, *, layers: list[str], steps: int, image: bool, threshold: float, seed: int,
                        n_resamples: int, confidence: float) -> Randomization:
    """Intervals over the check samples (``cascade`` and ``originals`` over all of them) and each method's verdict,
    next to the control: the first method's attributions (ig when it ran) with random signs."""
    control_method = "ig" if "ig" in originals else next(iter(originals))
    original = originals[control_method]
    flipped = sign_randomized(original, ids, seed)
    control = masked_rank_correlation(original, flipped, mask)
    signed = rank_correlation(original, flipped, absolute=False)
    final = {m: v[-1] for m, v in cascade.similarity.items()}
    final[CONTROL] = control
    estimates = intervals(final, n_resamples=n_resamples, seed=seed, confidence=confidence)
    ssim = intervals({m: v[-1] for m, v in cascade.ssim.items() if m in final}, n_resamples=n_resamples, seed=seed,
                     confidence=confidence) if image else {}
    per_step = {m: [intervals({m: s}, n_resamples=n_resamples, seed=seed, confidence=confidence)[m] for s in v]
                for m, v in cascade.similarity.items()}
    return Randomization(layers=len(layers), steps=step_labels(layers, steps), threshold=threshold, image=image,
                         control_method=control_method, control=control, control_signed=float(np.nanmean(signed)),
                         final=final, estimates=estimates, ssim=ssim,
                         verdicts={m: verdict(e, threshold) for m, e in estimates.items()}, per_step=per_step)


def verdict(estimate: Estimate, threshold: float) -> str:
    """passes: the interval lies below ``threshold``; fails: at or above it; else (or no interval) inconclusive."""
    if not np.isfinite(estimate.high):
        return "inconclusive"
    if estimate.high < threshold:
        return "passes"
    if estimate.low >= threshold:
        return "fails"
    return "inconclusive"
