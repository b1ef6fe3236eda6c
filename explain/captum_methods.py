"""captum methods: Integrated Gradients, Saliency, Occlusion / feature ablation, GradientShap, DeepLift."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from audit.model import Bounds
from explain.base import Explainer, ExplainerError, at_least
from explain.budget import spans


def _baseline(explainer: Explainer, x: torch.Tensor) -> torch.Tensor:
    """The reference input: the background mean (tabular) or the lower bound / zeros (images)."""
    if explainer.modality == "tabular" and explainer.background is not None:
        return explainer.background_tensor().mean(dim=0, keepdim=True).expand_as(x)
    bounds = explainer.adapter.bounds
    fill = bounds.lower if bounds is not None else 0.0
    return torch.full_like(x, float(fill))


def reference_input(bounds: Bounds | None, background: np.ndarray | None, modality: str,
                    x: np.ndarray) -> np.ndarray:
    """The same reference as numpy, shaped like ``x``: where an input equals it, an input-multiplied method
    (IG, LRP, DeepLift, occlusion) gives 0 under any weights."""
    if modality == "tabular" and background is not None:
        return np.broadcast_to(background.astype(np.float32).mean(axis=0), x.shape)
    return np.full(x.shape, float(bounds.lower) if bounds is not None else 0.0, np.float32)


class IntegratedGradientsExplainer(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017): path integral of gradients from the baseline."""

    method = "ig"

    def __init__(self, adapter: Any, *, n_steps: int = 32, **kwargs: Any) -> None:
        at_least("n_steps", n_steps, 2)
        super().__init__(adapter, **kwargs)
        from captum.attr import IntegratedGradients

        self.n_steps = n_steps
        self.algorithm = IntegratedGradients(self.class_score_sum)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # every step of a batch in one forward when the budget allows; else fewer samples, then fewer steps
        budget = self.eval_rows(x[:1], gradient=True)
        per_call = min(len(x), budget)
        outs = []
        for part in spans(len(x), per_call):
            rows = len(x[part])
            inner = max(rows, min(rows * self.n_steps, budget))
            outs.append(self.algorithm.attribute(x[part], baselines=_baseline(self, x[part]),
                                                 additional_forward_args=target[part], n_steps=self.n_steps,
                                                 internal_batch_size=inner))
        return torch.cat(outs)


