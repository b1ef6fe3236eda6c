"""Layer-wise relevance propagation through captum, made to work on common architectures.

captum's LRP knows rules for Conv/Linear/pooling/BatchNorm2d and treats ReLU/Tanh/nn.Dropout
as pass-through; any other leaf module (nn.Flatten, nn.Identity, GELU, a normalization
wrapper) stops it with a TypeError, it deletes every ``.rule`` after each call, and a failed
call can leave the weights it changed. Here LRP runs on a deep copy of the network, the rules
are planned once from one traced forward pass and assigned again before every call:

- modules that only move values (Flatten, Identity, Dropout in evaluation mode) are transparent;
- element-wise pre-processing of the raw input (the config's normalization, and inside the user's
  model a mean/std module, a ``Lambda``-like affine map, an evaluation-mode BatchNorm used as input
  normalization: any leaf module fed by the raw input through such modules whose outputs each depend
  on one input value only) passes relevance through unchanged, so attributions are the same whichever
  way the normalization is given;
- element-wise activations pass relevance through (the usual LRP treatment), element-wise affine maps
  further in get the epsilon rule of a linear layer;
- a layer with none of these is named in an ``LRPRuleError`` whose hint is valid Python on the user's
  own module path.
"""

from __future__ import annotations

import copy
import functools
import keyword
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from audit.model import Normalize, SelectOutput
from explain.base import Explainer, ExplainerError

# modules that only reshape or copy values: transparent
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
RULES_MODULE = "captum.attr._utils.lrp_rules"  # where captum keeps its rules (not re-exported by captum.attr)
USER_ROOT = "network"  # the user's module inside the adapted network (normalize -> network -> select)


class LRPRuleError(ExplainerError):
    """A layer of the user's model has no LRP rule; ``hint`` is Python that sets one."""

    def __init__(self, message: str, *, layer: str, hint: str) -> None:
        super().__init__(message)
        self.layer = layer
        self.hint = hint


@functools.cache
def _pass_through_class() -> type:
    from captum.attr._utils.lrp_rules import EpsilonRule

    class PassThroughRule(EpsilonRule):
        """No hooks at all: relevance flows through as autograd moves the values (reshape, copy)."""

        def forward_hook(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
            return None

        def forward_hook_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
            return None

        def forward_pre_hook_activations(self, module: nn.Module, inputs: Any) -> None:
            return None

    return PassThroughRule


@dataclass
class _Call:
    """One call of a leaf module in the traced forward pass."""

    name: str
    module: nn.Module
    input: torch.Tensor | None
    output: Any
    single_input: bool


@dataclass
class RulePlan:
    """Which rule each leaf module gets: 'pass' (transparent), 'identity', 'epsilon', 'native', 'user', or a
    captum default; ``preprocessing`` names the leaves treated as input pre-processing."""

    kinds: dict[str, str] = field(default_factory=dict)
    preprocessing: list[str] = field(default_factory=list)


def _trace(network: nn.Module, sample: torch.Tensor) -> list[_Call]:
    calls: list[_Call] = []
    handles = []
    for name, module in network.named_modules():
        if list(module.children()):
            continue

        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any, name: str = name) -> None:
            tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
            single = len(inputs) == 1 and len(tensors) == 1
            calls.append(_Call(name, mod, tensors[0] if tensors else None, output, single))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            network(sample)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _moves_values_only(call: _Call) -> bool:
    """The output is the input itself or a reshaped view of the same values."""
    out, inp = call.output, call.input
    if not isinstance(out, torch.Tensor) or inp is None:
        return False
    return out is inp or (out.numel() == inp.numel() and bool(torch.equal(out.reshape(-1), inp.reshape(-1))))


