"""nnaudit explanations (a generic top-level name: this is nnaudit's ``explain`` package)."""

from explain.base import EvaluationCounter, Explainer, ExplainerError
from explain.captum_methods import (
    DeepLiftExplainer,
    GradientShapExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    SaliencyExplainer,
)
from explain.lime_methods import LimeExplainer
from explain.lrp import LRPExplainer, LRPRuleError, assign_rules
from explain.section import METHODS, ExplanationsSection
from explain.seeds import sample_seed
from explain.shap_methods import ShapDeepExplainer, ShapGradientExplainer, ShapKernelExplainer

__all__ = [
    "METHODS",
    "DeepLiftExplainer",
    "EvaluationCounter",
    "Explainer",
    "ExplainerError",
    "ExplanationsSection",
    "GradientShapExplainer",
    "IntegratedGradientsExplainer",
    "LRPExplainer",
    "LRPRuleError",
    "LimeExplainer",
    "OcclusionExplainer",
    "SaliencyExplainer",
    "ShapDeepExplainer",
    "ShapGradientExplainer",
    "ShapKernelExplainer",
    "assign_rules",
    "sample_seed",
]
