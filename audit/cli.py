"""The ``nnaudit`` command: the one place that wires computing to rendering. Start-up is light: heavy
libraries load inside the subcommands.

``run`` (and ``harden``) run audits through the runner, which stores the run verdict it is handed
(``audit.decide.evaluate_verdict``), then ask ``reports.html`` for report.html; ``gate`` and ``compare``
compute a ``Decision`` / ``Comparison`` (``audit.decide``) and ask ``reports.ci`` / ``reports.compare``
to print it and write JUnit XML and Markdown.

Exit codes of ``nnaudit run`` (and ``demo``): 0 every section ran without error; 2 nothing ran
(bad config or command line, output directory locked or holding a run); 3 the run finished but a
section errored (``--allow-errors`` makes that 0; results.json says ``failed``); 130 / 143 stopped
by SIGINT / SIGTERM (results.json says ``interrupted``). ``nnaudit gate`` and ``nnaudit compare`` exit 0 / 1 / 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from audit import __version__
from audit.cli_decide import add_decide_commands, check_new_run_waivers, verdict_summary
from audit.cli_export import MLFLOW_HELP, add_export_commands, export_at_end
from audit.cli_plan import add_plan_command
from audit.cli_store import STORE_HELP, add_store_commands, register_run_at_end, run_store
from audit.errors import NNAuditError, RunDirError

log = logging.getLogger("nnaudit")

EXIT_OK, EXIT_USAGE, EXIT_SECTION_ERROR = 0, 2, 3
EXIT_SIGNAL_BASE = 128  # + the signal number: 130 for SIGINT, 143 for SIGTERM


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nnaudit: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _open_hints(run_dirs: list[Path], root: Path, policies: list[Path] | None = None) -> None:
    for run_dir in run_dirs:
        print(f"  results:   {run_dir / 'results.json'}")
        if (run_dir / "report.html").exists():
            print(f"  report:    {(run_dir / 'report.html').resolve().as_uri()}")
    print(f"  dashboard: nnaudit dashboard {root}")
    for run_dir, policy in zip(run_dirs, policies or [Path("policy.yaml")] * len(run_dirs), strict=True):
        print(f"  gate:      nnaudit gate {run_dir} --policy {policy}")


def _resume_dir(args: argparse.Namespace) -> Path | None:
    """The run directory to resume: ``--resume DIR``, or ``--out DIR`` with a bare ``--resume``."""
    if args.resume is None:
        return None
    if args.resume is True:
        if not args.out:
            raise NNAuditError("--resume needs the run directory: nnaudit run --resume DIR (or --out DIR --resume)")
        return Path(args.out)
    resume = Path(args.resume)
    if args.out and Path(args.out).resolve() != resume.resolve():
        raise NNAuditError(f"--resume {resume} and --out {args.out} name different directories; give one of them")
    return resume


def _config_for(args: argparse.Namespace, resume: Path | None) -> tuple[Any, Path | None]:
    """The config (and its file): the CONFIG argument, or on ``--resume DIR`` alone the one in DIR's manifest."""
    from audit.config import load_config, parse_config
    from audit.results import load_results

    if args.config:
        return load_config(args.config), Path(args.config)
    if resume is None:
        raise NNAuditError("give the config file: nnaudit run audit.yaml (or resume a run: nnaudit run --resume DIR)")
    from audit.engine.rundir import NOTHING_TO_RESUME

    if not (resume / "results.json").exists():
        raise RunDirError(NOTHING_TO_RESUME.format(out=resume))
    manifest = load_results(resume, validate=True)["manifest"]
    config_path = manifest.get("config_path")
    return parse_config(manifest["config"]), Path(config_path) if config_path else None


