"""Layer-wise relevance propagation through captum, made to work on common architectures.

captum's LRP knows rules for Conv/Linear/pooling/BatchNorm2d and treats ReLU/Tanh/nn.Dropout
as pass-through; any other leaf module (nn.Flatten, nn.Identity, GELU, a normalization
wrapper) stops it with a TypeError, it deletes every ``.rule`` after each call, and a failed
call can leave the weights it changed. Here LRP runs on a deep copy of the network, the rules
are assigned again before every call, and a leaf module with no rule is named in the error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from audit.model import Normalize, SelectOutput
from explain.base import Explainer, ExplainerError

# exact for modules that only reshape or copy (z_j = x_j): the epsilon rule conserves relevance
SHAPE_ONLY: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout1d, nn.Dropout2d,
                                           nn.Dropout3d, nn.AlphaDropout)
# linear layers captum does not list but its epsilon rule handles like Conv2d / Linear
LINEAR_EXTRA: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                             nn.AdaptiveAvgPool3d, nn.BatchNorm1d, nn.BatchNorm3d,
                                             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)
# element-wise maps: relevance passes through unchanged (the usual LRP treatment of activations)
ELEMENTWISE: tuple[type[nn.Module], ...] = (nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Sigmoid,
                                            nn.Softplus, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardswish,
                                            nn.Hardsigmoid, Normalize)
NATIVE_PASS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Dropout, nn.Tanh)


def _rule_for(module: nn.Module) -> Any:
    """A fresh captum rule for ``module``, None for captum's native pass-through layers, or raise KeyError."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    kind = type(module)
    if kind in NATIVE_PASS:
        return None
    if kind in SUPPORTED_LAYERS_WITH_RULES:
        return SUPPORTED_LAYERS_WITH_RULES[kind]()
    if isinstance(module, (*SHAPE_ONLY, *LINEAR_EXTRA)):
        return EpsilonRule()
    if isinstance(module, ELEMENTWISE):
        return IdentityRule()
    if isinstance(module, SelectOutput) and module.output_kind == "logits" and not module.binary_single:
        return EpsilonRule()  # returns its input tensor itself: both hooks sit on one tensor and cancel
    raise KeyError(kind.__name__)


def assign_rules(network: nn.Module, user_rules: dict[str, Any] | None = None) -> None:
    """Set ``.rule`` on every leaf module of ``network`` (user rules win). Raise ExplainerError naming the
    first leaf layer without a rule."""
    import copy

    user_rules = user_rules or {}
    for name, module in network.named_modules():
        if list(module.children()):
            continue
        if name in user_rules:
            module.rule = copy.deepcopy(user_rules[name])
            continue
        try:
            rule = _rule_for(module)
        except KeyError:
            raise ExplainerError(
                f"LRP has no propagation rule for layer '{name}' ({type(module).__name__}); set one on the model "
                f"before the audit (e.g. model.{name}.rule = captum.attr._utils.lrp_rules.EpsilonRule() for a "
                "linear layer) or drop 'lrp' from the explanation methods") from None
        if type(module) not in NATIVE_PASS:
            module.rule = rule


class _ClassScoreSum(nn.Module):
    """The network with the explained class scores of a batch summed to one number, shape (1,).

    captum's LRP differentiates ``torch.unbind(output)`` when given per-row outputs and ``target=``: one gradient
    output per row, about 15% of LRP's time on a 200-row batch. The rows do not interact, so one backward pass
    from the sum carries every row's own relevance; captum then scales the normalized relevance by the sum,
    which ``LRPExplainer`` turns back into each row's own score. The leaf layers (and their rules) are the
    network's.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.target: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None  # per-row class scores of the first (unmodified) forward pass
        self.total: torch.Tensor | None = None  # their sum as captum received it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.target is not None
        scores = self.network(x).gather(1, self.target.reshape(-1, 1))[:, 0]
        total = scores.sum().reshape(1)
        if self.scores is None:
            self.scores, self.total = scores.detach(), total.detach()
        return total


class LRPExplainer(Explainer):
    """LRP (Bach et al. 2015) with epsilon rules; relevance scaled to the explained class score."""

    method = "lrp"

    def __init__(self, adapter: Any, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        from captum.attr import LRP

        source = getattr(adapter, "network", None)
        user = {name: m.rule for name, m in source.named_modules() if hasattr(m, "rule")} if source else {}
        self.network = self.network_copy()
        self.user_rules = user
        assign_rules(self.network, user)  # fails early, naming the layer, before any work
        self._state = {k: v.clone() for k, v in self.network.state_dict().items()}
        self.scorer = _ClassScoreSum(self.network)
        self.algorithm = LRP(self.scorer)
        self.per_row = LRP(self.network)  # for a batch whose class scores sum to exactly zero

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assign_rules(self.network, self.user_rules)  # captum deletes the rules after every call
        self.scorer.target, self.scorer.scores = target, None
        try:
            out: torch.Tensor = self.algorithm.attribute(x)
            scores, total = self.scorer.scores, self.scorer.total
            assert scores is not None and total is not None
            if bool(total != 0) and bool(torch.isfinite(total)):
                # captum returns normalized relevance x total; each row's relevance sums to its own score
                out = out * (scores / total).reshape((-1,) + (1,) * (out.dim() - 1))
            else:
                assign_rules(self.network, self.user_rules)
                out = self.per_row.attribute(x, target=target)
        except Exception as err:
            self.network.load_state_dict(self._state)  # the copy stays usable after a failed call
            if isinstance(err, (RuntimeError, TypeError)):
                raise ExplainerError(f"LRP failed on this network: {err}. A module used twice in forward is the "
                                     "usual cause; use ig or gradient_shap instead") from err
            raise
        finally:
            self.scorer.target = self.scorer.scores = self.scorer.total = None
            for module in self.network.modules():
                for attr in ("rule", "activations"):
                    if hasattr(module, attr):
                        delattr(module, attr)
        return out