def _elementwise(call: _Call) -> bool:
    """Each output value depends on the input value at its own position only (probed: changing a random half of
    the inputs changes no output outside that half)."""
    out, inp = call.output, call.input
    if not call.single_input or inp is None or not isinstance(out, torch.Tensor) or out.shape != inp.shape:
        return False
    generator = torch.Generator().manual_seed(0)
    scale = float(inp.abs().mean()) + 1.0
    with torch.no_grad():
        for _ in range(2):
            chosen = (torch.rand(inp.shape, generator=generator) < 0.5).to(inp.device)
            step = ((torch.rand(inp.shape, generator=generator) - 0.5) * 0.2 * scale).to(inp.device, inp.dtype)
            moved = call.module(inp + step * chosen)
            if not isinstance(moved, torch.Tensor) or bool(((moved != out) & ~chosen).any()):
                return False
    return True


def _affine(call: _Call) -> bool:
    """An element-wise map that is affine: f(x + y) - f(0) = (f(x) - f(0)) + (f(y) - f(0))."""
    inp = call.input
    assert inp is not None
    generator = torch.Generator().manual_seed(1)
    other = (torch.randn(inp.shape, generator=generator) * (float(inp.abs().mean()) + 1.0)).to(inp.device, inp.dtype)
    with torch.no_grad():
        zero = call.module(torch.zeros_like(inp))
        lhs = call.module(inp + other) - zero
        rhs = (call.module(inp) - zero) + (call.module(other) - zero)
    return bool(torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-5 * (float(rhs.abs().max()) + 1.0)))