def cmd_run(args: argparse.Namespace) -> int:
    from audit.decide.verdict import evaluate_verdict
    from audit.engine.rundir import Existing
    from audit.runner import default_out_dir, run_audit

    if args.overwrite and args.resume is not None:
        raise NNAuditError("--overwrite and --resume exclude each other: replace the run, or finish it")
    resume = _resume_dir(args)
    config, config_path = _config_for(args, resume)
    if args.device:
        config.device = args.device
    if args.seed is not None:
        config.seed = args.seed
    if args.limit is not None:
        if args.limit <= 0:
            raise NNAuditError("--limit must be a positive number of samples")
        config.data.limit = args.limit
    if args.no_report:
        config.report = False
    if args.policy:
        from audit.policy import read_policy_file

        config.gate = read_policy_file(args.policy)
    if resume is None:
        check_new_run_waivers(config.gate, f"--policy {args.policy}" if args.policy else "gate")
    out = resume or (Path(args.out) if args.out else default_out_dir())
    existing: Existing = "resume" if resume is not None else "overwrite" if args.overwrite else "refuse"
    store = run_store(args.store, config.store, config_path)
    backend = _backend(args)
    plan = None
    if args.estimate:  # the plan before any work; beside the measured times at the end (audit/cli_plan.py)
        from audit.cli_plan import make_plan, plan_table

        plan = make_plan(config, config_dir=config_path.resolve().parent if config_path else None)
        print(plan_table(plan), flush=True)
    try:
        results = run_audit(config, out, config_path=config_path, existing=existing, backend=backend,
                            verdict_of=evaluate_verdict)
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT))
        written = (out / "results.json").exists()
        print(f"nnaudit: stopped by {signal.Signals(signum).name}; "
              + (f"sections finished so far are in {out / 'results.json'} (status 'interrupted'); finish the run "
                 f"with `nnaudit run --resume {out}`" if written else "no section had started"), file=sys.stderr)
        if written:
            register_run_at_end(out, store)
        return EXIT_SIGNAL_BASE + signum
    if plan is not None:
        from audit.cli_plan import measured_beside

        print(measured_beside(plan, out))
    if config.report:
        write_report_of(out)
    failed = [name for name, s in results["sections"].items() if s["status"] == "error"]
    print(f"nnaudit: audit written to {out}")
    print("nnaudit:", end=" ")
    _print_verdict(results, out)
    _open_hints([out], out)
    register_run_at_end(out, store)
    export_at_end(out, args.mlflow)
    if failed:
        print(f"nnaudit: {len(failed)} section(s) failed and are recorded with their error: {', '.join(failed)}; "
              f"after a fix, `nnaudit run --resume {out}` runs only them"
              + ("" if args.allow_errors else f" (exit {EXIT_SECTION_ERROR}; --allow-errors exits 0)"),
              file=sys.stderr)
        return EXIT_OK if args.allow_errors else EXIT_SECTION_ERROR
    return EXIT_OK


def write_report_of(run_dir: Path) -> Path:
    """report.html of a finished run (its results are final): the runner writes results only."""
    from reports.html import write_report

    return write_report(run_dir)


def _backend(args: argparse.Namespace) -> Any:
    """The chunk backend of ``--backend``; Ray's absence is a clear error before anything loads."""
    from audit.engine.backends import make_backend

    return make_backend(args.backend, address=args.address, workers=args.workers,
                        threads_per_worker=args.threads_per_worker)


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from audit.demo import policy_path, run_demo

    start = time.perf_counter()
    out = Path(args.out)
    store = run_store(args.store, None, None)
    runs = run_demo(out, seed=args.seed, device=args.device or "auto", text=args.text)
    print(f"nnaudit: demo finished in {time.perf_counter() - start:.1f} s; runs in {out}")
    from audit.results import load_results

    for run in runs:
        print(f"nnaudit: {run.name}:", end=" ")
        _print_verdict(load_results(run, validate=False), run)
    _open_hints(runs, out, [policy_path(out, run.name) for run in runs])
    for run in runs:
        register_run_at_end(run, store)
    failed = [run.name for run in runs if _stored_status(run) == "failed"]
    if failed:
        print(f"nnaudit: a section failed in {', '.join(failed)}; see results.json", file=sys.stderr)
        return EXIT_SECTION_ERROR
    return EXIT_OK


