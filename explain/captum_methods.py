"""captum methods: Integrated Gradients, Saliency, Occlusion / feature ablation, GradientShap, DeepLift."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from explain.base import Explainer, ExplainerError


def _baseline(explainer: Explainer, x: torch.Tensor) -> torch.Tensor:
    """The reference input: the background mean (tabular) or the lower bound / zeros (images)."""
    if explainer.modality == "tabular" and explainer.background is not None:
        return explainer.background_tensor().mean(dim=0, keepdim=True).expand_as(x)
    bounds = explainer.adapter.bounds
    fill = bounds.lower if bounds is not None else 0.0
    return torch.full_like(x, float(fill))


class IntegratedGradientsExplainer(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017): path integral of gradients from the baseline."""

    method = "ig"

    def __init__(self, adapter: Any, *, n_steps: int = 32, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        from captum.attr import IntegratedGradients

        self.n_steps = n_steps
        self.algorithm = IntegratedGradients(self.class_score_sum)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0] * self.n_steps
        out: torch.Tensor = self.algorithm.attribute(x, baselines=_baseline(self, x), additional_forward_args=target,
                                                     n_steps=self.n_steps, internal_batch_size=rows)
        return out


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
        super().__init__(adapter, **kwargs)
        self.window = window

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from captum.attr import FeatureAblation, Occlusion

        baseline = _baseline(self, x)
        if self.modality == "image" and x.ndim == 4:
            windows = min(self.window, x.shape[2], x.shape[3])
            per_sample = (x.shape[2] - windows + 1) * (x.shape[3] - windows + 1)
            occlusion = Occlusion(self.forward_no_grad)
            out: torch.Tensor = occlusion.attribute(
                x, sliding_window_shapes=(x.shape[1], windows, windows), strides=(x.shape[1], 1, 1),
                baselines=baseline, target=target, perturbations_per_eval=per_sample)
            return out
        ablation = FeatureAblation(self.forward_no_grad)
        features = int(x[0].numel())
        result: torch.Tensor = ablation.attribute(x, baselines=baseline, target=target,
                                                  perturbations_per_eval=features)
        return result


class GradientShapExplainer(Explainer):
    """GradientShap (Lundberg & Lee 2017, captum): expected gradients x (input - baseline) over background samples."""

    method = "gradient_shap"

    def __init__(self, adapter: Any, *, n_samples: int = 16, stdevs: float = 0.0, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        from captum.attr import GradientShap

        self.n_samples = n_samples
        self.stdevs = stdevs
        self.algorithm = GradientShap(self.class_score_sum)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        background = self.background_tensor() if self.background is not None else _baseline(self, x[:1])
        out: torch.Tensor = self.algorithm.attribute(x, baselines=background, additional_forward_args=target,
                                                     n_samples=self.n_samples, stdevs=self.stdevs)
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
