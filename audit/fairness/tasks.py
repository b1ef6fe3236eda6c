"""The fairness section for regression and multi-label models: which module audits which task
(``audit.fairness.regression``: errors per group; ``audit.fairness.multilabel``: exact match and Hamming loss)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from audit.fairness.multilabel import record_multilabel_fairness
from audit.fairness.regression import record_regression_fairness

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.fairness.groups import GroupSet
    from audit.fairness.params import FairnessParams
    from audit.results import SectionResult


def record_task_fairness(result: SectionResult, ctx: AuditContext, group_sets: list[GroupSet], *,
                         params: FairnessParams, section: str) -> None:
    """``FairnessSection.run`` for a model that is not a classifier."""
    record = record_regression_fairness if ctx.data.task == "regression" else record_multilabel_fairness
    record(result, ctx, group_sets, params=params, section=section)