def _stored_status(run_dir: Path) -> str:
    from audit.results import load_results

    return str(load_results(run_dir, validate=False)["manifest"].get("status"))


def cmd_harden(args: argparse.Namespace) -> int:
    from attacks.defenses.hardening import harden
    from audit.decide.verdict import evaluate_verdict
    from reports.hardening import markdown_table, write_comparison_markdown

    hardening = harden(args.config, out=args.out, method=args.method, epochs=args.epochs, eps=args.eps,
                       norm=args.norm, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                       temperature=args.temperature, beta=args.beta, seed=args.seed, device=args.device,
                       overwrite=args.overwrite, all_sections=args.all_sections, verdict_of=evaluate_verdict)
    for label, results in (("before", hardening.before), ("after", hardening.after)):
        if results["manifest"]["config"].get("report", True):
            write_report_of(hardening.out / label)
    comparison = write_comparison_markdown(hardening)
    print(markdown_table(hardening.rows))
    for note in hardening.notes:
        print(f"nnaudit: warning: {note}", file=sys.stderr)
    print(f"nnaudit: hardened weights: {hardening.weights}")
    print(f"  config:     {hardening.config} (nnaudit run {hardening.config})")
    print(f"  comparison: {comparison}")
    _open_hints([hardening.out / "before", hardening.out / "after"], hardening.out)
    return EXIT_OK


