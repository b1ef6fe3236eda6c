"""The robustness section for regression and multi-label models: which module audits which task
(``attacks.regression``: output change and error; ``attacks.multilabel``: label flips)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from attacks.multilabel import DIRECTIONS as MULTILABEL_DIRECTIONS
from attacks.multilabel import run_multilabel
from attacks.regression import DIRECTIONS as REGRESSION_DIRECTIONS
from attacks.regression import Settings, run_regression

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import Direction, SectionResult

DIRECTIONS: dict[str, Direction] = {**REGRESSION_DIRECTIONS, **MULTILABEL_DIRECTIONS}


def run_task_robustness(ctx: AuditContext, result: SectionResult, params: Settings, section: str) -> None:
    """``RobustnessSection.run`` for a model that is not a classifier."""
    if ctx.data.task == "regression":
        run_regression(ctx, result, params, section)
    else:
        run_multilabel(ctx, result, params, section)
