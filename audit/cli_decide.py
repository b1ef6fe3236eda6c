"""``nnaudit report``, ``gate`` and ``compare``: commands over finished runs. They compute a ``Decision`` /
``Comparison`` (``audit.decide``) and ask ``reports.ci`` / ``reports.compare`` to print it and write JUnit XML
and Markdown; ``report`` asks ``reports.html`` for report.html. ``audit.cli`` adds them to its parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from audit.errors import NNAuditError

EXIT_OK = 0

__all__ = ["add_decide_commands", "run_compare", "run_gate"]


def cmd_report(args: argparse.Namespace) -> int:
    from audit.results import load_results
    from reports.html import write_report

    load_results(args.run_dir)  # a clear error for a missing or invalid file
    path = write_report(Path(args.run_dir))
    print(f"nnaudit: report written to {path}")
    return EXIT_OK


def run_gate(run_dir: str | os.PathLike[str], policy_path: str | os.PathLike[str] | None, *,
             junit: str | os.PathLike[str] | None = None, summary: str | os.PathLike[str] | None = None,
             stream: TextIO | None = None) -> int:
    """``nnaudit gate``: decide, print the table to ``stream`` (stdout), write JUnit XML / Markdown if asked;
    the exit code. ``policy_path`` None: the policy the run carries (config ``gate:`` or ``nnaudit run --policy``).

    Raises ``ConfigError`` for a bad or absent policy and ``ResultsError`` for missing or invalid results
    (``main`` turns both into exit code 2).
    """
    from audit.decide.gate import evaluate_policy, gate_policy
    from audit.results import load_results
    from reports.ci import format_gate, write_junit, write_markdown

    results = load_results(run_dir, validate=True)
    decision = evaluate_policy(results, gate_policy(results, policy_path), run_dir=run_dir)
    (stream if stream is not None else sys.stdout).write(format_gate(decision))
    if junit is not None:
        write_junit(decision, Path(junit))
    if summary is not None:
        write_markdown(decision, Path(summary))
    return decision.exit_code


def run_compare(base_dir: str | os.PathLike[str], candidate_dir: str | os.PathLike[str], *,
                policy_path: str | os.PathLike[str] | None = None, junit: str | os.PathLike[str] | None = None,
                summary: str | os.PathLike[str] | None = None, limit: int | None = 20, resamples: int = 5000,
                json_path: str | os.PathLike[str] | None = None, stream: TextIO | None = None) -> int:
    """``nnaudit compare``: compare, print the text to ``stream`` (stdout), write JSON / JUnit / Markdown if
    asked; the exit code. Raises ``ConfigError`` (bad policy) and ``ResultsError`` (missing or invalid results)."""
    from audit.decide.compare import compare_run_dirs
    from audit.policy import load_compare_policy
    from reports.compare import format_comparison, write_compare_junit, write_compare_markdown

    policy = load_compare_policy(policy_path) if policy_path is not None else None
    comparison = compare_run_dirs(base_dir, candidate_dir, policy=policy, resamples=resamples)
    (stream if stream is not None else sys.stdout).write(format_comparison(comparison, limit=limit))
    if json_path is not None:
        import json

        from audit.results import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n")
    if junit is not None:
        write_compare_junit(comparison, Path(junit))
    if summary is not None:
        write_compare_markdown(comparison, Path(summary))
    return comparison.exit_code


def cmd_gate(args: argparse.Namespace) -> int:
    return run_gate(Path(args.run_dir), Path(args.policy) if args.policy else None,
                    junit=Path(args.junit) if args.junit else None,
                    summary=Path(args.summary) if args.summary else None)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise NNAuditError("--resamples must be at least 100 bootstrap resamples")
    return run_compare(Path(args.base), Path(args.candidate), policy_path=Path(args.policy) if args.policy else None,
                       junit=Path(args.junit) if args.junit else None,
                       summary=Path(args.summary) if args.summary else None, limit=None if args.all else 20,
                       resamples=args.resamples, json_path=Path(args.json) if args.json else None)


def add_decide_commands(sub: Any) -> None:
    """Add ``report``, ``gate`` and ``compare`` to the ``nnaudit`` subcommand parser ``sub``."""
    report = sub.add_parser("report", help="(re)write RUN_DIR/report.html from results.json")
    report.add_argument("run_dir")
    report.set_defaults(func=cmd_report)

    gate = sub.add_parser("gate", help="check a finished run against a threshold policy (exit 0 pass, 1 fail, "
                          "2 missing metric or errored section)")
    gate.add_argument("run_dir")
    gate.add_argument("--policy", help="policy.yaml with threshold rules (default: the policy the run carries)")
    gate.add_argument("--junit", help="write JUnit XML here")
    gate.add_argument("--summary", help="write a Markdown summary here")
    gate.set_defaults(func=cmd_gate)

    compare = sub.add_parser(
        "compare", help="compare two runs: metric deltas, per-sample significance, rules on deltas (exit 0 no "
        "regression, 1 regression, 2 cannot judge)",
        description="Compare a candidate run with a base run (e.g. the main branch's). Exit codes: 0 no regression; "
        "1 a rule failed or a metric got significantly worse; 2 cannot judge (a run unfinished or with a failed "
        "section, a metric a rule names missing or not a number, or nothing to judge). See docs/compare.md.")
    compare.add_argument("base", help="the base run directory (or its results.json)")
    compare.add_argument("candidate", help="the candidate run directory (or its results.json)")
    compare.add_argument("--policy", help="policy.yaml: rules on deltas ('<metric> delta >= -0.02'), absolute rules")
    compare.add_argument("--junit", help="write JUnit XML here")
    compare.add_argument("--summary", help="write a Markdown summary here (a pull-request comment)")
    compare.add_argument("--json", help="write the whole comparison as JSON here")
    compare.add_argument("--all", action="store_true", help="list every metric, not only the notable ones")
    compare.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    compare.set_defaults(func=cmd_compare)
