"""``nnaudit report``, ``gate`` and ``compare``: commands over finished runs. They compute a ``Decision`` /
``Comparison`` (``audit.decide``) and ask ``reports.ci`` / ``reports.compare`` to print it and write JUnit XML
and Markdown; ``report`` asks ``reports.html`` for report.html. ``audit.cli`` adds them to its parser.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from audit.errors import NNAuditError

EXIT_OK = 0
NO_BASELINE_STORE = ("--baseline {ref}: no results store to resolve it in: pass --store URL, set NNAUDIT_STORE, or "
                     "give the candidate's config 'store:' (docs/store.md)")

__all__ = ["add_decide_commands", "check_new_run_waivers", "run_compare", "run_gate", "verdict_summary"]


def verdict_summary(record: Mapping[str, Any]) -> str:
    """The stored run verdict on one line: ``PASS: 14 of 14 checks passed; 3 high findings are not gated`` (with
    the waived checks and the first failing checks' messages)."""
    from audit.decide.verdict import failing_checks
    from audit.decide.waive import ungated_text

    checks = record.get("checks", [])
    passed = sum(1 for c in checks if c.get("status") == "pass")
    waived = [c for c in checks if c.get("status") == "waived"]
    text = f"{str(record.get('status', 'error')).upper()}: {passed} of {len(checks)} checks passed"
    if waived:
        text += f", {len(waived)} WAIVED ({'; '.join(c['message'] for c in waived[:3])})"
    failing = failing_checks(record)
    if failing:
        text += f" ({'; '.join(c['message'] for c in failing[:5])})"
    ungated = ungated_text(record.get("ungated_findings") or {})
    stale = [w for w in record.get("waivers", []) if w.get("state") in ("stale", "expired")]
    return (text + (f"; {ungated}" if ungated else "")
            + "".join(f"; {w['state']} waiver: {w.get('message', '')}" for w in stale))


def check_new_run_waivers(gate: Mapping[str, Any] | None, key: str, *, today: dt.date | None = None) -> None:
    """A new run refuses a policy holding an already expired waiver (``ConfigError`` at ``<key>.waivers[i].until``)."""
    if not gate:
        return
    from audit.decide.waive import today_utc
    from audit.policy import parse_policy
    from audit.waivers import check_waivers_current

    check_waivers_current(parse_policy(gate).waivers, today=today or today_utc(), key=key)


def cmd_report(args: argparse.Namespace) -> int:
    from audit.results import load_results
    from reports.html import write_report

    load_results(args.run_dir)  # a clear error for a missing or invalid file
    path = write_report(Path(args.run_dir))
    print(f"nnaudit: report written to {path}")
    return EXIT_OK


def run_gate(run_dir: str | os.PathLike[str], policy_path: str | os.PathLike[str] | None, *,
             junit: str | os.PathLike[str] | None = None, summary: str | os.PathLike[str] | None = None,
             stream: TextIO | None = None, strict: bool = False, today: dt.date | None = None) -> int:
    """``nnaudit gate``: decide, print the table to ``stream`` (stdout), write JUnit XML / Markdown if asked;
    the exit code. ``policy_path`` None: the policy the run carries (config ``gate:`` or ``nnaudit run --policy``).
    ``strict``: also fail on high or critical findings no rule covers (waivers still apply); ``today``: the date
    waivers are judged on (default: the current UTC date).

    Raises ``ConfigError`` for a bad or absent policy and ``ResultsError`` for missing or invalid results
    (``main`` turns both into exit code 2).
    """
    from audit.decide.gate import evaluate_policy, gate_policy
    from audit.results import load_results
    from reports.ci import format_gate, write_junit, write_markdown

    results = load_results(run_dir, validate=True)
    decision = evaluate_policy(results, gate_policy(results, policy_path), run_dir=run_dir, strict=strict,
                               today=today)
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
                    summary=Path(args.summary) if args.summary else None, strict=args.strict)


