"""Decisions: pure functions from results (and a policy) to a ``Decision``. Never runs a model, never imports torch.

One vocabulary:

- ``Check``: one judged condition (a rule on a value or on a delta, a findings limit, a section, a
  run's state, a metric's significance) with a status: pass, fail, missing, error or skipped.
- ``Decision``: the checks of one gate or comparison, with the exit code (0 / 1 / 2), the counts per
  status and the verdict word (PASSED / FAILED / ERROR; a comparison: PASSED / REGRESSION / CANNOT JUDGE).
- the run verdict: the record a run stores in results.json (``verdict``: status, exit_code,
  evaluated_at, checks), built from the gate's ``Decision`` on the policy the run carries.

``evaluate_policy`` (the gate), ``compare_results`` / ``compare_run_dirs`` (a ``Comparison`` holding its
``Decision``) and ``evaluate_verdict`` (the stored run verdict) compute; policies are parsed in
``audit.policy``; ``reports.ci`` and ``reports.compare`` render; ``audit.cli`` wires the two.
"""

from audit.decide.checks import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, Check, Decision
from audit.decide.compare import Comparison, MetricDelta, Significance, compare_results, compare_run_dirs
from audit.decide.gate import evaluate_policy, evaluate_rule, gate_policy
from audit.decide.verdict import evaluate_verdict, failing_checks, verdict_record, verdict_status

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_PASS",
    "Check",
    "Comparison",
    "Decision",
    "MetricDelta",
    "Significance",
    "compare_results",
    "compare_run_dirs",
    "evaluate_policy",
    "evaluate_rule",
    "evaluate_verdict",
    "failing_checks",
    "gate_policy",
    "verdict_record",
    "verdict_status",
]
