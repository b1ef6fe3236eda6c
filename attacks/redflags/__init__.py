"""Gradient-masking red flags (after Athalye et al. 2018, Carlini et al. 2019, Croce & Hein 2020).

Each check gives a verdict, ``ok`` / ``suspicious`` / ``likely masked`` (or ``n/a`` with the reason
it does not apply), the number it is based on and a one-line reason. Every threshold is a named
parameter (``RedFlagParams``, documented in docs/robustness.md).

The checks are judged against the run's own attacks, the ones behind the headline (random start,
DLR/margin losses), and reuse what those attacks already found wherever they can: a sample an
attack fooled stays fooled, so the checks that attack again (unbounded, convergence, restarts,
single step, black box) only attack the check samples the headline called robust, starting from
the headline attacks' own last candidates. On an undefended model few samples survive, so the
checks cost little; on a masked model the survivors are exactly the samples worth a second look.

Cross-entropy saturation is told apart from missing gradients: a sample whose cross-entropy input
gradient is exactly zero in float32 while its margin gradient is not (a very confident, correct
prediction) is out of reach for CE attacks only; margin and DLR attacks still move it. A check
that fires only because of such samples says so and is ``suspicious``, never ``likely masked``.

Modules: ``base`` (the thresholds, the flag and its grading, what the headline attacks left for the checks),
``checks`` (the checks themselves), ``runner`` (one norm's checks as the robustness section runs them: ``FlagRun``).
"""

from attacks.redflags.base import TITLES, CheckData, RedFlag, RedFlagParams, Verdict, grade, not_applicable
from attacks.redflags.checks import (
    GradientStats,
    box_span,
    check_blackbox,
    check_convergence,
    check_monotone,
    check_nonfinite_gradients,
    check_probability_outputs,
    check_randomized,
    check_restart_gain,
    check_single_step,
    check_unbounded,
    check_zero_gradients,
    gradient_stats,
    strongest_iterative,
)
from attacks.redflags.runner import FlagRun, run_red_flags

__all__ = [
    "TITLES", "CheckData", "FlagRun", "GradientStats", "RedFlag", "RedFlagParams", "Verdict", "box_span",
    "check_blackbox", "check_convergence", "check_monotone", "check_nonfinite_gradients", "check_probability_outputs",
    "check_randomized", "check_restart_gain", "check_single_step", "check_unbounded", "check_zero_gradients",
    "grade", "gradient_stats", "not_applicable", "run_red_flags", "strongest_iterative",
]