def resolve_baseline(ref: str, candidate: str | os.PathLike[str], store: str | None,
                     *, stream: TextIO | None = None) -> Path:
    """The run directory ``--baseline REF`` names (``latest-pass:NAME``, ``latest:NAME`` or a run id) in the store
    given by ``store`` (--store), else ``$NNAUDIT_STORE``, else the candidate's config ``store:``. ``StoreError``
    when it resolves to no run; ``NNAuditError`` when no store is given."""
    from audit.engine.store import open_store, resolve_run
    from audit.engine.store_url import configured_store, redact_url
    from audit.results import load_results

    manifest = load_results(candidate, validate=False).get("manifest", {})
    config_path = manifest.get("config_path")
    url = configured_store(store, manifest.get("config", {}).get("store"),
                           config_dir=Path(config_path).parent if config_path else None)
    if url is None:
        raise NNAuditError(NO_BASELINE_STORE.format(ref=ref))
    from audit.engine.provenance import run_id_of

    with open_store(url) as opened:  # never the candidate itself: CI registers it before comparing
        base = resolve_run(opened, ref, exclude=run_id_of(manifest, candidate))
    (stream if stream is not None else sys.stdout).write(
        f"nnaudit compare: baseline {ref} is {base} (store {redact_url(url)})\n")
    return base


def cmd_compare(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise NNAuditError("--resamples must be at least 100 bootstrap resamples")
    if args.baseline is not None:
        if len(args.runs) != 1:
            raise NNAuditError(f"--baseline {args.baseline} names the base run: give only the candidate run "
                               f"(got {len(args.runs)} runs: {' '.join(args.runs)})")
        base, candidate = resolve_baseline(args.baseline, args.runs[0], args.store), Path(args.runs[0])
    elif len(args.runs) != 2:
        raise NNAuditError("give the base run and the candidate run (nnaudit compare BASE CANDIDATE), or "
                           "--baseline REF and the candidate (REF: latest-pass:NAME, latest:NAME or a run id)")
    else:
        base, candidate = Path(args.runs[0]), Path(args.runs[1])
    return run_compare(base, candidate, policy_path=Path(args.policy) if args.policy else None,
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
    gate.add_argument("--strict", action="store_true", help="also fail (exit 1) on high or critical findings that "
                      "no rule or findings limit of the policy covers and no waiver waives (docs/gate.md)")
    gate.set_defaults(func=cmd_gate)

    compare = sub.add_parser(
        "compare", help="compare two runs: metric deltas, per-sample significance, rules on deltas (exit 0 no "
        "regression, 1 regression, 2 cannot judge)",
        description="Compare a candidate run with a base run (e.g. the main branch's). Exit codes: 0 no regression; "
        "1 a rule failed or a metric got significantly worse; 2 cannot judge (a run unfinished or with a failed "
        "section, a metric a rule names missing or not a number, or nothing to judge). `nnaudit compare --baseline "
        "latest-pass:NAME CANDIDATE` takes the base run from the results store. See docs/compare.md.",
        usage="nnaudit compare [options] BASE CANDIDATE | nnaudit compare --baseline REF [options] CANDIDATE")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="BASE CANDIDATE: the base and candidate run directories (or their results.json); "
                         "with --baseline only CANDIDATE")
    compare.add_argument("--baseline", metavar="REF", help="take the base run from the results store: "
                         "latest-pass:NAME (the newest run of model NAME whose verdict passed), latest:NAME or a "
                         "run id (see `nnaudit history`)")
    compare.add_argument("--store", help="the results store --baseline reads (default: $NNAUDIT_STORE, then the "
                         "candidate's config 'store:')")
    compare.add_argument("--policy", help="policy.yaml: rules on deltas ('<metric> delta >= -0.02'), absolute rules")
    compare.add_argument("--junit", help="write JUnit XML here")
    compare.add_argument("--summary", help="write a Markdown summary here (a pull-request comment)")
    compare.add_argument("--json", help="write the whole comparison as JSON here")
    compare.add_argument("--all", action="store_true", help="list every metric, not only the notable ones")
    compare.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    compare.set_defaults(func=cmd_compare)