class SaliencyExplainer(Explainer):
    """Saliency (Simonyan et al. 2014): absolute input gradient of the class score."""

    method = "saliency"

    def __init__(self, adapter: Any, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        from captum.attr import Saliency

        self.algorithm = Saliency(self.class_score_sum)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.algorithm.attribute(x, additional_forward_args=target, abs=True)
        return out


class OcclusionExplainer(Explainer):
    """Occlusion (images: a sliding patch set to the baseline) / feature ablation (tabular: one feature at a time).

    Needs only predictions, so it also runs on black-box models.
    """

    method = "occlusion"
    needs_gradients = False

    def __init__(self, adapter: Any, *, window: int = 2, **kwargs: Any) -> None:
        at_least("window", window, 1)
        super().__init__(adapter, **kwargs)
        self.window = window

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """captum evaluates ``rows x perturbations_per_eval`` perturbed inputs at once: both are sized so that
        one evaluation stays within the memory budget (every window of a 64-row batch at once held 10 GB for
        28x28 images)."""
        budget = self.eval_rows(x[:1])
        rows = min(len(x), budget)
        per_eval = min(self.perturbations(x), max(1, budget // rows))
        return torch.cat([self._occlude(x[part], target[part], per_eval) for part in spans(len(x), rows)])

    def perturbations(self, x: torch.Tensor) -> int:
        """Perturbed inputs per sample: sliding windows (images) or features (tabular)."""
        if self.modality == "image" and x.ndim == 4:
            windows = min(self.window, x.shape[2], x.shape[3])
            return (x.shape[2] - windows + 1) * (x.shape[3] - windows + 1)
        return int(x[0].numel())

    def _occlude(self, x: torch.Tensor, target: torch.Tensor, per_eval: int) -> torch.Tensor:
        from captum.attr import FeatureAblation, Occlusion

        baseline = _baseline(self, x)
        if self.modality == "image" and x.ndim == 4:
            windows = min(self.window, x.shape[2], x.shape[3])
            occlusion = Occlusion(self.forward_no_grad)
            out: torch.Tensor = occlusion.attribute(
                x, sliding_window_shapes=(x.shape[1], windows, windows), strides=(x.shape[1], 1, 1),
                baselines=baseline, target=target, perturbations_per_eval=per_eval)
            return out
        ablation = FeatureAblation(self.forward_no_grad)
        result: torch.Tensor = ablation.attribute(x, baselines=baseline, target=target,
                                                  perturbations_per_eval=per_eval)
        return result


class GradientShapExplainer(Explainer):
    """GradientShap (Lundberg & Lee 2017, captum's algorithm): expected gradients x (input - baseline) over
    background samples, with each row's draws keyed to the row.

    captum's ``GradientShap`` draws the baselines and the points on the path for a whole batch from numpy's
    global generator, so a row's draws depend on its position. Here each row draws what captum would draw for
    that row alone with numpy's global generator seeded by the row's seed (``np.random.choice`` of the
    baselines, then ``np.random.uniform`` of the coefficients; the Gaussian input noise, when ``stdevs > 0``,
    from a torch generator seeded likewise), and the gradients of all rows go through one batched backward
    pass. Equal to captum called on each row alone with that seed (tested).
    """

    method = "gradient_shap"

    def __init__(self, adapter: Any, *, n_samples: int = 16, stdevs: float = 0.0, **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 1)
        at_least("stdevs", stdevs, 0.0)
        super().__init__(adapter, **kwargs)
        self.n_samples = n_samples
        self.stdevs = stdevs

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        background = self.background_tensor() if self.background is not None else _baseline(self, x[:1])
        per_call = max(1, self.eval_rows(x[:1], gradient=True) // self.n_samples)
        seeds = self.row_seeds()
        return torch.cat([self._expected_gradients(x[part], target[part], background, seeds[part])
                          for part in spans(len(x), per_call)])

    def _expected_gradients(self, x: torch.Tensor, target: torch.Tensor, background: torch.Tensor,
                            seeds: np.ndarray) -> torch.Tensor:
        n, shape = self.n_samples, x.shape[1:]
        picks, coefficients, noise = [], [], []
        for seed in seeds:
            draws = np.random.RandomState(int(seed))  # numpy's global generator, as captum uses it, for this row
            picks.append(draws.choice(len(background), n))
            coefficients.append(draws.uniform(0.0, 1.0, n))
            if self.stdevs > 0:
                spread = torch.tensor(float(self.stdevs), device=x.device).repeat((n, *shape))
                noise.append(torch.normal(0, spread, generator=torch.Generator(device=x.device).manual_seed(int(seed))))
        inputs = x.detach().repeat_interleave(n, dim=0)
        if noise:
            inputs = inputs + torch.cat(noise)
        baselines = background[torch.as_tensor(np.concatenate(picks), device=x.device)]
        alpha = torch.tensor(np.concatenate(coefficients), device=x.device, dtype=x.dtype)
        alpha = alpha.view((-1,) + (1,) * len(shape))
        scaled = (alpha * inputs + (1.0 - alpha) * baselines).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.class_score_sum(scaled, target.repeat_interleave(n)), scaled)
        per_draw = ((inputs - baselines) * grad).view((len(x), n, *shape))
        out: torch.Tensor = per_draw.sum(dim=1) * 1 / n
        return out


class DeepLiftExplainer(Explainer):
    """DeepLift (Shrikumar et al. 2017, captum's rescale rule) on a deep copy of the network."""

    method = "deeplift"

    def __init__(self, adapter: Any, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        from captum.attr import DeepLift

        self.network = self.network_copy()
        for module in self.network.modules():
            if getattr(module, "inplace", False):
                setattr(module, "inplace", False)  # noqa: B010 captum's DeepLift cannot hook in-place activations
        self.algorithm = DeepLift(self.network)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
                out: torch.Tensor = self.algorithm.attribute(x, baselines=_baseline(self, x), target=target)
        except RuntimeError as err:
            raise ExplainerError(f"DeepLift failed on this network ({err}); a module used twice in forward or an "
                                 "unsupported operation is the usual cause: use ig or gradient_shap instead") from err
        return out
