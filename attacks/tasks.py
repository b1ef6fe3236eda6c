"""The robustness section for regression and multi-label models: which module audits which task
(``attacks.regression``: output change and error; ``attacks.multilabel``: label flips)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from attacks.base import AttackNotApplicable, Domain
from attacks.multilabel import DIRECTIONS as MULTILABEL_DIRECTIONS
from attacks.multilabel import run_multilabel
from attacks.regression import DIRECTIONS as REGRESSION_DIRECTIONS
from attacks.regression import Settings, run_regression

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import Direction, SectionResult

DIRECTIONS: dict[str, Direction] = {**REGRESSION_DIRECTIONS, **MULTILABEL_DIRECTIONS}


def run_task_robustness(ctx: AuditContext, result: SectionResult, params: Settings, section: str) -> None:
    """``RobustnessSection.run`` for a model that is not a classifier: what both tasks share (gradients, the input
    domain, the attacked rows), then the task's own attacks."""
    data, what = ctx.data, ctx.data.task.replace("multilabel", "multi-label")
    if not ctx.model.has_gradients:
        result.status = "skipped"
        result.notes.append(f"{what} robustness needs gradients; this model ({ctx.model.kind}) has none")
        return
    try:
        domain = Domain.from_model_data(ctx.model, data)
    except AttackNotApplicable as err:
        result.status = "skipped"
        result.notes.append(str(err))
        return
    index = np.arange(data.n_samples)
    if params.max_samples is not None and params.max_samples < data.n_samples:
        index = np.sort(np.random.default_rng(ctx.seed).choice(data.n_samples, params.max_samples, replace=False))
        result.notes.append(f"attacked a random subset of {len(index)} of {data.n_samples} samples (max_samples)")
    run = run_regression if data.task == "regression" else run_multilabel
    run(ctx, result, params, section, domain, index)