def plan_rules(network: nn.Module, sample: torch.Tensor | None, user_rules: dict[str, Any] | None = None) -> RulePlan:
    """Decide every leaf module's rule from one traced forward pass of ``sample`` (one row); raise LRPRuleError
    naming the first layer without one. Without a sample nothing is traced: no pre-processing is recognised."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES

    user_rules = user_rules or {}
    row = sample[:1] if sample is not None else None
    calls = _trace(network, row) if row is not None else []
    by_name: dict[str, list[_Call]] = {}
    for call in calls:
        by_name.setdefault(call.name, []).append(call)
    # input pre-processing: leaves fed by the raw input through leaves that move values or act element-wise
    raw: dict[int, torch.Tensor] = {id(row): row} if row is not None else {}
    preprocessing: set[str] = set()
    for call in calls:
        if call.input is None or id(call.input) not in raw or not isinstance(call.output, torch.Tensor):
            continue
        if _moves_values_only(call) or _elementwise(call):
            preprocessing.add(call.name)
            raw[id(call.output)] = call.output
    plan = RulePlan()
    for name, module in network.named_modules():
        if list(module.children()):
            continue
        mine = by_name.get(name, [])
        if name in user_rules:
            kind = "user"
        elif mine and all(c.name in preprocessing for c in mine) and name not in ("select",):
            kind = "pass" if all(_moves_values_only(c) for c in mine) else "identity"
            plan.preprocessing.append(name)
        elif isinstance(module, NATIVE_PASS):
            kind = "native"
        elif isinstance(module, SHAPE_ONLY) or (sample is not None and not mine):
            kind = "pass"  # moves values only, or never runs in forward
        elif isinstance(module, SelectOutput) and module.output_kind == "logits" and not module.binary_single:
            kind = "pass"  # returns its input tensor itself
        elif type(module) in SUPPORTED_LAYERS_WITH_RULES or isinstance(module, LINEAR_EXTRA):
            kind = "epsilon"
        elif isinstance(module, ELEMENTWISE):
            kind = "identity"
        elif mine and all(_elementwise(c) for c in mine):
            kind = "epsilon" if all(_affine(c) for c in mine) else "identity"
        else:
            raise _missing_rule(network, name, module, mine)
        plan.kinds[name] = kind
    return plan


def _rule(kind: str) -> Any:
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    if kind == "pass":
        return _pass_through_class()()
    if kind == "identity":
        return IdentityRule()
    return EpsilonRule()


def assign_rules(network: nn.Module, user_rules: dict[str, Any] | None = None, *, plan: RulePlan | None = None,
                 sample: torch.Tensor | None = None) -> RulePlan:
    """Set ``.rule`` on every leaf module of ``network`` (user rules win), from ``plan`` or one planned from
    ``sample``. Raise LRPRuleError naming the first leaf layer without a rule."""
    user_rules = user_rules or {}
    plan = plan if plan is not None else plan_rules(network, sample, user_rules)
    for name, module in network.named_modules():
        kind = plan.kinds.get(name)
        if kind is None or kind == "native":
            continue
        module.rule = copy.deepcopy(user_rules[name]) if kind == "user" else _rule(kind)
    return plan


def python_path(root: nn.Module, dotted: str, variable: str = "model") -> str:
    """Python that reaches the submodule ``dotted`` of ``root``: ``model.features[0]``."""
    expr, module = variable, root
    for part in dotted.split("."):
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and part.isdigit():
            expr += f"[{part}]"
        elif isinstance(module, nn.ModuleDict):
            expr += f"[{part!r}]"
        elif part.isidentifier() and not keyword.iskeyword(part):
            expr += f".{part}"
        else:
            return f"{variable}.get_submodule({dotted!r})"
        module = module.get_submodule(part)
    return expr


def _missing_rule(network: nn.Module, name: str, module: nn.Module, calls: list[_Call]) -> LRPRuleError:
    kind = type(module).__name__
    same_shape = bool(calls) and all(isinstance(c.output, torch.Tensor) and c.input is not None
                                     and c.output.shape == c.input.shape for c in calls)
    rule = "IdentityRule" if same_shape else "EpsilonRule"
    why = ("IdentityRule() passes relevance through unchanged, as nnaudit does for normalization and activations; "
           "EpsilonRule() treats the layer as linear") if same_shape else "EpsilonRule() is the rule for linear layers"
    inside = name.startswith(USER_ROOT + ".")
    user_name = name[len(USER_ROOT) + 1 :] if inside else name
    root = network.get_submodule(USER_ROOT) if inside else network
    hint = f"from {RULES_MODULE} import {rule}\n{python_path(root, user_name)}.rule = {rule}()"
    where = "of your model" if inside else "of the adapted model"
    code = "\n".join("    " + line for line in hint.splitlines())
    message = (f"LRP has no propagation rule for layer '{user_name}' ({kind}) {where}; set one where the model is "
               f"built, before the audit:\n{code}\n({why}), or drop 'lrp' from sections.explanations.methods")
    return LRPRuleError(message, layer=user_name, hint=hint)


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
        self.plan: RulePlan | None = None
        if self.background is not None:  # plan (and fail, naming the layer) before any work
            self._plan(self.background_tensor()[:1])
        self._state = {k: v.clone() for k, v in self.network.state_dict().items()}
        self.scorer = _ClassScoreSum(self.network)
        self.algorithm = LRP(self.scorer)
        self.per_row = LRP(self.network)  # for a batch whose class scores sum to exactly zero

    def _plan(self, row: torch.Tensor) -> RulePlan:
        if self.plan is None:
            rows = self.counter.rows
            self.plan = plan_rules(self.network, row.detach(), self.user_rules)
            self.counter.rows, self.counter.calls = rows, self.counter.calls - 1  # the trace is not an evaluation
        return self.plan

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        plan = self._plan(x[:1])
        assign_rules(self.network, self.user_rules, plan=plan)  # captum deletes the rules after every call
        self.scorer.target, self.scorer.scores = target, None
        try:
            out: torch.Tensor = self.algorithm.attribute(x)
            scores, total = self.scorer.scores, self.scorer.total
            assert scores is not None and total is not None
            if bool(total != 0) and bool(torch.isfinite(total)):
                # captum returns normalized relevance x total; each row's relevance sums to its own score
                out = out * (scores / total).reshape((-1,) + (1,) * (out.dim() - 1))
            else:
                assign_rules(self.network, self.user_rules, plan=plan)
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
