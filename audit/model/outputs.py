"""What a model returns, turned into logits: tuple/dict outputs, probabilities, a single binary score.

``probe`` runs the model once on a sample of the data when it is loaded: it checks the output width
against the classes, refuses NaN/inf scores, and tells logits from probabilities (``model.output:
auto``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from audit.errors import ConfigError, ModelError

PROB_TOLERANCE = 1e-3


class SelectOutput(nn.Module):
    """Pick the logits out of tuple/dict outputs, turn probabilities into log-probabilities,
    and a single binary score into two logits. ``task`` regression: the raw number, (N, 1), never a softmax;
    multilabel: one logit per label (probabilities turned into log-odds, for a sigmoid, not a softmax)."""

    def __init__(self, key: str | int | None, output_kind: str, binary_single: bool,
                 task: str = "classification") -> None:
        super().__init__()
        self.key = key
        self.output_kind = output_kind
        self.binary_single = binary_single
        self.task = task

    def forward(self, out: Any) -> torch.Tensor:
        out = select_output(out, self.key)
        if self.task == "regression":
            return out.reshape(out.shape[0], -1)
        if self.task == "multilabel":
            if self.output_kind == "probabilities":
                p = out.clamp(1e-12, 1 - 1e-12)
                return torch.log(p) - torch.log1p(-p)
            return out
        if self.binary_single:
            out = out.reshape(-1, 1)
            if self.output_kind == "probabilities":
                p = out.clamp(1e-12, 1 - 1e-12)
                return torch.cat([torch.log1p(-p), torch.log(p)], dim=1)
            return torch.cat([torch.zeros_like(out), out], dim=1)
        if self.output_kind == "probabilities":
            return torch.log(out.clamp_min(1e-12))
        return out


def select_output(out: Any, key: str | int | None) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if key is None or key not in out:
            raise ModelError(f"the model returns a dict with keys {sorted(out)}; set model.output_key to the "
                             "key that holds the class scores")
        return select_output(out[key], None)
    if isinstance(out, (tuple, list)):
        if not isinstance(key, int) or not -len(out) <= key < len(out):
            raise ModelError(f"the model returns a {type(out).__name__} of {len(out)} outputs; set "
                             "model.output_key to the index of the class scores (e.g. 0)")
        return select_output(out[key], None)
    if hasattr(out, "logits"):  # e.g. HuggingFace ModelOutput
        return select_output(out.logits, None)
    raise ModelError(f"the model returns {type(out).__name__}; expected a tensor, tuple or dict of tensors")


def detect_output_kind(raw: torch.Tensor, task: str = "classification") -> str:
    """Probabilities if every row is in [0, 1] and sums to 1 (or, for one column or multilabel, lies in [0, 1]);
    a regression model's output is a value."""
    if task == "regression":
        return "values"
    if raw.numel() == 0 or not torch.isfinite(raw).all():
        return "logits"
    in_unit = bool(((raw >= 0) & (raw <= 1)).all())
    if raw.shape[1] == 1 or task == "multilabel":
        return "probabilities" if in_unit else "logits"
    sums_to_one = bool(torch.allclose(raw.sum(dim=1), torch.ones(raw.shape[0]), atol=PROB_TOLERANCE))
    return "probabilities" if in_unit and sums_to_one else "logits"


def chosen_kind(detected: str, configured: str, task: str) -> str:
    """The output kind the adapter uses: model.output unless auto; a regression model's output is its value."""
    return detected if configured == "auto" or task == "regression" else configured


def probe(call: Callable[[torch.Tensor], Any], sample: torch.Tensor, key: str | int | None,
          num_classes: int, task: str = "classification", task_auto: bool = False) -> tuple[str, bool, torch.Tensor]:
    """Run one batch, check the output width against the classes (labels, one value) of ``task``; return (kind,
    binary_single, raw). ``task_auto``: the task was not set (model.task: auto), so a width that fits another task
    names model.task."""
    try:
        with torch.no_grad():
            out = call(sample)
    except Exception as err:  # the user's model failed on the user's data: report both shapes
        raise ModelError(f"the model failed on a batch of inputs of shape {list(sample.shape)}: "
                         f"{type(err).__name__}: {err}. Check data.input_shape and the model's expected input"
                         ) from err
    raw = select_output(out, key).detach().float().cpu()
    if raw.ndim == 1:
        raw = raw.reshape(-1, 1)
    if raw.ndim != 2 or raw.shape[0] != sample.shape[0]:
        raise ModelError(f"the model's output has shape {list(raw.shape)} for {sample.shape[0]} inputs; "
                         "expected (N, classes)")
    binary_single = check_width(raw.shape[1], num_classes, task, task_auto=task_auto)
    if not torch.isfinite(raw).all():
        raise ModelError("the model returns NaN or infinite scores on the data; check its weights and the input "
                         "normalization (model.normalization)")
    return detect_output_kind(raw, task), binary_single, raw


def check_width(width: int, num_classes: int, task: str, *, task_auto: bool = False) -> bool:
    """The output width fits the task (K class scores, or one logit of a binary classifier; one value; one score
    per label); returns whether it is a binary classifier's single logit."""
    if task == "regression":
        if width != 1:
            raise ModelError(f"the model outputs {width} values per sample; a regression model (model.task: "
                             "regression) outputs one number per sample")
        return False
    if task == "multilabel":
        if width != num_classes:
            raise ModelError(f"the model outputs {width} scores per sample but the data has {num_classes} labels "
                             "(data.target); a multi-label model outputs one score per label")
        return False
    binary_single = width == 1 and num_classes == 2
    if width == 1 and num_classes != 2 and task_auto:
        raise ConfigError("model.task", f"the model outputs one number per sample but the target's whole "
                          f"numbers make {num_classes} classes (0..{num_classes - 1}): if the model predicts a "
                          "number, set model.task: "
                          "regression; if it is a classifier, its last layer must output one score per class")
    if width != num_classes and not binary_single:
        raise ModelError(f"the model outputs {width} scores per sample but the data has {num_classes} classes; "
                         "fix the model's last layer or set data.class_names to the model's classes")
    return binary_single