def _print_verdict(results: dict[str, Any], out: Path) -> None:
    """The run verdict stored in results.json, on one line."""
    record = results.get("verdict")
    if record is None:
        print("verdict: not gated (no policy: add 'gate:' to the config or pass --policy)")
        return
    print(f"verdict: {verdict_summary(record)}; re-check with `nnaudit gate {out}`")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from audit.engine.store_url import STORE_ENV, configured_store
    from reports.dashboard.server import serve

    runs = Path(args.runs_dir)
    store = configured_store(args.store)
    if not runs.exists() and store is None:
        raise NNAuditError(f"no runs directory {runs}; create a run first: nnaudit demo --out {runs}")
    return serve(runs, host=args.host, port=args.port, extra_env={STORE_ENV: store} if store else None)


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered plugin with its one-line description, read from entry-point metadata and source
    (nothing is imported, so this stays fast and never loads torch)."""
    from audit.plugin import GROUPS, describe

    for group in GROUPS:
        found = describe(group)
        if not found:
            continue
        print(f"{group}:")
        for name, (target, summary) in found.items():
            print(f"  {name:<16} {target:<44} {summary}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from audit.results import load_results

    load_results(args.run_dir, validate=True)
    print(f"nnaudit: {args.run_dir} validates against the results schema")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnaudit", description="Audit a trained neural network before it ships: "
                                     "robustness, explanations, fairness; one report and one CI gate.")
    parser.add_argument("--version", action="version", version=f"nnaudit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="audit a model described by a YAML config",
                         description="Exit codes: 0 every section ran without error; 2 nothing ran (config, "
                         "command line, output directory); 3 a section errored (0 with --allow-errors); "
                         "130/143 stopped by SIGINT/SIGTERM.")
    run.add_argument("config", nargs="?", help="audit.yaml (optional with --resume DIR: the run's own config)")
    run.add_argument("--out", help="run directory (default: runs/<timestamp>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --out (deletes its results.json, report.html, artifacts/)")
    run.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                     help="finish the run in DIR (or --out): keep its finished sections whose config, model and "
                     "data are unchanged, run the rest")
    run.add_argument("--allow-errors", action="store_true",
                     help="exit 0 even when a section errored (results.json still says 'failed')")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    run.add_argument("--limit", type=int, help="audit a stratified, seeded subset of N samples")
    run.add_argument("--policy", help="gate policy YAML the run carries (replaces the config's 'gate:'); its "
                     "verdict is stored in results.json and opens the report")
    run.add_argument("--seed", type=int, help="random seed (overrides the config)")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    run.add_argument("--store", help=STORE_HELP + " the run is registered in when it ends (overrides $NNAUDIT_STORE "
                     "and the config's 'store:')")
    run.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI", help=MLFLOW_HELP)
    run.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="who runs the chunks of the robustness section: this process (default) or Ray tasks "
                     "(pip install \"nnaudit[ray]\"; docs/scale.md)")
    run.add_argument("--address", help="with --backend ray: auto (the cluster of this machine) or "
                     "ray://host:10001 (default: start a local Ray)")
    run.add_argument("--workers", type=int, help="with --backend ray: chunks in flight at once (a local Ray gets "
                     "this many CPUs)")
    run.add_argument("--threads-per-worker", type=int, default=1,
                     help="with --backend ray: CPUs (torch threads) each chunk task asks for (default 1)")
    run.add_argument("--estimate", action="store_true", help="print the plan (nnaudit plan) first and, at the end, "
                     "the estimate beside the measured time per section (stored in the manifest)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="train two small models on real data and audit both")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--text", action="store_true", help="audit a text classifier trained on shipped reviews "
                      "instead (docs/text.md; needs the text extra)")
    demo.add_argument("--store", help=STORE_HELP + " both runs are registered in (default: $NNAUDIT_STORE)")
    demo.set_defaults(func=cmd_demo)

    harden = sub.add_parser("harden", help="train the model with a training-time defense, then audit it before "
                            "and after", description="Training data: the config's train_data block, or the train "
                            "split of a built-in data source. Writes OUT/hardened.pt, OUT/audit.yaml, the audits "
                            "OUT/before and OUT/after, and OUT/comparison.md (docs/defenses.md).")
    harden.add_argument("config", help="audit.yaml of the model to harden (model.factory + weights)")
    harden.add_argument("--method", required=True, help="pgd_at, trades, fast_at or distillation")
    harden.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    harden.add_argument("--out", required=True, help="output directory")
    harden.add_argument("--eps", type=float, help="training eps (default: the robustness section's middle eps)")
    harden.add_argument("--norm", help="linf or l2 (default: the robustness section's first norm)")
    harden.add_argument("--steps", type=int, default=10, help="attack steps per batch for pgd_at / trades")
    harden.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    harden.add_argument("--batch-size", type=int, default=128)
    harden.add_argument("--temperature", type=float, default=100.0, help="distillation temperature T")
    harden.add_argument("--beta", type=float, default=6.0, help="TRADES robustness weight")
    harden.add_argument("--seed", type=int, help="random seed (overrides the config)")
    harden.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    harden.add_argument("--overwrite", action="store_true", help="replace hardened weights and audits in --out")
    harden.add_argument("--all-sections", action="store_true",
                        help="audit with every section of the config (default: its robustness section only)")
    harden.set_defaults(func=cmd_harden)

    dash = sub.add_parser("dashboard", help="open the Streamlit dashboard over a runs directory")
    dash.add_argument("runs_dir", nargs="?", default="runs")
    dash.add_argument("--port", type=int, default=8501)
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares it on the "
                      "network, with no authentication)")
    dash.add_argument("--store", help=STORE_HELP + " whose runs the History view charts (default: $NNAUDIT_STORE)")
    dash.set_defaults(func=cmd_dashboard)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.set_defaults(func=cmd_plugins)

    validate = sub.add_parser("validate", help="validate RUN_DIR/results.json against the shipped schema")
    validate.add_argument("run_dir")
    validate.set_defaults(func=cmd_schema)
    add_decide_commands(sub)
    add_store_commands(sub)
    add_plan_command(sub)
    add_export_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except NNAuditError as err:
        print(f"nnaudit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT))
        print(f"nnaudit: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signum
    return code


if __name__ == "__main__":
    sys.exit(main())
